"""Who may talk to the bot: an outer middleware in front of every handler.

A stranger gets one clear line with their own Telegram id (so the owner can add it to `ALLOWED_USERS`), and
nothing of theirs is downloaded, stored or sent to an LLM. In a group that is not let in, only what is meant for
the bot (a voice note, a command) gets that line: the group's own conversation is none of its business.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.enums import ChatType
from aiogram.types import CallbackQuery, Message, TelegramObject

from gateway.intake import media_of
from infra.runtime.metrics import LIMITED
from infra.runtime.settings import Limits
from infra.voice.telegram import answer_press
from infra.voice.texts import text, ui_language


class AccessGate(BaseMiddleware):
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if isinstance(event, CallbackQuery):  # a button: only under the bot's own messages, in chats it serves
            chat = event.message.chat.id if event.message is not None else event.from_user.id
            if self.limits.admits(event.from_user.id, chat):
                return await handler(event, data)
            LIMITED.labels("private").inc()
            lang = ui_language(event.from_user.language_code)
            await answer_press(event, text("private", lang, id=event.from_user.id), alert=True)
            return None
        assert isinstance(event, Message)
        user = event.from_user
        if self.limits.admits(user.id if user else None, event.chat.id):
            return await handler(event, data)
        if event.chat.type != ChatType.PRIVATE and not _for_the_bot(event):
            return None
        LIMITED.labels("private").inc()
        lang = ui_language(user.language_code if user else None)
        await event.answer(text("private", lang, id=user.id if user else event.chat.id))
        return None


def _for_the_bot(message: Message) -> bool:
    """Sound by its type (a voice note, audio, a round video note, an audio file), or a command: a group's videos
    and other files are its own conversation, never answered unasked."""
    media = media_of(message)
    return (media is not None and media.sound) or (message.text or "").startswith("/")
