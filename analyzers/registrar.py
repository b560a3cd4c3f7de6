"""`voice-insight registrar`: wiring only. The mode desk on the bus, as an account of its own.

Admins' mode changes (any mode), and chats' own modes (`analyzers.chat_desk`), are validated and applied here,
so no analyzer needs to write another mode's definition: an analyzer writes only its own mode's key
(`infra/ops/access.py`). It owns an LLM client for the canary calls that validate a change; one is enough (the
durables are shared), more only take turns.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from analyzers.chat_desk import ChatModeDesk, ChatModeRegistrar
from analyzers.desk import ModeDesk, Registrar
from analyzers.llm import ChatLLM, make_client
from infra.domain.registry import ModeRegistry
from infra.runtime.health import port_for
from infra.runtime.settings import Settings
from infra.service.lifespan import lifespan
from infra.service.run import CONFIG_ERROR_EXIT, load_or_exit, run_service

log = logging.getLogger("voice_insight.registrar")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async with lifespan("registrar", settings, port_for("registrar", settings), log, stop) as life:
        llm = ChatLLM(make_client(settings.llm_api_key, settings.openai_base_url), settings.llm_timeout)
        life.closing(llm.client.close)
        await life.bus.start(Registrar(life.bus, ModeDesk(await ModeRegistry.open(life.bus), llm)))
        await life.bus.start(ChatModeRegistrar(life.bus, ChatModeDesk(life.bus, llm, settings.daily_token_budget)))
        life.ready("taking mode changes")
        await stop.wait()


def run(args: argparse.Namespace | None = None) -> None:
    if not load_or_exit("registrar", ()).analyses_possible:
        print(
            "voice-insight registrar: OPENAI_API_KEY is not set (a server of your own, OPENAI_BASE_URL, may need none)",
            file=sys.stderr,
        )
        raise SystemExit(CONFIG_ERROR_EXIT)
    run_service("registrar", (), serve)


if __name__ == "__main__":
    run()
