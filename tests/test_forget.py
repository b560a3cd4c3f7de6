"""`/forget`, the formatter's part, delivered as JetStream delivers it: against a real NATS and the Telegram double.

The whole flow through the stack (gateway, formatter, transcriber, analyzers; nothing of the chat left in any
stream or bucket) is `tests/test_chat.py`'s; here, what a redelivery must not change: a chat told "0 notes" after
its notes were deleted, a chat that is gone keeping its data, or the other keepers asked twice.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import msgspec
import nats.js.errors
import pytest
from aiogram import Bot

from formatter.forget import ChatForgetter
from infra.bus import Bus, Delivery, deliver
from infra.bus.names import BUCKET_JOINS, STREAM, STREAM_FORGET, SUBJECT_FORGET_INTAKE, SUBJECT_TRANSCRIPT
from infra.domain.contracts import ForgetChat, ForgetIntake, Origin
from infra.domain.notes import NoteStore, StoredNote
from infra.runtime.settings import Settings
from infra.voice.telegram import FloodControl, make_bot
from tests.support import TOKEN, a_transcript
from voice_insight.doubles.telegram_api import TelegramDouble

_chats = itertools.count(88_000_001)


@pytest.fixture
async def bot(telegram: TelegramDouble) -> AsyncIterator[Bot]:
    settings = Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url)
    made = make_bot(settings, FloodControl(patience=0), request_timeout=2)
    yield made
    await made.session.close()


async def a_note_of(bus: Bus, chat_id: int) -> tuple[str, str, int]:
    """An answered note of a chat, as the formatter keeps it: its event in the stream, its join, its record."""
    chat_key, cid = f"chat{chat_id}", f"note{chat_id}"
    ack = await bus.js.publish(SUBJECT_TRANSCRIPT, msgspec.json.encode(a_transcript(cid)), stream=STREAM)
    await (await bus.kv(BUCKET_JOINS)).put(cid, b"{}")
    origin = Origin(chat_id=chat_id, message_id=1, status_message_id=2, ui_language="en")
    note = StoredNote(origin=origin, transcript=a_transcript(cid), fingerprint=f"fp{chat_id}", seqs=(ack.seq,))
    await NoteStore(bus).put(chat_key, cid, note)
    return chat_key, cid, ack.seq


async def stored(bus: Bus, subject: str) -> list[bytes]:
    """Every message on `subject` still in `FORGET` (a work queue: nobody takes these here)."""
    found, seq = [], 1
    while True:
        try:
            msg = await bus.js.get_msg(STREAM_FORGET, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return found
        found.append(msg.data or b"")
        seq = (msg.seq or seq) + 1


def forget(chat_id: int, chat_key: str) -> ForgetChat:
    return ForgetChat(chat_key=chat_key, chat_id=chat_id, ui_language="en", settings=True)


async def test_a_redelivered_forget_says_what_was_deleted_not_zero(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """Telegram answers 500 to the first reply: the delivery is tried again, and the chat is told what there was,
    once; the notes and their events go only after the chat was told."""
    chat = next(_chats)
    chat_key, cid, seq = await a_note_of(private_bus, chat)
    forgetter = ChatForgetter(private_bus, bot)
    telegram.refuse_writes(chat, "try again later", code=500, method="sendMessage")

    first = await deliver(
        forgetter.on_forget, forget(chat, chat_key), Delivery(subject="forget.chat", attempt=1, seq=7)
    )
    assert first.outcome != "done", first
    second = await deliver(
        forgetter.on_forget, forget(chat, chat_key), Delivery(subject="forget.chat", attempt=2, seq=7)
    )
    assert second.outcome == "done", second

    [told] = [m.text for m in telegram.messages(chat)]
    assert "1 notes" in told and "1 queued messages" in told and "settings: yes" in told, told
    assert await NoteStore(private_bus).get(chat_key, cid) is None
    with pytest.raises(nats.js.errors.NotFoundError):
        await private_bus.js.get_msg(STREAM, seq=seq)
    # The keepers were asked once, whatever the attempts: the request's ID is the delivery's.
    asked = [msgspec.json.decode(m, type=ForgetIntake) for m in await stored(private_bus, SUBJECT_FORGET_INTAKE)]
    assert [a.correlation_ids for a in asked if cid in a.correlation_ids] == [(cid,)]


async def test_a_chat_that_is_gone_is_forgotten_all_the_same(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """The bot was removed from the group, or the chat deleted: nobody can be told, and nothing is kept."""
    chat = next(_chats)
    chat_key, cid, _ = await a_note_of(private_bus, chat)
    telegram.forget_chat(chat)
    forgetter = ChatForgetter(private_bus, bot)
    verdict = await deliver(
        forgetter.on_forget, forget(chat, chat_key), Delivery(subject="forget.chat", attempt=1, seq=9)
    )
    assert verdict.outcome == "done", verdict
    assert not telegram.messages(chat), "nobody was told: the chat is gone"
    assert await NoteStore(private_bus).get(chat_key, cid) is None
