"""`voice-insight gateway`: wiring only."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import msgspec
from aiogram import Bot
from aiogram.types import BotCommand

from gateway.admin import AdminInbox, Admins
from gateway.dispatch import build_dispatcher, handler_context
from gateway.intake import Intake, correlation_key
from gateway.updates import ALLOWED_UPDATES, UpdateHandler, UpdatePoller
from gateway.webhook import WebhookReceiver
from infra.bus import BUCKET_USERS, Bus
from infra.health import port_for
from infra.lifespan import lifespan
from infra.metrics import ACTIVE_USERS
from infra.modes import export_liveness, live_modes
from infra.service import run_service
from infra.settings import Settings
from infra.telegram import make_bot

log = logging.getLogger("voice_insight.gateway")

COMMANDS = [
    BotCommand(command="help", description="How it works / Как пользоваться"),
    BotCommand(command="settings", description="Settings for this chat / Настройки чата"),
    BotCommand(command="transcribe", description="Reply to a voice note / Ответьте на голосовое"),
    BotCommand(command="vocabulary", description="Names and jargon / Имена и термины"),
    BotCommand(command="list_modes", description="Active analysis modes / Режимы анализа"),
    BotCommand(command="privacy", description="What is kept / Что хранится"),
    BotCommand(command="forget", description="Delete this chat's data / Удалить данные чата"),
]


async def count_active_users(bus: Bus, every: float = 15.0) -> None:
    while True:
        try:
            ACTIVE_USERS.set(await bus.kv_size(BUCKET_USERS))
        except Exception as exc:
            log.debug("active users not refreshed: %s", type(exc).__name__)
        await asyncio.sleep(every)


async def modes_document(bus: Bus) -> object:
    return [msgspec.to_builtins(mode) for mode in await live_modes(bus)]


async def poll(bot: Bot, bus: Bus, ready: Callable[[], None], stop: asyncio.Event) -> None:
    """Long polling: one gateway per bot (a second poller gets 409 Conflict from Telegram)."""
    await bot.delete_webhook(drop_pending_updates=False)  # long polling and a webhook exclude each other
    poller = UpdatePoller(bot, bus)
    polling = asyncio.create_task(poller.run())
    ready()
    await stop.wait()
    # Intake first: no new update is taken from Telegram; those in flight finish and are acked as the bus
    # drains on the way out; the rest wait in the stream for the next start.
    polling.cancel()
    await asyncio.gather(polling, return_exceptions=True)
    await poller.confirm()


async def receive_by_webhook(
    settings: Settings, bot: Bot, bus: Bus, ready: Callable[[], None], stop: asyncio.Event
) -> None:
    """Webhook mode: any number of gateways behind a load balancer; Telegram posts each update to one of them."""
    assert settings.webhook_url is not None
    receiver = WebhookReceiver(bus, bot.id, settings.webhook_secret, urlsplit(settings.webhook_url).path)
    host, _, port = settings.webhook_listen.rpartition(":")
    await receiver.start(host.strip("[]"), int(port))
    await bot.set_webhook(
        settings.webhook_url,
        secret_token=settings.webhook_secret,
        allowed_updates=ALLOWED_UPDATES,
        drop_pending_updates=False,
    )
    ready()
    await stop.wait()
    await receiver.stop()  # what Telegram could not post now, it posts again (to another gateway, or later)
    if settings.webhook_delete_on_stop:
        await bot.delete_webhook(drop_pending_updates=False)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async with lifespan("gateway", settings, port_for("gateway", settings), log) as life:
        bus = life.bus
        life.health.add_json_route("/modes", lambda: modes_document(bus))
        users = asyncio.create_task(count_active_users(bus))
        bot = make_bot(settings)
        life.closing(bot.session.close)
        key = correlation_key(settings.telegram_token)
        intake = Intake(
            bus, bot, key, settings.max_audio_seconds, settings.limits, local_files=settings.telegram_local_mode
        )
        admins = Admins(tuple(sorted(settings.admin_user_ids)), key)
        dispatcher = build_dispatcher(settings.limits, admins)
        await bot.set_my_commands(COMMANDS)
        context = handler_context(
            bus,
            intake,
            admins,
            key,
            settings.openai_base_url,
            settings.max_audio_seconds,
            analyses_on=settings.analyses_possible,
        )
        if not settings.analyses_possible:
            log.warning("analyses are off (no OPENAI_API_KEY): /help says how to turn them on")
        watchers = [users, *([asyncio.create_task(export_liveness(bus))] if settings.analyses_possible else [])]
        await bus.start(UpdateHandler(bot, dispatcher, context))
        await bus.start(AdminInbox(bot, admins))
        if settings.webhook_url:
            await receive_by_webhook(settings, bot, bus, life.ready, stop)
        else:
            await poll(bot, bus, life.ready, stop)
        for watcher in watchers:
            watcher.cancel()


def run(args: argparse.Namespace | None = None) -> None:
    run_service("gateway", ("TELEGRAM_TOKEN",), serve)


if __name__ == "__main__":
    run()
