"""`voice-insight gateway`: wiring only."""

from __future__ import annotations

import argparse
import asyncio
import logging

from aiogram import Dispatcher
from aiogram.types import BotCommand

from gateway.handlers import router
from gateway.intake import Intake, correlation_key
from infra.bus import Bus
from infra.service import run_service
from infra.settings import Settings
from infra.telegram import make_bot

log = logging.getLogger("voice_insight.gateway")

COMMANDS = [
    BotCommand(command="help", description="How it works / Как пользоваться"),
    BotCommand(command="list_modes", description="Active analysis modes / Режимы анализа"),
]


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    bus = await Bus.connect(settings.nats_servers, name="gateway")
    await bus.ensure_topology()
    bot = make_bot(settings)
    intake = Intake(bus, bot, correlation_key(settings.telegram_token), settings.max_audio_seconds)
    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    await bot.delete_webhook(drop_pending_updates=False)  # long polling and a webhook exclude each other
    await bot.set_my_commands(COMMANDS)
    polling = asyncio.create_task(
        dispatcher.start_polling(
            bot,
            handle_signals=False,
            close_bot_session=False,
            bus=bus,
            intake=intake,
            max_audio_seconds=settings.max_audio_seconds,
        )
    )
    log.info("ready")
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({polling, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not polling.done():
        await dispatcher.stop_polling()
    await polling
    await bus.close()
    await bot.session.close()


def run(args: argparse.Namespace | None = None) -> None:
    run_service("gateway", ("TELEGRAM_TOKEN",), serve)


if __name__ == "__main__":
    run()
