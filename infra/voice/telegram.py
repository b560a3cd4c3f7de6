"""The Bot API client, built one way for every service that talks to Telegram.

`TELEGRAM_API_BASE` points aiogram at the public Bot API, a self-hosted Bot API server, or the test double;
the rest of the code never knows which.

Every call that writes to a chat goes through `FloodControl`, a request middleware: Telegram allows about one
message a second in a chat (short bursts pass), twenty a minute in a group and about thirty a second for the
whole bot, and answers `429 retry_after` beyond that. We pace ourselves inside those limits, across every
process that writes for the bot (the gateway, each formatter: a shared `Pace`, `infra.bus.pace`), and when a 429
comes anyway we wait what Telegram asks and try again, so no status, answer or command reply is lost to flood
control.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import CallbackQuery
from aiolimiter import AsyncLimiter

from infra.runtime.metrics import OPTIONAL_WRITES_SKIPPED, SHARED_PACE_UNREACHABLE, TELEGRAM_FLOOD_WAITS
from infra.runtime.settings import Settings

log = logging.getLogger("voice_insight.telegram")

MESSAGE_LIMIT = 4096
"""Telegram's limit on one message's text, in UTF-16 code units after entity parsing."""
DOWNLOAD_LIMIT = 20 * 1024 * 1024
"""The public Bot API refuses `getFile` for anything bigger."""
LOCAL_DOWNLOAD_LIMIT = 2000 * 1024 * 1024
"""Telegram's own limit on a file (2 GB), which a local Bot API server (`--local`) hands a bot whole."""
REQUEST_TIMEOUT = 30.0
"""A Bot API call that has not answered in this long is treated as failed (and retried by its caller)."""


TELEGRAM_PERMANENT = (
    TelegramForbiddenError,
    TelegramBadRequest,
    TelegramNotFound,
    TelegramEntityTooLarge,
    TelegramMigrateToChat,
)
"""The Bot API's "never", for this chat or this request: blocked by the user, chat gone or moved, a request
Telegram refuses (a file too large among them). Retrying cannot help."""


def telegram_away(exc: BaseException) -> bool:
    """Telegram unreachable or failing for now (an outage, a restart, the network): worth trying again, however
    long it takes. A file too large is a network error to aiogram, but a refusal for good (`TELEGRAM_PERMANENT`)."""
    away = isinstance(exc, TimeoutError | TelegramNetworkError | TelegramServerError)
    return away and not isinstance(exc, TELEGRAM_PERMANENT)


class Pace(Protocol):
    """Slots of a rate shared with the deployment's other processes (`infra.bus.pace.SharedPace`)."""

    async def reserve(self, key: str, interval: float, burst: int = 1, at: float | None = None) -> float:
        """Seconds to wait for the next slot of `key`, taken no earlier than `at`; `ConnectionError` when the shared
        slots cannot be reached."""
        ...

    async def ahead(self, key: str, interval: float, burst: int = 1) -> float:
        """Seconds a call of `key` would wait now, taking no slot."""
        ...


class BotBusy(Exception):
    """An optional write not made: the bot's or the chat's messages are booked further ahead than it may wait."""


_optional: ContextVar[float | None] = ContextVar("optional_write", default=None)


@contextmanager
def optional_write(patience: float) -> Iterator[None]:
    """Writes inside are worth at most `patience` seconds of waiting for their slot (progress edits): when the
    bot is booked further ahead they raise `BotBusy` at once and take no slot, which answers need more."""
    token = _optional.set(patience)
    try:
        yield
    finally:
        _optional.reset(token)


SHARED_PACE_PAUSE = 30.0
"""After the shared slots could not be reached, how long this process paces alone before it tries them again."""


