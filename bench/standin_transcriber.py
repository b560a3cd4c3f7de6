"""A bench's transcriber without Whisper: the real `TranscriberService` (download, decoding, caching, publishing,
acks) over a stand-in model that takes the time the real one would and uses none of the cores.

    .venv/bin/python bench/standin_transcriber.py --workers 48 --seconds-per-note 0.2 --real-time-factor 0.1

Each worker stands for one transcriber host: `--workers` of them take notes at once, each note sleeping
`seconds-per-note + real-time-factor × its duration` (the defaults are `base` on two cores, the transcriber path,
bench/results/asr.json). So a bench on one machine can push the rest of the stack past what its own cores could
transcribe, and see what gives first besides Whisper. For benches only (bench/capacity.py): never a deployment's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from infra.domain.contracts import Segment  # noqa: E402
from infra.runtime.health import port_for  # noqa: E402
from infra.runtime.settings import Settings  # noqa: E402
from infra.service.lifespan import lifespan  # noqa: E402
from infra.service.run import run_service  # noqa: E402
from transcriber.asr import SAMPLE_RATE, SpeechResult  # noqa: E402
from transcriber.service import TranscriberService  # noqa: E402

log = logging.getLogger("voice_insight.transcriber")


class StandInModel:
    """`SpeechRecognizer`'s interface, answering after the time Whisper would take; the words are made up."""

    model_name = "stand-in"

    def __init__(self, seconds_per_note: float, real_time_factor: float, max_seconds: float) -> None:
        self.seconds_per_note = seconds_per_note
        self.real_time_factor = real_time_factor
        self.max_seconds = max_seconds

    def language_of(self, audio: np.ndarray, hint: str | None = None) -> tuple[str, float]:
        return "en", 1.0

    def recognize(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        language_hint: str | None = None,
        vocabulary: str | None = None,
        progress: Callable[[float, float], None] | None = None,
        offset: float = 0.0,
        started: float | None = None,
    ) -> SpeechResult:
        duration = audio.size / SAMPLE_RATE
        took = self.seconds_per_note + self.real_time_factor * duration
        time.sleep(took)  # in the worker's thread, as Whisper's work is
        text = f"We agreed to ship the release on Monday; this note lasted {duration:.0f} seconds."
        return SpeechResult(text, language or "en", 1.0, duration, (Segment(offset, offset + duration, text),), took)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=48, help="transcriber hosts this process stands for")
    parser.add_argument("--seconds-per-note", type=float, default=0.2)
    parser.add_argument("--real-time-factor", type=float, default=0.1)
    args = parser.parse_args()

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        # Every worker sleeps in a thread of its own, as each would on a host of its own.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=args.workers + 4))
        async with lifespan("transcriber", settings, port_for("transcriber", settings), log, stop) as life:
            model = StandInModel(args.seconds_per_note, args.real_time_factor, settings.max_audio_seconds)
            for _ in range(args.workers):
                service = TranscriberService(
                    life.bus,
                    model,  # type: ignore[arg-type]
                    transcription_deadline=settings.transcription_deadline,
                )
                await life.bus.start(service)
            life.ready("ready: %d stand-in workers", args.workers)
            await stop.wait()

    sys.argv = sys.argv[:1]
    run_service("transcriber", (), serve)


if __name__ == "__main__":
    main()
