"""The chat's digest, the gateway's part: `/digest` (`/digest 6h` for less than a day), and the daily digest a
chat chose in `/settings`, each published as a `DigestAsked` (`ask.digest`) for the formatter, which keeps the
notes, to gather them.

A daily digest is kept in `voice-digests` under the chat's key: the chat to send to and the hour (UTC). It is
configuration, like the chat's settings, kept until switched off or `/forget`. `DigestClock` looks every
`DIGEST_CHECK_EVERY` seconds for chats whose hour has come today and whose digest has not gone out (a gateway
down through the hour asks as soon as one is back; a schedule chosen after its hour begins tomorrow), asks (under an ID
of the chat and the day, so a digest asked twice by two gateways or across a restart is one message, answered
once), and marks the day with compare-and-set.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import logging
import re

import msgspec
import nats.js.errors
from aiogram.enums import ChatType
from aiogram.filters import CommandObject
from aiogram.types import Message
from nats.js.kv import KeyValue

from gateway.chats import chat_key
from gateway.requests import over_the_limit, refuse, reply_to, request_id
from infra.bus import Bus
from infra.bus.names import BUCKET_ANSWERED, BUCKET_DIGESTS, STREAM_ASK, SUBJECT_DIGEST
from infra.domain.answers import is_answered
from infra.domain.contracts import DigestAsked, ReplyTo
from infra.runtime.settings import Limits
from infra.voice.texts import text

log = logging.getLogger("voice_insight.gateway")

DIGEST_CHECK_EVERY = 30.0
"""Seconds between two looks for daily digests due: one goes out within this of its hour."""
MAX_HOURS = 24
_HOURS = re.compile(r"^\s*(\d{1,2})\s*h?\s*$", re.IGNORECASE)


class DigestSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """A chat's daily digest: where it goes, at which hour (UTC), and the last day it went out."""

    chat_id: int
    hour: int
    ui_language: str
    thread_id: int | None = None
    links: bool = False
    last_day: str = ""


_decode = msgspec.json.Decoder(DigestSchedule).decode


def hours_asked(args: str | None) -> int | None:
    """`/digest` → 24; `/digest 6h` (or `6`) → 6; anything else → None (the usage is said)."""
    if not args or not args.strip():
        return MAX_HOURS
    found = _HOURS.match(args)
    if found is None or not 1 <= int(found.group(1)) <= MAX_HOURS:
        return None
    return int(found.group(1))


def links_work(message: Message) -> bool:
    """A supergroup's messages have links (`https://t.me/c/...`); a private chat's and a basic group's do not."""
    return message.chat.type == ChatType.SUPERGROUP


async def on_digest(
    message: Message, command: CommandObject, lang: str, bus: Bus, key: bytes, limits: Limits, analyses_on: bool
) -> None:
    """`/digest [N h]`: the chat's voice notes of the last day (or N hours), in one message."""
    cid = request_id(key, message)
    answered = await bus.kv(BUCKET_ANSWERED)
    if await is_answered(answered, cid):
        return  # a repeated update
    hours = hours_asked(command.args)
    if hours is None:
        return await refuse(answered, cid, message, text("digest_usage", lang))
    if not analyses_on:
        return await refuse(answered, cid, message, text("analyses_off", lang))
    if await over_the_limit(bus, key, message, cid, limits):
        return await refuse(answered, cid, message, text("ask_slow_down", lang))
    asked = DigestAsked(
        correlation_id=cid,
        chat_key=chat_key(key, message.chat.id),
        reply=reply_to(message, lang),
        hours=float(hours),
        links=links_work(message),
    )
    await bus.publish(SUBJECT_DIGEST, asked, msg_id=cid, stream=STREAM_ASK)
    log.info("%s: a digest asked", cid)


