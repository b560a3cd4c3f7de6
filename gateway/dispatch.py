"""The bot's dispatcher and what its handlers are given: built here once, for `__main__` and the tests alike."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiogram import Dispatcher

from gateway.access import AccessGate
from gateway.admin import Admins, build_admin_router
from gateway.buttons import build_buttons_router
from gateway.chat_modes import build_chat_modes_router
from gateway.chat_settings import build_settings_router
from gateway.chats import ChatSettingsStore
from gateway.context import with_context
from gateway.digests import DigestSchedules
from gateway.handlers import build_router
from gateway.intake import Intake
from gateway.membership import build_membership_router
from infra.bus import Bus
from infra.runtime.settings import Limits


def build_dispatcher(limits: Limits, admins: Admins) -> Dispatcher:
    """Access first (messages and button presses), then the routers: admin commands, settings, the buttons under
    answers, the bot's membership of groups, and the rest; the first handler whose filters match takes the update."""
    dispatcher = Dispatcher(limits=limits)  # `limits` for every handler too: a group is told whether it is let in
    gate = AccessGate(limits)
    dispatcher.message.outer_middleware(gate)
    dispatcher.callback_query.outer_middleware(gate)
    with_context(dispatcher)
    dispatcher.include_routers(
        build_admin_router(admins),
        build_settings_router(),
        build_chat_modes_router(),
        build_buttons_router(),
        build_membership_router(),
        build_router(),
    )
    return dispatcher


def handler_context(
    bus: Bus,
    intake: Intake,
    admins: Admins,
    key: bytes,
    openai_base_url: str | None,
    max_audio_seconds: float,
    analyses_on: bool = True,
) -> dict[str, Any]:
    """The keyword arguments every handler may declare (besides aiogram's own and the middlewares')."""
    return {
        "analyses_on": analyses_on,
        "bus": bus,
        "intake": intake,
        "admins": admins,
        "chats": ChatSettingsStore(bus, key),
        "schedules": DigestSchedules(bus, key),
        "key": key,
        "llm_provider": llm_provider(openai_base_url),
        "max_audio_seconds": max_audio_seconds,
    }


def llm_provider(base_url: str | None) -> str:
    """Who sees transcripts, for `/privacy`: OpenAI, or the host of the server the bot is pointed at."""
    if not base_url:
        return "OpenAI"
    host = urlsplit(base_url).hostname or base_url
    return "OpenAI" if host.endswith("openai.com") else host
