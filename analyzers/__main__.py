"""`voice-insight analyzer --mode NAME [--model MODEL]`: wiring only."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from analyzers.llm import ChatLLM, make_client
from analyzers.modes import MODES
from analyzers.service import AnalyzerService
from infra.health import DEFAULT_PORTS
from infra.lifespan import lifespan
from infra.modes import announce_forever
from infra.service import CONFIG_ERROR_EXIT, run_service
from infra.settings import Settings

log = logging.getLogger("voice_insight.analyzer")


def known_modes() -> list[str]:
    """Every mode defined in `analyzers/modes.py`: what `voice-insight up` runs by default."""
    return list(MODES)


def run(args: argparse.Namespace | None = None) -> None:
    mode = (getattr(args, "mode", None) or "").upper()
    if mode not in MODES:
        print(f"voice-insight analyzer: unknown mode {mode!r}; known: {', '.join(MODES)}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT)
    spec = MODES[mode]
    model = getattr(args, "model", None) or spec.model

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        # Standalone, each built-in mode gets its own default port, so several fit on one machine.
        port = (
            settings.metrics_port
            if settings.metrics_port is not None
            else DEFAULT_PORTS["analyzer"] + list(MODES).index(mode)
        )
        async with lifespan(f"analyzer-{mode}", settings, port, log) as life:
            llm = ChatLLM(make_client(settings.openai_api_key, settings.openai_base_url))
            life.closing(llm.client.close)
            service = AnalyzerService(
                life.bus, llm, spec, model, join_timeout=settings.join_timeout, daily_tokens=settings.daily_token_budget
            )
            await life.bus.start(service)  # before announcing: a note that waits for us must reach us
            heartbeat = asyncio.create_task(announce_forever(life.bus, service.info))
            life.ready("mode %s ready with model %s", mode, model)
            await stop.wait()
            heartbeat.cancel()

    run_service(f"analyzer-{mode}", ("OPENAI_API_KEY",), serve)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True)
    parser.add_argument("--model")
    run(parser.parse_args())
