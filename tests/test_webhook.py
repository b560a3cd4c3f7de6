"""Webhook mode (issue 12): Telegram posts updates, any number of gateways take them, each update is answered
once, and a post without Telegram's secret touches nothing."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiogram.exceptions import TelegramConflictError

from gateway.webhook import SECRET_HEADER
from infra.bus import Bus
from infra.bus.names import STREAM_UPDATES
from infra.runtime.settings import Limits
from tests.support import (
    Gateway,
    NatsServer,
    eventually,
    free_port,
    telegram_of_its_own,  # noqa: F401  (the `telegram` fixture here: a double of the test's own)
)
from voice_insight.doubles.telegram_api import TelegramDouble

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


@pytest.mark.slow  # a process of its own
async def test_the_gateway_process_in_webhook_mode_registers_answers_and_leaves_the_webhook_for_the_others(
    tmp_path: Path,
) -> None:
    telegram = TelegramDouble("556677889:FFHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw7")
    await telegram.start()
    nats_server = NatsServer(free_port(), tmp_path / "nats")
    nats_server.start()
    nats_server.provision()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NATS_", "TELEGRAM_", "OPENAI_"))}
    env.update(
        NATS_URL=nats_server.url,
        TELEGRAM_TOKEN=telegram.token,
        TELEGRAM_API_BASE=telegram.base_url,
        WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram/hook",
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_LISTEN=f"127.0.0.1:{port}",
        ALLOWED_USERS="open",
        METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "gateway.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voice_insight", "gateway"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        await eventually(lambda: telegram.webhook is not None or proc.poll() is not None, 60, 0.1)
        assert telegram.webhook == {"url": f"http://127.0.0.1:{port}/telegram/hook", "secret_token": SECRET}
        await telegram.send_text(5, "/help")
        await telegram.wait_for(lambda: bool(telegram.messages(5)), 30)
        assert telegram.messages(5)[0].text.startswith("How to use it")
        assert await post(f"http://127.0.0.1:{port}/telegram/hook", an_update(6, "/help"), None) == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        nats_server.stop()
        await telegram.stop()
    assert code == 0, log.read_text()[-3000:]
    assert telegram.webhook is not None, "another gateway may still be serving: the webhook stays"
    assert SECRET not in log.read_text(), "the secret is never logged"
