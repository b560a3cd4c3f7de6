"""Who may talk to the bot: an outer middleware in front of every handler.

A stranger gets one clear line with their own Telegram id (so the owner can add it to `ALLOWED_USERS`), and
nothing of theirs is downloaded, stored or sent to an LLM. A group is let in by its own id; in one that is not, the
people let in are answered and nobody else is, and nobody's id is posted where the whole group reads it: a voice
note of someone not let in is passed over in silence (they did not ask the bot, and the group was told whom it
answers when it was added: `gateway.membership`), and only someone who asks it (a command for it, a mention) gets
a short line, without an id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.enums import ChatType
from aiogram.types import CallbackQuery, Message, TelegramObject

from gateway.handlers import MentionsMe
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
        lang = ui_language(user.language_code if user else None)
        if event.chat.type == ChatType.PRIVATE:
            LIMITED.labels("private").inc()
            await event.answer(text("private", lang, id=user.id if user else event.chat.id))
        elif await _asks_me(event, data["bot"]):
            LIMITED.labels("private").inc()
            await event.reply(text("group_private", lang))
        elif (media := media_of(event)) is not None and media.sound:
            LIMITED.labels("private").inc()  # refused all the same, in silence
        return None


async def _asks_me(message: Message, bot: Bot) -> bool:
    """A command for this bot (`/transcribe`, `/help@its_name`; not one for another bot of the group), in a text or
    a file's caption, or a mention of it."""
    body = message.text or message.caption or ""
    if body.startswith("/"):
        addressee = body.split(maxsplit=1)[0].partition("@")[2]
        return not addressee or addressee.lower() == ((await bot.me()).username or "").lower()
    return await MentionsMe()(message, bot)
