"""`voice-insight analyzer --mode NAME`: wiring only. The mode's definition comes from the registry."""

from __future__ import annotations

import argparse
import asyncio
import logging
import zlib

from analyzers.desk import ModeDesk, Registrar
from analyzers.llm import ChatLLM, make_client
from analyzers.service import AnalyzerService
from infra.definitions import shipped
from infra.health import DEFAULT_PORTS
from infra.lifespan import lifespan
from infra.modes import announce_forever
from infra.registry import ModeRegistry, UnknownMode
from infra.service import CONFIG_ERROR_EXIT, run_service
from infra.settings import Settings

log = logging.getLogger("voice_insight.analyzer")


def default_port(mode: str) -> int:
    """Standalone, each mode gets its own port, so several fit on one machine: the shipped ones in order, any
    other at a fixed place of its own (`METRICS_PORT` decides where it matters)."""
    names = [d.name for d in shipped()]
    offset = names.index(mode) if mode in names else 16 + zlib.crc32(mode.encode()) % 64
    return DEFAULT_PORTS["analyzer"] + offset


def run(args: argparse.Namespace | None = None) -> None:
    mode = (getattr(args, "mode", None) or "").upper()

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        port = settings.metrics_port if settings.metrics_port is not None else default_port(mode)
        async with lifespan(f"analyzer-{mode}", settings, port, log) as life:
            registry = await ModeRegistry.open(life.bus)
            try:
                definition = (await registry.get(mode)).definition
            except UnknownMode:
                known = ", ".join(d.name for d in await registry.all())
                log.error("unknown mode %r; known: %s", mode, known)
                raise SystemExit(CONFIG_ERROR_EXIT) from None
            llm = ChatLLM(make_client(settings.openai_api_key, settings.openai_base_url))
            life.closing(llm.client.close)
            service = AnalyzerService(
                life.bus,
                llm,
                registry,
                definition,
                join_timeout=settings.join_timeout,
                daily_tokens=settings.daily_token_budget,
            )
            await life.bus.start(service)  # before announcing: a note that waits for us must reach us
            await life.bus.start(Registrar(life.bus, ModeDesk(registry, llm)))  # admins' changes, validated here
            heartbeat = asyncio.create_task(announce_forever(life.bus, mode, service.info))
            life.ready("mode %s ready: version %d, model %s", mode, definition.version, definition.model)
            await stop.wait()
            heartbeat.cancel()

    run_service(f"analyzer-{mode}", ("OPENAI_API_KEY",), serve)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True)
    run(parser.parse_args())
