"""The bot's router: small handlers, filters declaring what each one takes."""

from __future__ import annotations

import html

from aiogram import F, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import Message

from gateway.intake import Intake, media_of
from infra.bus import Bus
from infra.modes import live_modes
from infra.texts import duration_limit, text, ui_language

_MEDIA = F.voice | F.audio | F.video_note | F.video | F.document


def _lang(message: Message) -> str:
    return ui_language(message.from_user.language_code if message.from_user else None)


async def on_start(message: Message) -> None:
    await message.answer(text("start", _lang(message)))


async def on_help(message: Message, max_audio_seconds: float) -> None:
    await message.answer(text("help", lang := _lang(message), limit=duration_limit(max_audio_seconds, lang)))


async def on_list_modes(message: Message, bus: Bus) -> None:
    lang = _lang(message)
    modes = await live_modes(bus)
    if not modes:
        await message.answer(text("modes_none", lang))
        return
    lines = [text("modes_header", lang)]
    lines += [
        f"• <b>{html.escape(m.mode)}</b>: {html.escape(m.title)} · <code>{html.escape(m.model)}</code>" for m in modes
    ]
    await message.answer("\n".join(lines))


async def on_media(message: Message, intake: Intake) -> None:
    media = media_of(message)
    assert media is not None  # guaranteed by the filter
    await intake.accept(message, media)


async def on_anything_else(message: Message) -> None:
    await message.answer(text("unsupported", _lang(message)))


def build_router() -> Router:
    """The bot's router: each handler with the filter that says what it takes; the first match wins."""
    router = Router(name="voice-insight")
    router.message.register(on_start, CommandStart())
    router.message.register(on_help, Command("help"))
    router.message.register(on_list_modes, Command("list_modes"))
    router.message.register(on_media, _MEDIA)
    router.message.register(on_anything_else)
    return router
