"""Long recordings (issue 12): the status says how far transcription has got. Transcriber (real Whisper),
formatter and gateway in-process, on a nats-server of the module's own."""

from __future__ import annotations

import asyncio
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
    LONG_EN_TEXT,
    TOKEN,
    Gateway,
    Speech,
    answer_of,
    telegram_of_its_own,  # noqa: F401  (the `telegram` fixture here: a double of the test's own)
)
from transcriber.asr import SpeechRecognizer
from transcriber.service import TranscriberService
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
USER = 74_100_001


async def test_a_long_recording_says_how_far_transcription_has_got(
    private_bus: Bus, telegram: TelegramDouble, model_dir: Path, speech: Speech
) -> None:
    """Issue 12: "⏳ Transcribing: 2.0 of 4.6 min" while a long note is worked through, then the answer."""
    recognizer = await asyncio.to_thread(SpeechRecognizer, str(model_dir), "cpu")
    bot = make_bot(Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url))
    await private_bus.start(TranscriberService(private_bus, recognizer, progress_every=0.1))
    joins, marks = JoinStore(await private_bus.kv(BUCKET_JOINS)), AnswerMarks(await private_bus.kv(BUCKET_ANSWERED))
    await private_bus.start(FormatterService(private_bus, bot, joins, marks, 30, 600, progress_interval=0.1))
    user = USER
    try:
        async with Gateway(private_bus, telegram, Limits(allowed=frozenset({user}))):
            await telegram.send_media(user, speech.say(LONG_EN_TEXT * 11), duration=280)
            answer = await answer_of(telegram, user, timeout=240)
    finally:
        await bot.session.close()
    status = telegram.all_messages(user)[0]  # the answer itself, or (past NOTIFY_AFTER) deleted for a new one
    said = [t for t in status.history if t.startswith("⏳ Transcribing: ")]
    assert said, status.history
    done = [float(t.split()[2]) for t in said]
    assert done == sorted(done) and all(t.endswith(f" of {said[0].split()[4]} min") for t in said)
    assert answer.text.startswith("📝 Transcript") and answer.history[-1] == answer.text
