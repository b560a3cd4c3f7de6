"""Two formatters, the same complete note, at the same time: the user gets exactly one answer."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from aiogram import Bot

from formatter.join import AnswerMarks, JoinStore
from formatter.service import FormatterService
from infra.bus import BUCKET_ANSWERED, BUCKET_JOINS, Bus, Delivery
from infra.contracts import Analysis, AudioReceived, AudioRef, Origin, Section, Transcript
from infra.settings import Settings
from infra.telegram import make_bot
from tests.conftest import TOKEN
from tests.doubles.telegram_api import TelegramDouble

_chats = itertools.count(70_000_001)
DELIVERY = Delivery(subject="voice.x", attempt=1, max_deliver=5)


async def formatter(bus: Bus, bot: Bot, stale_after: float = 30.0) -> FormatterService:
    return FormatterService(
        bus, bot, JoinStore(await bus.kv(BUCKET_JOINS)), AnswerMarks(await bus.kv(BUCKET_ANSWERED), stale_after),
        join_timeout=30, max_audio_seconds=600,
    )


async def a_note(telegram: TelegramDouble, bot: Bot, cid: str, modes: tuple[str, ...] = ("DEFAULT", "TONE")):  # type: ignore[no-untyped-def]
    chat = next(_chats)
    status = await bot.send_message(chat, "🎧 Listening…")
    origin = Origin(chat_id=chat, message_id=status.message_id - 1, status_message_id=status.message_id, ui_language="en")
    events = [
        AudioReceived(correlation_id=cid, origin=origin, audio=AudioRef(object_name=cid, kind="voice", size=1), modes=modes),
        Transcript(correlation_id=cid, text="We ship on Monday.", language="en", language_probability=0.99, duration=2,
                   segments=(), ui_language="en", model="base", transcribe_seconds=0.5),
    ] + [
        Analysis(correlation_id=cid, mode=m, title=m.title(), model="m", sections=(Section(heading="H", body=f"{m} body"),))
        for m in modes
    ]
    return chat, events


@pytest.fixture
async def bot(telegram: TelegramDouble):  # type: ignore[no-untyped-def]
    bot = make_bot(Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url))
    yield bot
    await bot.session.close()


async def test_two_formatters_racing_on_every_event_answer_once(bus: Bus, telegram: TelegramDouble, bot: Bot) -> None:
    one, two = await formatter(bus, bot), await formatter(bus, bot)
    for n in range(5):
        cid = f"race{n}{id(one)}"
        chat, events = await a_note(telegram, bot, cid)
        # Both formatters receive every event, concurrently and in opposite orders.
        await asyncio.gather(
            *(one.on_event(e, DELIVERY) for e in events), *(two.on_event(e, DELIVERY) for e in reversed(events))
        )
        messages = telegram.messages(chat)
        assert len(messages) == 1 and len(messages[0].history) == 2, f"round {n}: {messages}"
        assert "DEFAULT body" in messages[0].text and "TONE body" in messages[0].text


async def test_a_claim_left_by_a_dead_formatter_is_taken_over_after_it_goes_stale(
    bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    cid = f"stale{id(bot)}"
    chat, events = await a_note(telegram, bot, cid, modes=())
    marks = AnswerMarks(await bus.kv(BUCKET_ANSWERED), stale_after=0.5)
    assert await marks.claim(cid)  # a formatter claimed the answer, then died before sending it
    survivor = await formatter(bus, bot, stale_after=0.5)
    for event in events:
        await survivor.on_event(event, DELIVERY)
    assert telegram.messages(chat)[0].history == ["🎧 Listening…"], "a fresh claim is respected"
    await asyncio.sleep(0.6)
    await survivor.on_event(events[-1], DELIVERY)  # the redelivery after the ack wait
    assert "We ship on Monday." in telegram.messages(chat)[0].text
    assert await marks.is_sent(cid)
