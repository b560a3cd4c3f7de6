"""The whole product through its real processes: `voice-insight up`, a real NATS, real Whisper.

Every assertion is about what the user sees in the chat (through the Bot API double), or what the LLM was
asked (through the OpenAI double).
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from infra.bus import BUCKET_MODES, CONSUMER_FORMATTER, STREAM, SUBJECT_AUDIO, SUBJECT_TRANSCRIPT, Bus
from infra.contracts import ModeInfo, encode
from tests.conftest import MAX_AUDIO_SECONDS, Speech, Stack
from tests.doubles.openai_api import OpenAIDouble
from tests.doubles.telegram_api import SentMessage, TelegramDouble

pytestmark = pytest.mark.timeout(600)

_chats = itertools.count(50_000_001)
LISTENING = ("🎧 Listening…", "🎧 Слушаю…")

EN_TEXT = (
    "Hello team. The quarterly budget review is moved to Thursday morning. "
    "Please send me the sales report before Wednesday evening."
)
RU_TEXT = "Привет. Завтра встреча в десять утра. Пожалуйста, подготовь отчёт по продажам."


def new_chat() -> int:
    return next(_chats)


def final(telegram: TelegramDouble, chat: int) -> list[SentMessage]:
    return telegram.messages(chat)


async def answer_of(telegram: TelegramDouble, chat: int, timeout: float = 120.0) -> SentMessage:
    """Wait until the status message has turned into something else, and return it."""

    def answered() -> bool:
        messages = telegram.messages(chat)
        return bool(messages) and messages[0].text not in LISTENING

    await telegram.wait_for(answered, timeout)
    return telegram.messages(chat)[0]


async def settled(bus: Bus, consumer: str = CONSUMER_FORMATTER, timeout: float = 60.0) -> None:
    """Wait until a consumer has seen and acked everything in the stream (a positive signal, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        info = await bus.js.consumer_info(STREAM, consumer)
        stream = await bus.js.stream_info(STREAM)
        if info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= stream.state.last_seq:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{consumer} did not settle: {info}")
        await asyncio.sleep(0.1)


async def test_english_voice_note_gets_transcript_summary_and_tone(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    before = len(openai_double.requests)
    await telegram.send_media(chat, speech.say(EN_TEXT), duration=9, language_code="en")

    answer = await answer_of(telegram, chat)
    assert answer.history[0] == "🎧 Listening…"
    text = answer.text
    assert text.startswith("📝 Transcript · English")
    for word in ("budget", "Thursday", "sales report", "Wednesday"):
        assert word.lower() in text.lower()
    # DEFAULT and TONE, in that order, with what the LLM made of this very transcript.
    gist, tone = text.index("📌 The gist"), text.index("🎭 Tone")
    assert gist < tone
    assert "Summary: summary: Hello team" in text
    assert "Key points:" in text and "• key_points 1: Hello team" in text
    assert "Hidden intentions: hidden_intentions: Hello team" in text
    assert "How best to reply:" in text
    assert "Missing" not in text

    # The reasoning model got max_completion_tokens and no temperature; gpt-4o got both classic knobs.
    calls = {r["model"]: r for r in openai_double.requests[before:]}
    assert set(calls) == {"o3", "gpt-4o"}
    assert "max_tokens" not in calls["o3"] and "temperature" not in calls["o3"]
    assert calls["o3"]["max_completion_tokens"] >= 1000
    assert calls["gpt-4o"]["max_tokens"] == 500 and calls["gpt-4o"]["temperature"] == 0.7
    assert all(r["response_format"]["type"] == "json_schema" for r in calls.values())

    await settled(bus)
    messages = final(telegram, chat)
    assert len(messages) == 1, "exactly one answer, in the status message"
    assert len(messages[0].history) == 2, "the status message was edited exactly once"
