"""The bot's router: small handlers with typed arguments, filters and middlewares that hand them their context.

`HasMedia` passes the note's `media` to the handler that takes it; `UserLanguage` resolves the language the bot
answers in once per message, as `lang`.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandStart, Filter
from aiogram.types import Message, TelegramObject

from gateway.intake import Intake, Media, media_of
from infra.bus import Bus
from infra.modes import live_modes
from infra.texts import duration_limit, text, ui_language


class HasMedia(Filter):
    """Something we can transcribe: a voice note, audio, a video note, a video or a file; passed on as `media`."""

    async def __call__(self, message: Message) -> bool | dict[str, Any]:
        media = media_of(message)
        return {"media": media} if media is not None else False


class UserLanguage(BaseMiddleware):
    """The bot's own words follow the sender's Telegram language (Russian or English): `lang` for every handler."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user = data.get("event_from_user")
        data["lang"] = ui_language(user.language_code if user else None)
        return await handler(event, data)


async def on_start(message: Message, lang: str) -> None:
    await message.answer(text("start", lang))


async def on_help(message: Message, lang: str, max_audio_seconds: float) -> None:
    await message.answer(text("help", lang, limit=duration_limit(max_audio_seconds, lang)))


async def on_list_modes(message: Message, lang: str, bus: Bus) -> None:
    modes = await live_modes(bus)
    if not modes:
        await message.answer(text("modes_none", lang))
        return
    lines = [text("modes_header", lang)]
    lines += [
        f"• <b>{html.escape(m.mode)}</b>: {html.escape(m.titles.get(lang) or m.title)}"
        + (f" · <code>{html.escape(m.model)}</code>" if m.model else "")
        + (f" · v{m.version}" if m.version else "")
        for m in modes
    ]
    await message.answer("\n".join(lines))


async def on_media(message: Message, media: Media, intake: Intake) -> None:
    await intake.accept(message, media)


async def on_anything_else(message: Message, lang: str) -> None:
    await message.answer(text("unsupported", lang))


def build_router() -> Router:
    """The bot's router: each handler with the filter that says what it takes; the first match wins."""
    router = Router(name="voice-insight")
    router.message.middleware(UserLanguage())
    router.message.register(on_start, CommandStart())
    router.message.register(on_help, Command("help"))
    router.message.register(on_list_modes, Command("list_modes"))
    router.message.register(on_media, HasMedia())
    router.message.register(on_anything_else, F.chat.type == ChatType.PRIVATE)  # in a group, chatter is not ours
    return router
