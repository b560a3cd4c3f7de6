"""Webhook mode (issue 12): Telegram posts updates, any number of gateways take them, each update is answered
once, and a post without Telegram's secret touches nothing."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import aiohttp
import pytest
from aiogram.exceptions import TelegramConflictError

from gateway.webhook import SECRET_HEADER
from infra.bus import STREAM_UPDATES, Bus
from infra.limits import Limits
from tests.doubles.telegram_api import TelegramDouble
from tests.support import Gateway

SECRET = "s3cret-from-the-operator-0123456789"
_users = itertools.count(73_000_001)


def an_update(user: int, text: str) -> dict:
    """An update as Telegram would post it, which the double itself never delivers."""
    return {
        "update_id": random.randint(10**9, 2 * 10**9),
        "message": {
            "message_id": random.randint(1, 10**6),
            "date": int(time.time()),
            "chat": {"id": user, "type": "private", "first_name": "User"},
            "from": {"id": user, "is_bot": False, "first_name": "User", "language_code": "en"},
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}],
        },
    }


async def post(url: str, update: dict, secret: str | None) -> int:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    async with aiohttp.ClientSession() as session, session.post(url, json=update, headers=headers) as response:
        return response.status


async def test_an_update_with_the_secret_is_answered_and_one_without_touches_nothing(
    private_bus: Bus, telegram: TelegramDouble
) -> None:
    user, stranger = next(_users), next(_users)
    async with Gateway(private_bus, telegram, Limits(allowed=frozenset({user, stranger})), webhook_secret=SECRET) as gw:
        assert telegram.webhook == {"url": gw.webhook_url, "secret_token": SECRET}
        await telegram.send_text(user, "/help")  # Telegram posts it, with the secret
        await telegram.wait_for(lambda: bool(telegram.messages(user)), 30)
        assert telegram.messages(user)[0].text.startswith("How to use it")
        assert any(status == 200 for _, status in telegram.webhook_posts)

        before = (await private_bus.js.stream_info(STREAM_UPDATES)).state.last_seq
        assert await post(gw.webhook_url, an_update(stranger, "/help"), None) == 401
        assert await post(gw.webhook_url, an_update(stranger, "/help"), "guessed-secret-0123456789") == 403
        assert await post(gw.webhook_url, an_update(stranger, "/help"), SECRET[:-1]) == 403
        await asyncio.sleep(1.0)
        assert (await private_bus.js.stream_info(STREAM_UPDATES)).state.last_seq == before, "nothing taken in"
        assert telegram.messages(stranger) == [], "and nothing answered"
    assert telegram.webhook is None, "the test gateway gave the double back to polling"


async def test_the_same_update_posted_to_two_gateways_is_answered_once(
    private_bus: Bus, telegram: TelegramDouble
) -> None:
    user = next(_users)
    limits = Limits(allowed=frozenset({user}))
    async with (
        Gateway(private_bus, telegram, limits, webhook_secret=SECRET) as one,
        Gateway(private_bus, telegram, limits, webhook_secret=SECRET) as two,
    ):
        update = an_update(user, "/help")
        # Telegram thought the first post failed and retried; the load balancer sent each to another gateway.
        statuses = await asyncio.gather(*(post(g.webhook_url, update, SECRET) for g in (one, two, one, two)))
        assert statuses == [200, 200, 200, 200]
        await telegram.wait_for(lambda: bool(telegram.messages(user)), 30)
        await asyncio.sleep(1.5)  # time for a second answer, were there one
    assert len(telegram.messages(user)) == 1


async def test_polling_while_a_webhook_is_set_is_a_conflict_as_telegram_says(
    private_bus: Bus, telegram: TelegramDouble
) -> None:
    async with Gateway(private_bus, telegram, Limits(allowed=frozenset()), webhook_secret=SECRET) as gw:
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await gw.bot.get_updates(timeout=0)
