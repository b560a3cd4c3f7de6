"""Flood control itself, not what retries make of its absence: the fault suite's notes all arrive even without
it, because every 429 is retried. Issue 21 (9): at the rates we send, Telegram never has to say 429; when it
does, `retry_after` is honoured before the call is made again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot

from infra.runtime.settings import Settings
from infra.voice.telegram import make_bot
from tests.support import (
    TOKEN,
    telegram_of_its_own,  # noqa: F401  (the `telegram` fixture here: a double of the test's own)
)
from voice_insight.doubles.telegram_api import TelegramDouble


@pytest.fixture
async def bot(telegram: TelegramDouble) -> AsyncIterator[Bot]:
    bot = make_bot(Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url))
    yield bot
    await bot.session.close()


async def test_a_burst_to_one_chat_is_paced_under_telegrams_limit(telegram: TelegramDouble, bot: Bot) -> None:
    """Eight messages at once to one person (Telegram takes about four, then one a second): all arrive, and not
    one was answered 429."""
    person = 70_000_001
    await asyncio.gather(*(bot.send_message(person, f"part {n}") for n in range(8)))
    assert telegram.floods == [], telegram.floods
    assert sorted(m.text for m in telegram.messages(person)) == sorted(f"part {n}" for n in range(8))


async def test_a_burst_to_many_chats_is_paced_under_the_bots_limit(telegram: TelegramDouble, bot: Bot) -> None:
    """One message each to forty-five people at once (about thirty a second for the whole bot): without pacing
    fifteen of them are answered 429. Paced, all arrive; a stall of this machine's event loop, which delivers
    several paced requests to the double together, may still cost a rare one, waited out like any other."""
    people = range(70_000_100, 70_000_145)
    await asyncio.gather(*(bot.send_message(chat, "hello") for chat in people))
    assert len(telegram.floods) <= 2, telegram.floods
    assert all(len(telegram.messages(chat)) == 1 for chat in people)


async def test_retry_after_is_waited_out_before_the_call_is_made_again(telegram: TelegramDouble, bot: Bot) -> None:
    chat = 70_000_002
    telegram.flood(chat, retry_after=2)
    started = time.monotonic()
    await bot.send_message(chat, "after the flood")
    assert time.monotonic() - started >= 2.0, "sent again before Telegram's retry_after was over"
    assert len(telegram.floods) == 1 and [m.text for m in telegram.messages(chat)] == ["after the flood"]
