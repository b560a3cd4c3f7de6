"""Files up to 2 GB through a local Bot API server (issue 12): read from the server's disk in chunks, never held
whole by any service; over 2 GB, a clear refusal. The gateway, transcriber (real Whisper) and formatter run
in-process on a nats-server of the module's own, so the test can watch their memory."""

from __future__ import annotations

import asyncio
import subprocess
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from formatter.join import JoinStore
from formatter.marks import AnswerMarks
from formatter.service import FormatterService
from infra.bus import Bus
from infra.bus.names import BUCKET_ANSWERED, BUCKET_JOINS
from infra.runtime.settings import Limits, Settings
from infra.voice.telegram import make_bot
from tests.support import (
    TOKEN,
    Gateway,
    answer_of,
    telegram_of_its_own,  # noqa: F401  (the `telegram` fixture here: a double of the test's own)
)
from transcriber.asr import SpeechRecognizer
from transcriber.service import TranscriberService
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
USER, OTHER, SLOW = 74_000_001, 74_000_002, 74_000_003  # each test a chat of its own (a fresh double each)


@asynccontextmanager
async def local_pipeline(
    bus: Bus, telegram: TelegramDouble, model_dir: Path, request_timeout: float | None = None
) -> AsyncIterator[None]:
    """The transcriber and formatter beside the test's gateway, and the double playing a `--local` server."""
    recognizer = await asyncio.to_thread(SpeechRecognizer, str(model_dir), "cpu")
    bot = make_bot(Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url))
    await bus.start(TranscriberService(bus, recognizer))
    joins, marks = JoinStore(await bus.kv(BUCKET_JOINS)), AnswerMarks(await bus.kv(BUCKET_ANSWERED))
    await bus.start(FormatterService(bus, bot, joins, marks, join_timeout=30, max_audio_seconds=600))
    telegram.local_mode = True
    try:
        limits = Limits(allowed=frozenset({USER, OTHER, SLOW}))
        async with Gateway(bus, telegram, limits, local_files=True, request_timeout=request_timeout):
            yield
    finally:
        telegram.local_mode = False
        telegram.local_download_seconds = 0.0
        await bot.session.close()


@pytest.fixture
async def pipeline(private_bus: Bus, telegram: TelegramDouble, model_dir: Path) -> AsyncIterator[None]:
    async with local_pipeline(private_bus, telegram, model_dir):
        yield


def a_big_recording(folder: Path) -> Path:
    """About 100 MB: a spoken sentence and a minute of quiet, as 192 kHz stereo 32-bit float WAV."""
    speech, big = folder / "speech.wav", folder / "big.wav"
    said = "The quarterly budget review is moved to Thursday morning."
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(speech), said], check=True)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(speech), "-af", "apad=whole_dur=66", "-ar", "192000",
         "-ac", "2", "-c:a", "pcm_f32le", str(big)],
        check=True,
    )  # fmt: skip
    return big


async def test_a_100_mb_file_is_answered_and_no_service_holds_it_in_memory(
    pipeline: None, telegram: TelegramDouble, tmp_path: Path
) -> None:
    big = await asyncio.to_thread(a_big_recording, tmp_path)
    size = big.stat().st_size
    assert size > 95 * 1024 * 1024
    tracemalloc.start()
    try:
        await telegram.send_media(
            USER, b"", kind="audio", duration=66, mime_type="audio/wav", file_name="big.wav", local_path=big
        )
        answer = await answer_of(telegram, USER, timeout=240)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.text.startswith("📝 Transcript") and "budget" in answer.text.lower(), answer.text
    assert peak < 40 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"


async def test_a_file_over_two_gigabytes_is_refused_clearly(pipeline: None, telegram: TelegramDouble) -> None:
    await telegram.send_media(OTHER, b"", kind="document", mime_type="audio/mpeg", reported_size=2_100 * 1024 * 1024)
    await telegram.wait_for(lambda: any("over 2 GB" in m.text for m in telegram.messages(OTHER)), 60)
