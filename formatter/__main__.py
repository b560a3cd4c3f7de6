"""`voice-insight formatter`: wiring only."""

from __future__ import annotations

import argparse
import asyncio
import logging

from formatter.join import AnswerMarks, JoinStore
from formatter.service import FormatterService
from infra.bus import BUCKET_ANSWERED, BUCKET_JOINS, Bus
from infra.health import HealthServer, port_for
from infra.service import run_service
from infra.settings import Settings
from infra.telegram import make_bot

log = logging.getLogger("voice_insight.formatter")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    bus = await Bus.connect(settings.nats_servers, name="formatter", replicas=settings.jetstream_replicas)
    health = HealthServer("formatter", port_for("formatter", settings), lambda: bus.connected, settings.metrics_host)
    await health.start()
    await bus.ensure_topology()
    bot = make_bot(settings)
    service = FormatterService(
        bus,
        bot,
        JoinStore(await bus.kv(BUCKET_JOINS)),
        AnswerMarks(await bus.kv(BUCKET_ANSWERED)),
        join_timeout=settings.join_timeout,
        max_audio_seconds=settings.max_audio_seconds,
    )
    await bus.start(service)
    health.ready = True
    log.info("ready")
    await stop.wait()
    await bus.close()
    await bot.session.close()
    await health.stop()


def run(args: argparse.Namespace | None = None) -> None:
    run_service("formatter", ("TELEGRAM_TOKEN",), serve)


if __name__ == "__main__":
    run()
