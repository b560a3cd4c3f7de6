"""Middlewares that hand handlers their context: `lang` (the bot's words) and `chat_settings` (the chat's choices).

Both run once per update, for messages, button presses and membership changes alike, before any filter, so a
handler (or a filter) declares what it needs as a typed argument and never looks it up itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Dispatcher
from aiogram.types import TelegramObject
from aiogram.utils.i18n import I18nMiddleware

from gateway.chats import ChatSettings, ChatSettingsStore
from infra.voice.texts import CATALOGS


class UserLanguage(I18nMiddleware):
    """The bot's own words follow the sender's Telegram language (English for one the bot has no catalog for):
    `lang` for every handler, and aiogram's i18n context set to it (so `gettext` without a locale speaks it too);
    a chat that chose a language gets that instead."""

    def __init__(self) -> None:
        super().__init__(CATALOGS)

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        user = data.get("event_from_user")
        settings: ChatSettings = data.get("chat_settings") or ChatSettings()
        return settings.words_language(user.language_code if user else None)

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        data["lang"] = await self.get_locale(event, data)
        return await super().__call__(handler, event, data)


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
    """Both middlewares on every message, button press and change of the bot's membership (a group greeted in
    its adder's language), as outer middlewares (so filters see their context too), settings first (the language
    reads them)."""
    for observer in (dispatcher.message, dispatcher.callback_query, dispatcher.my_chat_member):
        observer.outer_middleware(ChatContext())
        observer.outer_middleware(UserLanguage())
    return dispatcher
