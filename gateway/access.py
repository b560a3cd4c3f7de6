"""Who may talk to the bot: an outer middleware in front of every handler.

A stranger gets one clear line with their own Telegram id (so the owner can add it to `ALLOWED_USERS`), and
nothing of theirs is downloaded, stored or sent to an LLM.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Message, TelegramObject

from infra.limits import Limits
from infra.metrics import LIMITED
from infra.texts import text, ui_language


class AccessGate(BaseMiddleware):
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        assert isinstance(event, Message)
        user = event.from_user
        if self.limits.admits(user.id if user else None, event.chat.id):
            return await handler(event, data)
        LIMITED.labels("private").inc()
        lang = ui_language(user.language_code if user else None)
        await event.answer(text("private", lang, id=user.id if user else event.chat.id))
        return None
