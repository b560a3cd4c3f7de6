"""`/forget` while a note is in flight, against its keepers' own writes: the caches a note's transcript and
analyses are kept in are written before the event that lets the formatter answer it (else a `/forget` handled in
between leaves the cached copy for its day), and a long recording's transcribed pieces go with the note. Real
Whisper, a nats-server of the module's own, the Telegram and OpenAI doubles."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from analyzers.service import AnalyzerService
from bench.speech import speak
from formatter.forget import ChatForgetter
from formatter.join import JoinStore
from formatter.marks import AnswerMarks
from formatter.service import FormatterService
from gateway.chats import chat_key
from gateway.forget import IntakeForgetter
from gateway.intake import correlation_id, correlation_key, file_fingerprint
from infra.bus import Bus, deliver
from infra.bus.names import (
    BUCKET_ANALYSIS_CACHE,
    BUCKET_ANSWERED,
    BUCKET_JOINS,
    BUCKET_PIECES,
    BUCKET_TRANSCRIPT_CACHE,
    CONSUMER_TRANSCRIBER_FORGET,
    STREAM_FORGET,
    SUBJECT_TRANSCRIPT,
    analysis_subject,
)
from infra.domain.contracts import AudioReceived, AudioRef, Origin
from infra.domain.notes import text_digest
from infra.runtime.settings import Limits, Settings
from infra.voice.telegram import make_bot
from tests.support import (
    EN_TEXT,
    TOKEN,
    Gateway,
    Speech,
    a_transcript,
    an_analyzer,
    answer_of,
    eventually,
    first_delivery,
    fresh,
    settled,
    telegram_of_its_own,  # noqa: F401  (the `telegram` fixture here: a double of the test's own)
)
from transcriber.asr import SpeechRecognizer
from transcriber.forget import TranscriptForgetter
from transcriber.service import TranscriberService
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
USER = 74_300_001
KEY = correlation_key(TOKEN)
CACHE_WRITE = 2.0
"""How long a slow cache write takes here: longer than the formatter needs to answer a note it is handed."""


@pytest.fixture(scope="module")
def recognizer(model_dir: Path) -> SpeechRecognizer:
    return SpeechRecognizer(str(model_dir), device="cpu", max_seconds=120)


def slowed(put: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A cache's write that takes its time (a busy server, a leader election), then lands."""

    async def slow(*args: Any) -> None:
        await asyncio.sleep(CACHE_WRITE)
        await put(*args)

    return slow


async def looked_at_once_out(bus: Bus, subject: str, look: Callable[[], Awaitable[bool]]) -> tuple[list[bool], Any]:
    """From now on, for each event on `subject`: whether `look()` found its cached copy the moment it went out;
    and the subscription, to end."""
    seen: list[bool] = []

    async def on_event(msg: Msg) -> None:
        seen.append(await look())

    return seen, await bus.nc.subscribe(subject, cb=on_event)


