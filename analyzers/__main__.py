"""`voice-insight analyzer --mode NAME`: wiring only. The mode's definition comes from the registry."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import uuid
import zlib

import openai

from analyzers.desk import ModeDesk
from analyzers.forget import AnalysisForgetter
from analyzers.llm import ChatLLM, make_client
from analyzers.service import AnalyzerService
from infra.domain.contracts import ModeChange
from infra.domain.definitions import ModeDefinition, shipped
from infra.domain.modes import announce_forever
from infra.domain.registry import ModeRegistry, UnknownMode
from infra.runtime.health import DEFAULT_PORTS
from infra.runtime.settings import Settings
from infra.service.lifespan import lifespan
from infra.service.run import CONFIG_ERROR_EXIT, load_or_exit, run_service

log = logging.getLogger("voice_insight.analyzer")


def default_port(mode: str) -> int:
    """Standalone, each mode gets its own port, so several fit on one machine: the shipped ones in order, any
    other at a fixed place of its own (`METRICS_PORT` decides where it matters)."""
    names = [d.name for d in shipped()]
    offset = names.index(mode) if mode in names else 16 + zlib.crc32(mode.encode()) % 64
    return DEFAULT_PORTS["analyzer"] + offset


async def use_model(desk: ModeDesk, registry: ModeRegistry, mode: str, model: str) -> ModeDefinition | None:
    """`MODEL_<MODE>` asks for another model than the registry's: switched through the desk, validated like an
    admin's change (the model must exist and answer a canary); refused, the mode keeps its model and says why."""
    change = ModeChange(request_id=uuid.uuid4().hex, action="set_model", mode=mode, requested_by="env", model=model)
    result = await desk.apply(change)
    if not result.accepted:
        log.error("MODEL_%s=%s not applied: %s", mode, model, "; ".join(result.problems))
        return None
    log.info("mode %s: model %s from MODEL_%s (version %s)", mode, model, mode, result.version)
    return (await registry.get(mode)).definition


async def server_answers(llm: ChatLLM) -> None:
    """The LLM server is there: it answers its models endpoint, whatever it says (a refusal is validation's)."""
    try:
        await llm.models()
    except openai.APIStatusError:
        pass


def run(args: argparse.Namespace | None = None) -> None:
    mode = (getattr(args, "mode", None) or "").upper()

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        port = settings.metrics_port if settings.metrics_port is not None else default_port(mode)
        async with lifespan(f"analyzer-{mode}", settings, port, log, stop) as life:
            registry = await ModeRegistry.open(life.bus)
            try:
                definition = (await registry.get(mode)).definition
            except UnknownMode:
                known = ", ".join(d.name for d in await registry.all())
                log.error("unknown mode %r; known: %s", mode, known)
                raise SystemExit(CONFIG_ERROR_EXIT) from None
            llm = ChatLLM(make_client(settings.llm_api_key, settings.openai_base_url), settings.llm_timeout)
            life.closing(llm.client.close)
            desk = ModeDesk(registry, llm)
            if (wanted := settings.mode_models.get(mode)) and wanted != definition.model:
                # A server of one's own may start after the stack (Ollama on the host): validating the model
                # against a server that is not there yet would refuse it for the life of this process.
                await life.until("the LLM server", lambda: server_answers(llm))
                definition = await use_model(desk, registry, mode, wanted) or definition
            service = AnalyzerService(
                life.bus,
                llm,
                registry,
                definition,
                join_timeout=settings.join_timeout,
                daily_tokens=settings.daily_token_budget,
            )
            await life.bus.start(service)  # before announcing: a note that waits for us must reach us
            await life.bus.start(AnalysisForgetter(life.bus, mode))
            await service.model_problem(definition)  # a model the server lacks is said now, not per note
            life.background("heartbeat", lambda: announce_forever(life.bus, mode, service.info))
            life.ready("mode %s ready: version %d, model %s", mode, definition.version, definition.model)
            await stop.wait()

    settings_check = load_or_exit(f"analyzer-{mode}", ())
    if not settings_check.analyses_possible:
        print(
            f"voice-insight analyzer-{mode}: OPENAI_API_KEY is not set "
            "(a server of your own, OPENAI_BASE_URL, may need none)",
            file=sys.stderr,
        )
        raise SystemExit(CONFIG_ERROR_EXIT)
    run_service(f"analyzer-{mode}", (), serve)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True)
    run(parser.parse_args())