class FloodControl(BaseRequestMiddleware):
    """Paces chat-writing Bot API calls per chat and per bot, and waits out `429 retry_after`.

    Rates are leaky buckets (aiolimiter): a private chat takes a burst of `private_burst` messages, then one a
    second; a group one message every three seconds (twenty a minute); the bot as a whole `global_rate` a
    second. With a `shared` pace the same rates hold for every process of the deployment together: each call
    takes its chat's slot and the bot's there too, under a keyed hash of the chat (`secret`), never its id. If
    the shared slots cannot be reached, the process paces alone for a while, and says so.

    A 429 blocks its chat for `retry_after` seconds for every caller in this process. A caller waits at most
    `patience` seconds in all; past that the `TelegramRetryAfter` reaches it, so a durable retry (a delayed nak)
    takes over instead of a coroutine sleeping for minutes.
    """

    def __init__(
        self,
        *,
        private_burst: int = 3,
        group_interval: float = 3.0,
        global_rate: int = 25,
        patience: float = 60.0,
        max_chats: int = 10_000,
        shared: Pace | None = None,
        secret: bytes = b"",
    ) -> None:
        self.private_burst = private_burst
        self.group_interval = group_interval
        self.global_rate = global_rate
        self.patience = patience
        self.max_chats = max_chats
        if shared is not None and not secret:
            raise ValueError("a shared pace keys its chats by a keyed hash: give it a secret (the bot's token)")
        self.shared = shared
        self._chat_key = hashlib.sha256(b"voice-insight pace key:" + secret).digest()
        self._alone_until = 0.0
        self._global = AsyncLimiter(global_rate, 1.0)
        self._chats: OrderedDict[int | str, AsyncLimiter] = OrderedDict()
        self._blocked_until: dict[int | str, float] = {}

    def _limiter(self, chat: int | str) -> AsyncLimiter:
        limiter = self._chats.get(chat)
        if limiter is None:
            is_group = isinstance(chat, str) or chat < 0  # groups, supergroups and channels have negative ids
            limiter = (
                AsyncLimiter(1, self.group_interval)
                if is_group
                else AsyncLimiter(self.private_burst, self.private_burst)
            )
            self._chats[chat] = limiter
            while len(self._chats) > self.max_chats:  # forget the chats least recently written to
                old, _ = self._chats.popitem(last=False)
                self._blocked_until.pop(old, None)
        else:
            self._chats.move_to_end(chat)
        return limiter

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        chat = getattr(method, "chat_id", None)
        if chat is None or type(method).__name__.startswith("Get"):
            return await make_request(bot, method)  # reads are not flood-limited per chat
        if (patience := _optional.get()) is not None and await self._booked_ahead(chat) > patience:
            OPTIONAL_WRITES_SKIPPED.inc()
            raise BotBusy(f"{type(method).__name__} not worth the wait")
        give_up_at = time.monotonic() + self.patience
        while True:
            blocked = self._blocked_until.get(chat, 0.0) - time.monotonic()
            if blocked > 0:
                await asyncio.sleep(blocked)
            async with self._limiter(chat):
                async with self._global:
                    await self._shared_slot(chat)
                    try:
                        return await make_request(bot, method)
                    except TelegramRetryAfter as exc:
                        wait = float(exc.retry_after)
                        TELEGRAM_FLOOD_WAITS.labels(type(method).__name__).inc()
                        self._blocked_until[chat] = time.monotonic() + wait
                        if time.monotonic() + wait > give_up_at:
                            raise
                        log.warning("flood control on %s: waiting %.0fs as Telegram asks", type(method).__name__, wait)

    def _rates(self, chat: int | str) -> tuple[tuple[str, float, int], tuple[str, float, int]]:
        """The shared keys a write to `chat` takes a slot of, with their rates: its chat's, and the bot's."""
        is_group = isinstance(chat, str) or chat < 0
        key = hmac.new(self._chat_key, f"pace:{chat}".encode(), hashlib.sha256).hexdigest()[:24]
        per_chat = (f"chat.{key}", self.group_interval, 1) if is_group else (f"chat.{key}", 1.0, self.private_burst)
        return per_chat, ("bot", 1.0 / self.global_rate, max(1, self.global_rate // 5))

    async def _shared_slot(self, chat: int | str) -> None:
        """Wait for this call's slot among every process's calls: the chat's first, then the bot's at or after it,
        so a bot slot is not taken for a moment the chat's own limit keeps the call from."""
        if self.shared is None or time.monotonic() < self._alone_until:
            return
        per_chat, bot = self._rates(chat)
        try:
            wait = await self.shared.reserve(*per_chat)
            wait = await self.shared.reserve(*bot, at=time.time() + wait)
        except Exception as exc:  # NATS away (ConnectionError), or a fault: Telegram is still there
            self._pace_alone(exc)
            return
        if wait > 0:
            await asyncio.sleep(wait)

    async def _booked_ahead(self, chat: int | str) -> float:
        """How long a write to `chat` would wait for its shared slots now (0 when pacing alone)."""
        if self.shared is None or time.monotonic() < self._alone_until:
            return 0.0
        try:
            return max(await asyncio.gather(*(self.shared.ahead(*rate) for rate in self._rates(chat))))
        except Exception as exc:
            self._pace_alone(exc)
            return 0.0

    def _pace_alone(self, exc: Exception) -> None:
        """Pace this process alone for a while: said as a warning when NATS is away, as an error with its
        traceback when it is anything else (a fault of ours, not to be mistaken for an outage)."""
        self._alone_until = time.monotonic() + SHARED_PACE_PAUSE
        SHARED_PACE_UNREACHABLE.inc()
        if isinstance(exc, ConnectionError):
            log.warning("shared pacing unreachable (%s): pacing this process alone for %.0fs", exc, SHARED_PACE_PAUSE)
        else:
            log.error("shared pacing failed: pacing this process alone for %.0fs", SHARED_PACE_PAUSE, exc_info=exc)


async def answer_press(query: CallbackQuery, said: str | None = None, alert: bool = False) -> None:
    """Answer a button press: a toast (or an alert) that ends its spinner. Telegram takes the answer for about 15
    seconds only; a press handled later (a backlog, a restart) has done its work all the same, and its answer,
    a courtesy, is let go ("query is too old") rather than failing the press."""
    try:
        await query.answer(said, show_alert=alert)
    except TelegramBadRequest as exc:
        if "query is too old" not in exc.message and "query ID is invalid" not in exc.message:
            raise
        log.info("a button press was answered too late for Telegram to show it")


def make_bot(
    settings: Settings,
    flood_control: FloodControl | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    pace: Pace | None = None,
) -> Bot:
    """The bot; `pace`: the rates shared with the deployment's other processes that write for it."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_base), timeout=request_timeout)
    paced = FloodControl(global_rate=settings.telegram_rate, shared=pace, secret=settings.telegram_token.encode())
    session.middleware(flood_control or paced)
    return Bot(
        token=settings.telegram_token,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )
