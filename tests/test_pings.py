"""Issue 23 (3, 6): groups stay quiet, and a long wait ends in a ping.

A status in a group ("🎧 Listening…", a button's "⏳ 🎭 Tone…") reached every member's phone; and an answer that
only ever arrived as edits of that status never notified anyone, so whoever sent a forty-minute recording was
never told it was ready. Now statuses in groups go out silently, and a note answered more than `NOTIFY_AFTER`
after it arrived gets its answer as a new message (a reply to the note, which notifies) while its status goes.

The whole stack plays the chats; the formatter alone, driven by hand, plays what may happen between "the answer
is out" and "the status is gone" (Telegram away, a formatter that died, a status Telegram will not delete).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot

from formatter.join import JoinState, JoinStore
from formatter.marks import AnswerMarks
from formatter.render import render_answer
from formatter.service import FormatterService
from infra.bus import Bus
from infra.bus.names import BUCKET_ANSWERED, BUCKET_JOINS
from infra.domain.answers import Claimed, Sent, encode_mark, read_mark
from infra.domain.contracts import Analysis, AudioReceived, AudioRef, Event, Origin, Section
from infra.runtime.settings import Settings
from infra.voice.telegram import make_bot
from infra.voice.texts import text
from tests.support import (
    EN_TEXT,
    NOTIFY_AFTER,
    TOKEN,
    Redelivered,
    Speech,
    Stack,
    a_transcript,
    answer_to,
    answered_once,
    fresh,
    in_progress,
    new_chat,
    settled,
)
from tests.test_chat import press
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = pytest.mark.timeout(300)

BOT_ID = TelegramDouble.BOT_USER["id"]
_groups = iter(range(-100_600_000_001, -100_700_000_000, -1))  # this module's own
_chats = itertools.count(74_000_001)


# --- the whole stack ---------------------------------------------------------------------------------------


async def test_in_a_group_statuses_are_silent_and_a_short_note_is_answered_in_place(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, bus: Bus
) -> None:
    group, sender = next(_groups), 801
    telegram.members[(group, BOT_ID)] = "administrator"  # sees every voice note
    openai_double.break_model("gpt-4o")  # TONE fails, so its button is offered under the answer
    try:
        voice = await telegram.send_media(group, speech.say(fresh(EN_TEXT)), duration=9, from_user=sender)
        answer = await answer_to(telegram, group, voice)
    finally:
        openai_double.heal()
    try:
        assert answered_once(answer) and answer.history[0] == "🎧 Listening…", "answered in place"
        assert answer.silent, "the status went out without a sound"
        assert "📌 The gist" in answer.text

        await press(telegram, answer, "▶ 🎭 Tone", user=sender)
        await telegram.wait_for(
            lambda: len(telegram.messages(group)) == 2 and not in_progress(telegram.messages(group)[1].text), 120
        )
        tone = telegram.messages(group)[1]
        assert tone.history[0] == "⏳ 🎭 Tone…" and "Hidden intentions" in tone.text
        assert tone.silent, "a button's status is as quiet as the note's"
        await settled(bus)
        assert not any(m.deleted for m in telegram.all_messages(group)), "short: nothing replaced, nothing deleted"
        assert telegram.notified(group) == [], "statuses, then edits: nobody's phone rang"
    finally:
        telegram.members.pop((group, BOT_ID), None)


async def test_a_note_answered_after_a_long_wait_arrives_as_a_new_message_that_notifies(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    telegram.download_delay = NOTIFY_AFTER + 1.0  # Telegram's file server is slow today: the wait is long
    try:
        voice = await telegram.send_media(chat, speech.say(EN_TEXT), duration=9)
        answer = await answer_to(telegram, chat, voice, timeout=180)
    finally:
        telegram.download_delay = 0.0
    await settled(bus)
    status, *rest = telegram.all_messages(chat)
    assert [m.message_id for m in rest] == [answer.message_id], "one answer, once"
    assert status.deleted and all(in_progress(t) for t in status.history), "the status went, having said only that"
    assert [m.message_id for m in telegram.messages(chat)] == [answer.message_id]
    assert answer.message_id in [m.message_id for m in telegram.notified(chat)], "the answer pinged"
    assert answer.reply_to == voice and answer.history == [answer.text], "a reply to the note, sent whole"
    assert answer.text.startswith("📝 Transcript") and "🎭 Tone" in answer.text
    assert answer.button("📄 Transcript") and answered_once(answer)


# --- the formatter alone, between "sent" and "deleted" ------------------------------------------------------

MODES = ("DEFAULT", "TONE")
LATE = 0.2
"""The formatters here ping once a note has waited this long: every note of these tests has."""


@pytest.fixture
async def bot(telegram: TelegramDouble) -> AsyncIterator[Bot]:
    bot = make_bot(Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url))
    yield bot
    await bot.session.close()


async def formatter(bus: Bus, bot: Bot) -> FormatterService:
    return FormatterService(
        bus,
        bot,
        JoinStore(await bus.kv(BUCKET_JOINS)),
        AnswerMarks(await bus.kv(BUCKET_ANSWERED), lease=1.0),
        join_timeout=30,
        max_audio_seconds=600,
        answer_backoff_cap=0.5,
        show_progress=False,
        notify_after=LATE,
    )


async def a_late_note(bot: Bot) -> tuple[int, str, int, list[Event]]:
    """A note whose status has said "Listening…" for a while: (chat, correlation ID, status, its events)."""
    chat = next(_chats)
    cid = f"ping{chat}"
    status = await bot.send_message(chat, "🎧 Listening…")
    origin = Origin(
        chat_id=chat, message_id=status.message_id - 1, status_message_id=status.message_id, ui_language="en"
    )
    audio = AudioRef(object_name=cid, kind="voice", size=1)
    events: list[Event] = [
        AudioReceived(correlation_id=cid, origin=origin, audio=audio, modes=MODES, received_at=time.time() - 60),
        a_transcript(cid),
        *(
            Analysis(correlation_id=cid, mode=m, title=m.title(), model="m", sections=(Section(heading="H", body=m),))
            for m in MODES
        ),
    ]
    return chat, cid, status.message_id, events


async def answered(bus: Bus, cid: str) -> bool:
    mark, _ = await read_mark(await bus.kv(BUCKET_ANSWERED), cid)
    return isinstance(mark, Sent) and mark.outcome == "answered"


async def test_a_status_that_telegram_fails_to_delete_goes_on_a_retry_and_the_answer_is_not_sent_again(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    service = await formatter(private_bus, bot)
    chat, cid, status, events = await a_late_note(bot)
    telegram.refuse_writes(chat, "Internal Server Error", code=500, method="deleteMessage")
    redelivered = Redelivered(service.on_event)
    for event in events:
        assert await redelivered(event) == "acked"
    assert redelivered.retries, "the failed deletion was tried again"
    shown = telegram.all_messages(chat)
    assert [m.message_id for m in shown][0] == status and len(shown) == 2, "the answer went out once"
    assert shown[0].deleted and shown[0].history == ["🎧 Listening…"], "the status went, never edited"
    assert shown[1].text.startswith("📝 Transcript") and not shown[1].silent
    assert await answered(private_bus, cid)


async def test_a_formatter_that_died_after_the_answer_went_out_leaves_the_status_to_the_next(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """The dead formatter sent the answer's one message and recorded it, then died before deleting the status:
    whoever takes its claim over sends nothing again, and deletes the status."""
    chat, cid, status, events = await a_late_note(bot)
    state = JoinState()
    for event in events:
        state.apply(event)
    (part,) = render_answer(state)
    assert isinstance(part, str)
    sent = await bot.send_message(chat, part)
    dead = Claimed(owner="dead", parts_sent=1, shown=MODES, pinged=True)
    await (await private_bus.kv(BUCKET_ANSWERED)).put(cid, encode_mark(dead))
    service = await formatter(private_bus, bot)
    redelivered = Redelivered(service.on_event)
    for event in events:
        assert await redelivered(event) == "acked"
    assert [m.message_id for m in telegram.all_messages(chat)] == [status, sent.message_id]
    assert telegram.all_messages(chat)[0].deleted and not telegram.all_messages(chat)[1].deleted
    assert await answered(private_bus, cid)


async def test_a_status_telegram_will_not_delete_points_to_the_answer_instead(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    service = await formatter(private_bus, bot)
    chat, cid, status, events = await a_late_note(bot)
    telegram.refuse_writes(chat, "message can't be deleted for everyone", method="deleteMessage")
    for event in events:
        assert await Redelivered(service.on_event)(event) == "acked"
    pointer, answer = telegram.all_messages(chat)
    assert pointer.message_id == status and not pointer.deleted
    assert pointer.history == ["🎧 Listening…", text("answer_below", "en")], "no stale “Listening…” beside it"
    assert answer.text.startswith("📝 Transcript") and answer.reply_to == status - 1 and not answer.silent
    assert await answered(private_bus, cid)
