"""`voice-insight asker`: wiring only. Questions about a recording, posed by the formatter with the note's
transcript, answered with the LLM (`analyzers.asking`), chats' digests (`analyzers.digesting`) and chats' own
modes (`analyzers.chat_analysis`, on the text subject like any mode's analyzer), as an account of its own that
reads no stored note: it takes only what is posed to it (`ASKER`) and the transcripts.

Any number of askers share the one durable; each question goes to one of them. A model the server does not have
(`ASK_MODEL`) is said at start, as a mode's is: every question would fail.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from analyzers.asking import AskerService
from analyzers.chat_analysis import ChatModeAnalyzer
from analyzers.digesting import DIGEST_CALL_SECONDS, DigestWriter
from analyzers.llm import ChatLLM, make_client, offered
from infra.bus.names import CHAT_MODES_ANNOUNCEMENT
from infra.domain.modes import announce_forever
from infra.domain.registry import ModeRegistry
from infra.runtime.health import port_for
from infra.runtime.settings import Settings
from infra.service.lifespan import lifespan
from infra.service.run import CONFIG_ERROR_EXIT, load_or_exit, run_service

log = logging.getLogger("voice_insight.asker")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async with lifespan("asker", settings, port_for("asker", settings), log, stop) as life:
        llm = ChatLLM(make_client(settings.llm_api_key, settings.openai_base_url), settings.llm_timeout)
        life.closing(llm.client.close)
        registry = await ModeRegistry.open(life.bus)
        service = AskerService(
            life.bus, llm, registry, model=settings.ask_model, daily_tokens=settings.daily_token_budget
        )
        await life.bus.start(service)
        # A digest's calls read and write much more than a question's: a client of their own with a longer budget.
        digests = ChatLLM(llm.client, max(settings.llm_timeout, DIGEST_CALL_SECONDS))
        await life.bus.start(DigestWriter(service, digests))
        chat_modes = ChatModeAnalyzer(
            life.bus, llm, join_timeout=settings.join_timeout, daily_tokens=settings.daily_token_budget
        )
        await life.bus.start(chat_modes)  # before announcing: a note that waits for a chat mode must reach it
        life.background(
            "chat modes heartbeat", lambda: announce_forever(life.bus, CHAT_MODES_ANNOUNCEMENT, chat_modes.info)
        )
        await say_if_missing(llm, settings.ask_model)
        life.ready("answering questions about recordings with %s", settings.ask_model or "the DEFAULT mode's model")
        await stop.wait()


async def say_if_missing(llm: ChatLLM, model: str) -> None:
    """`ASK_MODEL` names a model the LLM server does not list: the log says so, and which it has."""
    if not model:
        return
    try:
        listed = await llm.models()
    except Exception as exc:  # the server is away now: the questions will say so if it stays away
        log.warning("the LLM server's models could not be listed (%s)", type(exc).__name__)
        return
    if listed is not None and not offered(model, listed):
        log.error("ASK_MODEL=%s is not on the LLM server, which has: %s", model, ", ".join(sorted(listed)[:8]))


def run(args: argparse.Namespace | None = None) -> None:
    if not load_or_exit("asker", ()).analyses_possible:
        print(
            "voice-insight asker: OPENAI_API_KEY is not set (a server of your own, OPENAI_BASE_URL, may need none)",
            file=sys.stderr,
        )
        raise SystemExit(CONFIG_ERROR_EXIT)
    run_service("asker", (), serve)


if __name__ == "__main__":
    run()
