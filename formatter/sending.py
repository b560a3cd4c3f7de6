"""The answer's way out through the Bot API, and how each failure of it is sorted.

The first message replaces the status message (with the buttons under it); files and further messages follow as
replies to the voice note, in its topic. Failures are sorted into "later" (Telegram away, flood control) and
"never" (blocked, chat gone, a request Telegram refuses: `infra.voice.telegram.TELEGRAM_PERMANENT`, named by
`permanent_reason`; "message is not modified" and "message to edit not found" are handled before).
"""

from __future__ import annotations

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramUnauthorizedError,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup, ReplyParameters

from formatter.marks import Owned
from formatter.render import Attachment, Part
from infra.domain.contracts import Origin
from infra.voice.telegram import telegram_away


def away(exc: BaseException) -> bool:
    """Telegram away: the answer waits and is tried again. A 401 counts too (a token swapped mid-deploy)."""
    return telegram_away(exc) or isinstance(exc, TelegramUnauthorizedError)


def permanent_reason(exc: BaseException) -> str:
    """A bounded label for why an answer can never be delivered."""
    if isinstance(exc, TelegramForbiddenError):
        return "bot_blocked"
    if isinstance(exc, TelegramMigrateToChat):
        return "chat_migrated"
    message = getattr(exc, "message", "").lower()
    if "chat not found" in message:
        return "chat_not_found"
    if "parse entities" in message:
        return "bad_markup"
    return "bad_request"


class Sender:
    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def deliver(
        self,
        claim: Owned,
        origin: Origin,
        parts: list[Part],
        keyboard: InlineKeyboardMarkup | None = None,
        shown: tuple[str, ...] | None = None,
    ) -> None:
        """Every part not sent yet, each recorded in the claim before the next one goes, so a retry or a takeover
        resumes after the last part the user already has: exactly one copy of every part. `shown`: the modes the
        parts were rendered with, recorded with the first."""
        for index in range(claim.parts_sent, len(parts)):
            part = parts[index]
            if isinstance(part, Attachment):
                await self.send_file(origin, part)
            elif index == 0:
                await self.edit_status(origin, part, keyboard)
            else:
                await self.send(origin, part)
            await claim.advance(index + 1, shown)

    async def edit_status(self, origin: Origin, message: str, keyboard: InlineKeyboardMarkup | None = None) -> None:
        try:
            await self.bot.edit_message_text(
                text=message, chat_id=origin.chat_id, message_id=origin.status_message_id, reply_markup=keyboard
            )
        except TelegramBadRequest as exc:
            if "message is not modified" in exc.message:
                return  # a retry after an edit that did land
            if "message to edit not found" in exc.message or "can't be edited" in exc.message:
                await self.send(origin, message, keyboard)  # the user deleted the status message
                return
            raise

    async def send(self, origin: Origin, message: str, keyboard: InlineKeyboardMarkup | None = None) -> None:
        await self.bot.send_message(
            chat_id=origin.chat_id,
            text=message,
            message_thread_id=origin.thread_id,
            reply_parameters=ReplyParameters(message_id=origin.message_id, allow_sending_without_reply=True),
            reply_markup=keyboard,
        )

    async def send_file(self, origin: Origin, file: Attachment) -> None:
        await self.bot.send_document(
            chat_id=origin.chat_id,
            document=BufferedInputFile(file.content, filename=file.name),
            caption=file.caption or None,
            message_thread_id=origin.thread_id,
            reply_parameters=ReplyParameters(message_id=origin.message_id, allow_sending_without_reply=True),
        )
