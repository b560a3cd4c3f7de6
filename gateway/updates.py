"""Telegram updates, taken in durably: nothing Telegram has forgotten is ever lost.

Telegram keeps an update until the bot confirms it (the next `getUpdates` carries a higher `offset`); after
that, only we have it. aiogram's own polling confirms an update as soon as it has *started* a handler, so a
stop or a crash in the seconds between "Listening…" and the hand-over to the transcriber loses the note for
good. Here the two halves are split:

* `UpdatePoller` long-polls Telegram and publishes each update, as received, to the `UPDATES` work-queue stream
  (`Nats-Msg-Id` = the update id, so a repeat is dropped); only after JetStream has acknowledged it does the
  offset move on. If NATS is away, the offset stays put and Telegram keeps the updates.
* `UpdateHandler` is an ordinary durable consumer of that stream that feeds each update to aiogram's
  dispatcher and acks it only when the handler has finished. A crash means redelivery; a graceful stop stops
  the poller first, then lets the handlers in flight finish. The intake itself is idempotent (see
  `gateway.intake`), so a redelivered update never makes a second note.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from aiogram import Bot, Dispatcher
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
)
from aiogram.methods import GetUpdates
from aiogram.types import Update

from infra.bus import Bus, Delivery, Fail, Reject, Retry, backoff, consumes
from infra.bus.names import CONSUMER_GATEWAY, STREAM_UPDATES, SUBJECT_UPDATES
from infra.domain.contracts import TelegramUpdate
from infra.voice.telegram import TELEGRAM_PERMANENT, telegram_away
from infra.voice.texts import text, ui_language

log = logging.getLogger("voice_insight.gateway")

POLL_TIMEOUT = 25
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]
"""What the bot asks Telegram for, polled or by webhook: messages, presses of its buttons, and changes of its own
membership in a chat (added to a group, made its admin), which `gateway.membership` tells the group about."""


async def take_in(bus: Bus, bot_id: int, update_id: int, payload: bytes) -> None:
    """One update into the `UPDATES` stream, as Telegram sent it. The message ID is the bot's and the update's:
    an update polled twice, or posted to a webhook twice (to two gateways, even), is kept once."""
    item = TelegramUpdate(update_id=update_id, payload=msgspec.Raw(payload))
    await bus.publish(
        SUBJECT_UPDATES,
        item,
        msg_id=f"update-{bot_id}-{update_id}",
        stream=STREAM_UPDATES,
        traced=False,  # a voice note's trace starts when it is taken in, not when it is queued
    )


class UpdatePoller:
    def __init__(self, bot: Bot, bus: Bus, poll_timeout: int = POLL_TIMEOUT) -> None:
        self.bot = bot
        self.bus = bus
        self.poll_timeout = poll_timeout
        self.offset: int | None = None

    async def run(self) -> None:
        """Poll until cancelled. Errors (Telegram or NATS away) back off and retry; nothing is skipped."""
        delay = 1.0
        while True:
            try:
                updates = await self.bot(
                    GetUpdates(offset=self.offset, timeout=self.poll_timeout, allowed_updates=ALLOWED_UPDATES),
                    request_timeout=self.poll_timeout + 10,
                )
                for update in updates:
                    await self._take_in(update)
                    self.offset = update.update_id + 1  # confirmed to Telegram by the next call
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The exception's text may quote a URL with the bot token: its type is all we log.
                log.warning("polling failed (%s); retrying in %.0fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _take_in(self, update: Update) -> None:
        payload = update.model_dump_json(by_alias=True, exclude_none=True).encode()
        await take_in(self.bus, self.bot.id, update.update_id, payload)

    async def confirm(self) -> None:
        """On a clean stop, tell Telegram what we have taken in, so a restart does not fetch it again."""
        if self.offset is None:
            return
        try:
            await self.bot(GetUpdates(offset=self.offset, timeout=0, limit=1), request_timeout=5)
        except Exception as exc:
            log.info("offset not confirmed on stop (%s); the stream's duplicate window covers it", type(exc).__name__)


GIVE_UP_AFTER = 8
"""Attempts at an update that fails for a reason of ours before the user is told and the update let go."""


class UpdateHandler:
    """Feeds updates from the stream to aiogram's dispatcher; the bus acks once the handler is done.

    Nothing is acked as handled unless it was: while Telegram is away the update waits in the stream and is tried
    again (`Retry`, backing off to a minute, however many attempts that takes); an update that fails for a reason
    of ours is given up after `give_up_after` attempts, and then only once the user has been told, or cannot be
    told for good (the bot blocked, the chat gone)."""

    def __init__(
        self, bot: Bot, dispatcher: Dispatcher, context: dict[str, Any], give_up_after: int = GIVE_UP_AFTER
    ) -> None:
        self.bot = bot
        self.dispatcher = dispatcher
        self.context = context
        self.give_up_after = give_up_after

    # Eight updates at once per gateway bounds its memory; the rest wait durably in the stream. Untraced: a
    # voice note's trace starts at "voice_note receive". Attempts are counted here, not by the bus: a Telegram
    # outage must not use them up.
    @consumes(
        SUBJECT_UPDATES,
        CONSUMER_GATEWAY,
        stage="receive",
        stream=STREAM_UPDATES,
        ack_wait=10.0,
        concurrency=8,
        traced=False,
        give_up="give_up",
    )
    async def handle(self, item: TelegramUpdate, delivery: Delivery) -> None:
        try:
            update = Update.model_validate_json(bytes(item.payload), context={"bot": self.bot})
        except ValueError:
            raise Reject("unreadable_update") from None
        try:
            await self.dispatcher.feed_update(self.bot, update, delivery=delivery, **self.context)
        except TelegramRetryAfter as exc:
            raise Retry(float(exc.retry_after), "Telegram flood control", error="flood_control") from None
        except TelegramForbiddenError:
            raise Reject("bot_blocked") from None
        except (TelegramBadRequest, TelegramNotFound):
            raise Reject("bad_request") from None
        except (Fail, Retry, Reject):
            raise
        except Exception as exc:
            if telegram_away(exc):  # kept and tried again, however long the outage lasts
                delay = backoff(delivery.attempt, cap=60.0)
                raise Retry(delay, "Telegram unavailable", error="telegram_unavailable") from None
            if delivery.attempt < self.give_up_after:
                raise
            log.error("update %d failed %d times (%s)", item.update_id, delivery.attempt, type(exc).__name__)
            raise Fail("internal", type(exc).__name__) from exc

    async def give_up(self, item: TelegramUpdate, exc: BaseException) -> None:
        """Eight attempts failed, or intake refused the note (`Fail`): say so in the chat if we can (in the
        note's status message when there is one, unless it already holds the refusal), so the user does not
        wait for nothing."""
        update = Update.model_validate_json(bytes(item.payload), context={"bot": self.bot})
        message = update.message
        if message is None:
            return
        lang = ui_language(message.from_user.language_code if message.from_user else None)
        try:
            intake = self.context.get("intake")
            if intake is None or not await intake.abandon(message):
                await message.reply(text("internal", lang))
        except TELEGRAM_PERMANENT as never:
            log.warning("update %d: the user cannot be told either (%s)", item.update_id, type(never).__name__)
        # Anything else (Telegram away) propagates: the bus keeps the update, and it is tried again.
