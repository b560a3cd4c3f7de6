"""`voice-insight transcriber`: wiring only."""

from __future__ import annotations

import argparse
import asyncio
import logging

from infra.bus import Bus
from infra.health import HealthServer, port_for
from infra.service import run_service
from infra.settings import Settings
from transcriber.asr import SpeechRecognizer
from transcriber.service import TranscriberService

log = logging.getLogger("voice_insight.transcriber")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    bus = await Bus.connect(settings.nats_servers, name="transcriber", replicas=settings.jetstream_replicas)
    health = HealthServer(
        "transcriber", port_for("transcriber", settings), lambda: bus.connected, settings.metrics_host
    )
    await health.start()  # answers 503 "starting" while the model loads
    recognizer = await asyncio.to_thread(
        SpeechRecognizer,
        settings.whisper_model,
        settings.whisper_device,
        settings.whisper_compute_type,
        settings.max_audio_seconds,
    )
    log.info("model %s loaded", recognizer.model_name)
    await bus.ensure_topology()
    service = TranscriberService(bus, recognizer)
    await bus.start(service)
    health.ready = True
    log.info("ready")
    await stop.wait()
    await bus.close()
    await health.stop()


def run(args: argparse.Namespace | None = None) -> None:
    run_service("transcriber", (), serve)


if __name__ == "__main__":
    run()
