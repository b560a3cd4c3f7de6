"""Faults users meet, through the real stack (`voice-insight up`, real NATS, real Whisper): floods of forwarded
notes, failing downloads, a broken mode announcement, a gateway killed mid-intake, hostile files.

Each test asserts what the user sees (one answer, or one clear message, never a status left hanging, never a
duplicate) and, where secrets are at stake, that none reached any process's output.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from infra.bus import Bus, encode
from infra.bus.names import BUCKET_MODES
from infra.domain.contracts import ModeInfo
from tests.support import (
    EN_TEXT,
    KEYWORDS,
    NOTES,
    TOKEN,
    Speech,
    Stack,
    answer_of,
    answered_once,
    in_progress,
    live_stream,
    new_chat,
    settled,
)
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = pytest.mark.timeout(600)


def assert_no_secret_in(output: str) -> None:
    for secret in (TOKEN, TOKEN.split(":", 1)[1]):
        assert secret not in output, "the bot token reached a log line"


async def test_six_notes_forwarded_at_once_all_get_one_answer_through_flood_control(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    clips = [speech.say(text) for text in NOTES]
    for clip in clips:  # as fast as Telegram delivers a forwarded batch
        await telegram.send_media(chat, clip, duration=4)

    def all_answered() -> bool:
        messages = telegram.messages(chat)
        return len(messages) >= len(NOTES) and all(not in_progress(m.text) for m in messages)

    await telegram.wait_for(all_answered, 300)
    await settled(bus)
    messages = telegram.messages(chat)
    assert len(messages) == len(NOTES), [m.history for m in messages]
    assert all(answered_once(m) and m.text.startswith("📝 Transcript") for m in messages)
    answered = " ".join(m.text.lower() for m in messages)
    assert all(keyword in answered for keyword in KEYWORDS)


async def test_a_failing_download_gets_a_clear_answer_and_the_token_stays_secret(
    stack: Stack, telegram: TelegramDouble, speech: Speech
) -> None:
    telegram.fail_downloads(500, 502, 503, 500)  # every try fails
    chat = new_chat()
    await telegram.send_media(chat, speech.say("Hello there."), duration=2)
    answer = await answer_of(telegram, chat, timeout=60)
    assert answer.text.startswith("📡 I could not download the file")

    telegram.fail_downloads(502)  # one hiccup is retried, not refused
    chat = new_chat()
    await telegram.send_media(chat, speech.say(EN_TEXT), duration=9)
    assert "budget" in (await answer_of(telegram, chat)).text.lower()
    assert_no_secret_in(stack.output())


async def test_a_malformed_mode_announcement_is_skipped_not_fatal(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    kv = await bus.kv(BUCKET_MODES)
    await kv.put("BROKEN", b'{"mode": "BROKEN", "title": 42')  # an analyzer written elsewhere, wrongly
    wrong_key = ModeInfo(
        mode="lower case!", title="x", model="m", max_tokens=1, temperature=None, timeout=1, structured_output=False
    )
    await kv.put("ODD", encode(wrong_key))
    try:
        chat = new_chat()
        await telegram.send_media(chat, speech.say(EN_TEXT), duration=9)
        text = (await answer_of(telegram, chat)).text
        assert "📌 The gist" in text and "🎭 Tone" in text and "Missing" not in text

        await telegram.send_text(chat, "/list_modes")
        await telegram.wait_for(lambda: len(telegram.messages(chat)) == 2, 30)
        listing = telegram.messages(chat)[1].text
        assert "📌 The gist" in listing and "🎭 Tone" in listing and "BROKEN" not in listing and "42" not in listing
    finally:
        await kv.delete("BROKEN")
        await kv.delete("ODD")


async def test_a_gateway_killed_in_the_middle_of_intake_loses_no_note(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    telegram.download_delay = 4.0  # the note is between "Listening…" and the hand-over
    try:
        message_id = await telegram.send_media(chat, speech.say(EN_TEXT), duration=9)
        update_id = telegram.sent_updates[message_id]["update_id"]
        await telegram.wait_for(lambda: bool(telegram.messages(chat)), 60)
        # Telegram has forgotten the update: from here on, only we have the note.
        await telegram.wait_for(lambda: telegram.confirmed_offset > update_id, 60)
        await asyncio.sleep(1.0)  # mid-download (it takes 4 s), well past the status message's own record
        os.kill(stack.child("gateway"), signal.SIGKILL)
    finally:
        telegram.download_delay = 0.0
    answer = await answer_of(telegram, chat, timeout=180)
    assert "budget" in answer.text.lower() and "🎭 Tone" in answer.text
    assert "gateway       | exited with -9; restarting" in stack.output()
    await settled(bus)
    messages = telegram.messages(chat)
    assert len(messages) == 1 and answered_once(messages[0]), "one status message, answered once"


async def test_a_stream_with_no_declared_duration_is_refused_at_the_limit(
    stack: Stack, telegram: TelegramDouble, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    live = live_stream(tmp_path / "live.webm", 900)
    chat = new_chat()
    started = time.monotonic()
    await telegram.send_media(chat, live.read_bytes(), kind="document", mime_type="audio/webm", file_name="call.webm")
    answer = await answer_of(telegram, chat, timeout=120)
    assert answer.text.startswith("⏱ This recording is longer than")
    assert time.monotonic() - started < 120
