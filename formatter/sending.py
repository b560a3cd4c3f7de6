"""The answer's way out through the Bot API, and how each failure of it is sorted.

The first message replaces the status message (with the buttons under it); files and further messages follow as
replies to the voice note, in its topic. Edits never notify, though: a note answered `NOTIFY_AFTER` or more after
it arrived (a long recording, a queue, an outage) gets its first message as a new reply instead, which does, and
its status is deleted (or, where Telegram will not delete it, says the answer is below). Which way the answer
began is kept in its claim (`Owned.pinged`), so a retry or a takeover goes on the same way and still removes
the status. Failures are sorted into "later" (Telegram away, flood control) and
"never" (blocked, chat gone, a request Telegram refuses: `infra.voice.telegram.TELEGRAM_PERMANENT`, named by
`permanent_reason`; "message is not modified" and "message to edit not found" are handled before).
"""

from __future__ import annotations

import logging
import time

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
from infra.voice.telegram import TELEGRAM_PERMANENT, telegram_away
from infra.voice.texts import text

log = logging.getLogger("voice_insight.formatter")

NOTIFY_AFTER = 20.0
"""Seconds a user may wait for an answer and still be watching the chat: one given later comes as a message of
its own, which notifies them, not as an edit of the status, which does not."""


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
    def __init__(self, bot: Bot, notify_after: float = NOTIFY_AFTER) -> None:
        self.bot = bot
        self.notify_after = notify_after

    def pings(self, claim: Owned, since: float | None) -> bool:
        """Whether the answer comes as a message of its own: as it began, once a part is out; otherwise whether
        the user has waited `notify_after` since `since` (the note received, or its button pressed)."""
        if claim.parts_sent:
            return claim.pinged
        return since is not None and time.time() - since >= self.notify_after

    async def deliver(
        self,
        claim: Owned,
        origin: Origin,
        parts: list[Part],
        keyboard: InlineKeyboardMarkup | None = None,
        shown: tuple[str, ...] | None = None,
        since: float | None = None,
    ) -> list[int]:
        """Every part not sent yet, each recorded in the claim before the next one goes, so a retry or a takeover
        resumes after the last part the user already has: exactly one copy of every part. `shown`: the modes the
        parts were rendered with, recorded with the first; `since`: when the user began to wait. Returns the
        messages that carry the parts sent here (a reply to any of them may ask about the note)."""
        ping = self.pings(claim, since)
        if ping and claim.parts_sent:
            await self.drop_status(origin)  # a retry or a takeover after the first part: the status may be up still
        carried: list[int] = []
        for index in range(claim.parts_sent, len(parts)):
            part = parts[index]
            if isinstance(part, Attachment):
                carried.append(await self.send_file(origin, part))
            elif index == 0 and ping:
                carried.append(await self.send(origin, part, keyboard))
            elif index == 0:
                carried.append(await self.edit_status(origin, part, keyboard))
            else:
                carried.append(await self.send(origin, part))
            await claim.advance(index + 1, shown, ping)
            if index == 0 and ping:
                await self.drop_status(origin)
        return carried

    async def edit_status(
        self, origin: Origin, message: str, keyboard: InlineKeyboardMarkup | None = None, quiet: bool = False
    ) -> int:
        """`quiet`: a status, not the answer: should the status be gone, what replaces it rings nobody's phone.
        Returns the message that says it: the status, or the one sent in its place."""
        try:
            await self.bot.edit_message_text(
                text=message, chat_id=origin.chat_id, message_id=origin.status_message_id, reply_markup=keyboard
            )
        except TelegramBadRequest as exc:
            if "message is not modified" in exc.message:
                return origin.status_message_id  # a retry after an edit that did land
            if "message to edit not found" in exc.message or "can't be edited" in exc.message:
                return await self.send(origin, message, keyboard, quiet)  # the user deleted the status message
            raise
        return origin.status_message_id

    async def show_progress(self, origin: Origin, message: str) -> None:
        """A status of the note's progress: silent in a group, as the status it replaces."""
        await self.edit_status(origin, message, quiet=origin.chat_id < 0)

    async def drop_status(self, origin: Origin) -> None:
        """The answer came as a message of its own: its status goes, so no "Listening…" stays beside it. Gone
        already (an earlier try, or the user) is as good; Telegram away raises (the answer is tried again, and
        sends nothing twice). Where Telegram will not delete it, the status says the answer is below instead: the
        answer is out either way, so nothing here may fail it."""
        try:
            await self.bot.delete_message(chat_id=origin.chat_id, message_id=origin.status_message_id)
        except TELEGRAM_PERMANENT as exc:
            if "message to delete not found" in getattr(exc, "message", ""):
                return
            log.info("the status message could not be deleted (%s); pointing to the answer", type(exc).__name__)
            try:
                below = text("answer_below", origin.ui_language)
                await self.bot.edit_message_text(
                    text=below, chat_id=origin.chat_id, message_id=origin.status_message_id
                )
            except TELEGRAM_PERMANENT as again:
                log.info("the status message could not be edited either (%s)", type(again).__name__)

    async def send(
        self, origin: Origin, message: str, keyboard: InlineKeyboardMarkup | None = None, quiet: bool = False
    ) -> int:
        sent = await self.bot.send_message(
            chat_id=origin.chat_id,
            text=message,
            message_thread_id=origin.thread_id,
            reply_parameters=ReplyParameters(message_id=origin.message_id, allow_sending_without_reply=True)
            if origin.message_id
            else None,  # a message of the bot's own (a daily digest), answering none
            reply_markup=keyboard,
            disable_notification=True if quiet else None,
        )
        return sent.message_id

    async def send_file(self, origin: Origin, file: Attachment) -> int:
        sent = await self.bot.send_document(
            chat_id=origin.chat_id,
            document=BufferedInputFile(file.content, filename=file.name),
            caption=file.caption or None,
            message_thread_id=origin.thread_id,
            reply_parameters=ReplyParameters(message_id=origin.message_id, allow_sending_without_reply=True),
        )
        return sent.message_id
