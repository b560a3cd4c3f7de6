"""`/forget`, the formatter's part: it keeps the chat's notes, so it finds them, asks the other keepers to erase
their parts, tells the chat what it deletes, and erases the notes.

In that order, so a redelivered `/forget` (a crash, Telegram away a moment) finds the same notes and says the same:
the requests to the keepers carry IDs of their own (a repeat asks nothing twice), the chat is told once (a mark
in the answered marks), and the notes, which name everything else, go last: the chat is never told "0 notes" for
notes that were deleted, nor told again while erasing is retried.

Each mode's analyzer is asked on a subject of its own (`forget.analyses.<MODE>`), every live mode's. A request no
analyzer takes expires with the analysis cache (an hour): by then the entries it names are gone anyway.
"""

from __future__ import annotations

import logging

import nats.js.errors
from aiogram import Bot
from nats.js.kv import KeyValue

from infra.bus import Bus, Delivery, consumes
from infra.bus.names import (
    ANALYSIS_CACHE_TTL,
    BUCKET_ANSWERED,
    CONSUMER_FORMATTER_FORGET,
    STREAM_FORGET,
    SUBJECT_FORGET_CHAT,
    SUBJECT_FORGET_INTAKE,
    SUBJECT_FORGET_TRANSCRIPTS,
    forget_analyses_subject,
)
from infra.domain.contracts import ForgetAnalyses, ForgetChat, ForgetIntake, ForgetTranscripts
from infra.domain.modes import live_modes
from infra.domain.notes import Forgotten, erase_notes, find_forgotten
from infra.voice.telegram import TELEGRAM_PERMANENT
from infra.voice.texts import text

log = logging.getLogger("voice_insight.formatter")


class ChatForgetter:
    def __init__(self, bus: Bus, bot: Bot) -> None:
        self.bus = bus
        self.bot = bot

    @consumes(SUBJECT_FORGET_CHAT, CONSUMER_FORMATTER_FORGET, stage="forget", stream=STREAM_FORGET)
    async def on_forget(self, request: ForgetChat, delivery: Delivery) -> None:
        gone = await find_forgotten(self.bus, request.chat_key)
        await self._ask_the_keepers(request, gone, f"forget.{delivery.seq}")
        told = f"forget-told.{delivery.seq}"  # in the answered marks: told once, however often erasing fails
        marks = await self.bus.kv(BUCKET_ANSWERED)
        if not await _kept(marks, told):
            await self._tell(request, gone)
            await marks.put(told, b"told")
        await erase_notes(self.bus, request.chat_key, gone)

    async def _ask_the_keepers(self, request: ForgetChat, gone: Forgotten, asked: str) -> None:
        transcripts = ForgetTranscripts(chat_key=request.chat_key, fingerprints=gone.fingerprints)
        await self.bus.publish(SUBJECT_FORGET_TRANSCRIPTS, transcripts, f"{asked}.transcripts", stream=STREAM_FORGET)
        if not gone.notes:
            return
        intake = ForgetIntake(correlation_ids=gone.correlation_ids)
        await self.bus.publish(SUBJECT_FORGET_INTAKE, intake, f"{asked}.intake", stream=STREAM_FORGET)
        for mode in await live_modes(self.bus):
            await self.bus.publish(
                forget_analyses_subject(mode.mode),
                ForgetAnalyses(digests=gone.digests),
                f"{asked}.analyses.{mode.mode}",
                stream=STREAM_FORGET,
                ttl=ANALYSIS_CACHE_TTL,
            )

    async def _tell(self, request: ForgetChat, gone: Forgotten) -> None:
        lang = request.ui_language
        settings = text("yes" if request.settings else "no", lang)
        said = text("forgotten", lang, notes=len(gone.notes), messages=gone.messages, settings=settings)
        try:
            await self.bot.send_message(request.chat_id, said, message_thread_id=request.thread_id)
        except TELEGRAM_PERMANENT as exc:  # the chat is gone, or the bot was blocked or removed: erase all the same
            log.warning("a forgotten chat could not be told (%s); its data is erased", type(exc).__name__)


async def _kept(kv: KeyValue, key: str) -> bool:
    try:
        await kv.get(key)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return False
    return True