class DigestSchedules:
    """The daily digests chats chose, under their keys in `voice-digests`."""

    def __init__(self, bus: Bus, key: bytes) -> None:
        self.bus = bus
        self.key = key

    async def set(self, message: Message, hour: int | None, lang: str) -> None:
        """The chat's daily digest at `hour` (UTC), or none."""
        name = chat_key(self.key, message.chat.id)
        if hour is None:
            await self.bus.erase(BUCKET_DIGESTS, name)
            return
        schedule = DigestSchedule(
            chat_id=message.chat.id,
            hour=hour,
            ui_language=lang,
            thread_id=message.message_thread_id if message.is_topic_message else None,
            links=links_work(message),
        )
        kv = await self.bus.kv(BUCKET_DIGESTS)
        now = datetime.datetime.now(datetime.UTC)
        if hour < now.hour:  # chosen after its hour today: the first comes tomorrow
            schedule = msgspec.structs.replace(schedule, last_day=now.strftime("%Y%m%d"))
        try:  # switched on again today: it does not go out twice today
            before = _decode((await kv.get(name)).value or b"").last_day
            schedule = msgspec.structs.replace(schedule, last_day=max(before, schedule.last_day))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError, msgspec.DecodeError):
            pass
        await kv.put(name, msgspec.json.encode(schedule))

    async def forget(self, chat_id: int) -> None:
        await self.bus.erase(BUCKET_DIGESTS, chat_key(self.key, chat_id))


def daily_id(key: bytes, chat_id: int, day: str) -> str:
    return hmac.new(key, f"digest:{chat_id}:{day}".encode(), hashlib.sha256).hexdigest()[:32]


class DigestClock:
    """Asks for each daily digest at its hour, once a day, whichever gateway looks first."""

    def __init__(self, bus: Bus, key: bytes, every: float = DIGEST_CHECK_EVERY) -> None:
        self.bus = bus
        self.key = key
        self.every = every

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # NATS away a moment: the next look catches up within the hour
                log.warning("daily digests not looked at (%s)", type(exc).__name__)
            await asyncio.sleep(self.every)

    async def ask_if_due(self, kv: KeyValue, name: str, now: datetime.datetime, day: str) -> int:
        """The chat's digest asked for if its hour has come today and it has not gone out (a gateway down through
        the hour asks as soon as it is back); 1 if it was."""
        try:
            entry = await kv.get(name)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return 0
        if not entry.value:
            return 0
        schedule = _decode(entry.value)
        if now.hour < schedule.hour or schedule.last_day == day:
            return 0
        cid = daily_id(self.key, schedule.chat_id, day)
        reply = ReplyTo(
            chat_id=schedule.chat_id, message_id=0, ui_language=schedule.ui_language, thread_id=schedule.thread_id
        )
        digest = DigestAsked(correlation_id=cid, chat_key=name, reply=reply, links=schedule.links, daily=True)
        # Asked first, then marked: one asked twice (two gateways, a crash in between) is the same message, which
        # the stream takes once and the formatter answers once.
        await self.bus.publish(SUBJECT_DIGEST, digest, msg_id=cid, stream=STREAM_ASK)
        try:
            done = msgspec.structs.replace(schedule, last_day=day)
            await kv.update(name, msgspec.json.encode(done), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            pass  # another gateway marked it (or the chat changed its hour meanwhile)
        return 1

    async def tick(self, now: datetime.datetime | None = None) -> int:
        """Ask for every digest due now; how many were asked for."""
        now = now or datetime.datetime.now(datetime.UTC)
        day = now.strftime("%Y%m%d")
        kv = await self.bus.kv(BUCKET_DIGESTS)
        asked = 0
        for name in await self.bus.kv_keys(BUCKET_DIGESTS):
            try:
                asked += await self.ask_if_due(kv, name, now, day)
            except Exception as exc:  # one chat's entry must not hold up the others'
                log.warning("a daily digest not looked at (%s)", type(exc).__name__)
        if asked:
            log.info("%d daily digests asked for", asked)
        return asked
