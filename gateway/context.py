"""Middlewares that hand handlers their context: `lang` (the bot's words) and `chat_settings` (the chat's choices).

Both run once per update, for messages and button presses alike, before any filter, so a handler (or a filter)
declares what it needs as a typed argument and never looks it up itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Dispatcher
from aiogram.types import TelegramObject

from gateway.chats import ChatSettings, ChatSettingsStore


class UserLanguage(BaseMiddleware):
    """The bot's own words follow the sender's Telegram language (Russian or English): `lang` for every handler;
    a chat set to answer in Russian or English gets that instead."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user = data.get("event_from_user")
        settings: ChatSettings = data.get("chat_settings") or ChatSettings()
        data["lang"] = settings.words_language(user.language_code if user else None)
        return await handler(event, data)


class ChatContext(BaseMiddleware):
    """The chat's settings as `chat_settings`, read once per update (defaults when there is no store)."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        chat = data.get("event_chat")
        store: ChatSettingsStore | None = data.get("chats")
        data["chat_settings"] = await store.get(chat.id) if chat is not None and store is not None else ChatSettings()
        return await handler(event, data)


def with_context(dispatcher: Dispatcher) -> Dispatcher:
    """Both middlewares on every message and button press, as outer middlewares (so filters see their context
    too), settings first (the language reads them)."""
    for observer in (dispatcher.message, dispatcher.callback_query):
        observer.outer_middleware(ChatContext())
        observer.outer_middleware(UserLanguage())
    return dispatcher
