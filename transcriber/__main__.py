"""`voice-insight transcriber`: wiring only."""

from __future__ import annotations

import argparse
import asyncio
import logging

from infra.runtime.health import port_for
from infra.runtime.settings import Settings
from infra.service.lifespan import lifespan
from infra.service.run import run_service
from transcriber.asr import SpeechRecognizer
from transcriber.forget import TranscriptForgetter
from transcriber.service import TranscriberService

log = logging.getLogger("voice_insight.transcriber")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async with lifespan("transcriber", settings, port_for("transcriber", settings), log, stop) as life:
        # /health answers 503 "starting" while the model loads and warms up.
        # A model that does not load (no model hub reachable, a full disk, a GPU not there yet) is tried again with
        # a growing pause, not exited on: a supervisor would restart the process in a tight loop.
        recognizer = await life.until(
            f"the Whisper model {settings.whisper_model}",
            lambda: asyncio.to_thread(
                SpeechRecognizer,
                settings.whisper_model,
                settings.whisper_device,
                settings.whisper_compute_type,
                settings.max_audio_seconds,
                settings.whisper_threads,
            ),
        )
        log.info("model %s loaded", recognizer.model_name)
        service = TranscriberService(life.bus, recognizer, transcription_deadline=settings.transcription_deadline)
        await life.bus.start(service)
        await life.bus.start(TranscriptForgetter(life.bus))
        life.ready()
        await stop.wait()


def run(args: argparse.Namespace | None = None) -> None:
    run_service("transcriber", (), serve)


if __name__ == "__main__":
    run()
