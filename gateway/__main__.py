"""`voice-insight gateway`: wiring only."""

from __future__ import annotations

import argparse
import asyncio
import logging
from urllib.parse import urlsplit

import msgspec
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramUnauthorizedError

from gateway.admin import AdminInbox, Admins
from gateway.chat_modes import ChatModeReplies
from gateway.chats import ChatSettingsStore
from gateway.digests import DigestClock
from gateway.dispatch import build_dispatcher, handler_context
from gateway.forget import IntakeForgetter
from gateway.intake import Intake, correlation_key
from gateway.menus import set_menus
from gateway.storage import StoreRoom
from gateway.updates import ALLOWED_UPDATES, UpdateHandler, UpdatePoller
from gateway.webhook import WebhookReceiver
from infra.bus import Bus
from infra.bus.names import BUCKET_PACE, BUCKET_USERS
from infra.bus.pace import SharedPace
from infra.domain.modes import export_liveness, live_modes
from infra.runtime.health import port_for
from infra.runtime.metrics import ACTIVE_USERS
from infra.runtime.settings import Settings
from infra.service.lifespan import Life, lifespan
from infra.service.run import run_service
from infra.voice.telegram import make_bot

log = logging.getLogger("voice_insight.gateway")

REFUSED = (TelegramUnauthorizedError, TelegramBadRequest)
"""What Telegram answers that no waiting fixes: a token it does not know, a request it rejects (a webhook URL it
will not take)."""


async def count_active_users(bus: Bus, every: float = 15.0) -> None:
    while True:
        try:
            ACTIVE_USERS.set(await bus.kv_size(BUCKET_USERS))
        except Exception as exc:
            log.debug("active users not refreshed: %s", type(exc).__name__)
        await asyncio.sleep(every)


async def modes_document(bus: Bus) -> object:
    return [msgspec.to_builtins(mode) for mode in await live_modes(bus)]


async def poll(life: Life, bot: Bot, stop: asyncio.Event) -> None:
    """Long polling: one gateway per bot (a second poller gets 409 Conflict from Telegram)."""
    # Long polling and a webhook exclude each other.
    await life.until("Telegram", lambda: bot.delete_webhook(drop_pending_updates=False), fatal=REFUSED)
    poller = UpdatePoller(bot, life.bus)

    async def polling() -> None:
        try:
            await poller.run()
        finally:
            # Stopped first on the way out: no new update is taken from Telegram; those in flight finish and
            # are acked as the bus drains next; the rest wait in the stream for the next start.
            await poller.confirm()

    life.background("long polling", polling)
    life.ready()
    await stop.wait()


async def receive_by_webhook(settings: Settings, life: Life, bot: Bot, stop: asyncio.Event) -> None:
    """Webhook mode: any number of gateways behind a load balancer; Telegram posts each update to one of them."""
    assert settings.webhook_url is not None
    webhook_url = settings.webhook_url
    receiver = WebhookReceiver(life.bus, bot.id, settings.webhook_secret, urlsplit(webhook_url).path)
    host, _, port = settings.webhook_listen.rpartition(":")
    await receiver.start(host.strip("[]"), int(port))
    await life.until(
        "Telegram",
        lambda: bot.set_webhook(
            webhook_url,
            secret_token=settings.webhook_secret,
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,
        ),
        fatal=REFUSED,
    )
    life.ready()
    await stop.wait()
    await receiver.stop()  # what Telegram could not post now, it posts again (to another gateway, or later)
    if settings.webhook_delete_on_stop:
        await bot.delete_webhook(drop_pending_updates=False)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async with lifespan("gateway", settings, port_for("gateway", settings), log, stop) as life:
        bus = life.bus
        life.health.add_json_route("/modes", lambda: modes_document(bus))
        life.background("active users", lambda: count_active_users(bus))
        room = StoreRoom(bus, settings.jetstream_max_file_store, settings.jetstream_replicas)
        life.background("jetstream storage", room.export_forever)
        bot = make_bot(settings, pace=SharedPace(await life.bus.kv(BUCKET_PACE)))  # one pace with every writer
        life.closing(bot.session.close)
        key = correlation_key(settings.telegram_token)
        local = settings.telegram_local_mode
        intake = Intake(bus, bot, key, settings.max_audio_seconds, settings.limits, local_files=local, room=room)
        admins = Admins(tuple(sorted(settings.admin_user_ids)), key)
        dispatcher = build_dispatcher(settings.limits, admins)
        # Telegram unreachable at start (an outage, a local Bot API server still starting): wait, say so on
        # /health, carry on when it answers. A token Telegram refuses is a setting to fix: that ends the service.
        await life.until("Telegram", lambda: set_menus(bot), fatal=REFUSED)
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
        if settings.analyses_possible:
            life.background("mode liveness", lambda: export_liveness(bus))
            life.background("daily digests", DigestClock(bus, key).run)
        await bus.start(UpdateHandler(bot, dispatcher, context))
        await bus.start(AdminInbox(bot, admins))
        await bus.start(ChatModeReplies(bot, bus, ChatSettingsStore(bus, key)))
        await bus.start(IntakeForgetter(bus))
        if settings.webhook_url:
            await receive_by_webhook(settings, life, bot, stop)
        else:
            await poll(life, bot, stop)


def run(args: argparse.Namespace | None = None) -> None:
    run_service("gateway", ("TELEGRAM_TOKEN",), serve)


if __name__ == "__main__":
    run()