async def test_a_transcript_is_cached_before_it_goes_out(
    private_bus: Bus, recognizer: SpeechRecognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The formatter may answer, and a `/forget` erase the note's cached transcript, as soon as the transcript is
    out: a copy cached after that would be left for its day."""
    audio, _ = await asyncio.to_thread(speak, "We ship on Monday.", "en", tmp_path)
    await (await private_bus.audio_store()).put("forget01", audio)
    origin = Origin(chat_id=1, message_id=1, status_message_id=2, ui_language="en", chat_key="c0ffee")
    audio_ref = AudioRef(object_name="forget01", kind="voice", size=len(audio), fingerprint="f0rget01")
    note = AudioReceived(correlation_id="forget01", origin=origin, audio=audio_ref, modes=())
    service = TranscriberService(private_bus, recognizer)
    monkeypatch.setattr(service.cache, "put", slowed(service.cache.put))

    async def cached() -> bool:
        return bool(await private_bus.kv_keys(BUCKET_TRANSCRIPT_CACHE, prefix="f0rget01."))

    seen, watching = await looked_at_once_out(private_bus, SUBJECT_TRANSCRIPT, cached)
    verdict = await deliver(service.handle, note, first_delivery(TranscriberService.handle))
    assert verdict.outcome == "done", verdict
    await eventually(lambda: bool(seen), 10)
    await watching.unsubscribe()
    assert seen == [True], "the transcript went out before its cached copy was written"


async def test_an_analysis_is_cached_before_it_goes_out(
    private_bus: Bus, openai_double: OpenAIDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a transcript: the analysis that completes a note lets the formatter answer it, and erase its cached
    analyses if its chat said `/forget`."""
    analyzer = await an_analyzer(private_bus, openai_double.base_url, "TONE", join_timeout=30)
    monkeypatch.setattr(analyzer.cache, "put", slowed(analyzer.cache.put))
    transcript = a_transcript("forget02", fresh("We ship on Monday."), published_at=time.time())

    async def cached() -> bool:
        prefix = f"TONE.{text_digest(transcript.text)}."
        return bool(await private_bus.kv_keys(BUCKET_ANALYSIS_CACHE, prefix=prefix))

    seen, watching = await looked_at_once_out(private_bus, analysis_subject("TONE"), cached)
    verdict = await deliver(analyzer.handle, transcript, first_delivery(AnalyzerService.handle))
    assert verdict.outcome == "done", verdict
    await eventually(lambda: bool(seen), 10)
    await watching.unsubscribe()
    assert seen == [True], "the analysis went out before its cached copy was written"


class Gate:
    """Holds every call of the recognizer until opened: a note stays in flight while the test speaks."""

    def __init__(self, recognizer: Any) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.offsets: list[float] = []
        recognize: Callable[..., Any] = recognizer.recognize

        def held(*args: Any, **kwargs: Any) -> Any:
            self.offsets.append(kwargs.get("offset", 0.0))
            self.entered.set()
            self.opened.wait(120)
            return recognize(*args, **kwargs)

        self.held = held


async def test_a_long_note_in_flight_at_forget_leaves_neither_its_pieces_nor_its_transcript(
    private_bus: Bus,
    telegram: TelegramDouble,
    recognizer: SpeechRecognizer,
    speech: Speech,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A recording long enough to be cut into pieces is being transcribed when its chat says `/forget`: its pieces
    are transcribed after it, and once it is answered nothing of it is left, not a transcribed piece (they wait
    under the chat's key to be stitched) nor the stitched transcript's cached copy (written slowly here)."""
    service = TranscriberService(private_bus, recognizer, piece_seconds=4)  # a 9 s note: two or three pieces
    gate = Gate(recognizer)
    monkeypatch.setattr(recognizer, "recognize", gate.held)
    monkeypatch.setattr(service.cache, "put", slowed(service.cache.put))
    bot = make_bot(Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url))
    joins, marks = JoinStore(await private_bus.kv(BUCKET_JOINS)), AnswerMarks(await private_bus.kv(BUCKET_ANSWERED))
    for keeper in (
        service,
        TranscriptForgetter(private_bus),
        FormatterService(private_bus, bot, joins, marks, 30, 600, progress_interval=0.1),
        ChatForgetter(private_bus, bot),
        IntakeForgetter(private_bus),
    ):
        await private_bus.start(keeper)
    chat = chat_key(KEY, USER)
    try:
        async with Gateway(private_bus, telegram, Limits(allowed=frozenset({USER}))):
            voice = await telegram.send_media(USER, speech.say(EN_TEXT), duration=9)
            fingerprint = file_fingerprint(KEY, telegram.last_unique_id)
            assert await asyncio.to_thread(gate.entered.wait, 120), "a piece is being transcribed"
            await telegram.send_text(USER, "/forget")
            await telegram.wait_for(lambda: any(m.text.startswith("🧹") for m in telegram.messages(USER)), 30)
            gate.opened.set()
            answer = await answer_of(telegram, USER, timeout=120)
            assert answer.text.startswith("📝 Transcript") and not answer.keyboard, answer.text
            cid = correlation_id(KEY, USER, voice)

            deadline = time.monotonic() + 30
            while await joins.get(cid) is not None:  # erased with everything of the note, after its answer
                assert time.monotonic() < deadline, "the note was not erased after its answer"
                await asyncio.sleep(0.2)
            await asyncio.sleep(CACHE_WRITE * 2)  # a copy cached after the answer (the old order) has landed by now
            await settled(private_bus, CONSUMER_TRANSCRIBER_FORGET, stream=STREAM_FORGET)
    finally:
        gate.opened.set()
        await bot.session.close()
    assert len(gate.offsets) >= 2, f"the note was cut into pieces: {gate.offsets}"
    assert await private_bus.kv_keys(BUCKET_PIECES, prefix=f"{chat}.") == [], "its transcribed pieces"
    assert await private_bus.kv_keys(BUCKET_TRANSCRIPT_CACHE, prefix=f"{fingerprint}.") == [], "its transcript"
