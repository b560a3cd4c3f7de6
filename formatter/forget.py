"""`/forget`, the formatter's part: it keeps the chat's notes, so it finds and erases them, asks the other keepers
to erase theirs, and tells the chat what was deleted.

The requests go out before anything is erased (the notes are what names the rest) and each has an ID of its
own, so a redelivered `/forget` asks nothing twice and loses nothing: a crash between the two is finished by the
redelivery. Each mode's analyzer is asked for its cached analyses on a subject of its own (`forget.analyses.<MODE>`),
every registered mode, so a mode that is off now still loses what it cached of the chat when it runs again.
"""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError

from infra.bus import Bus, Delivery, consumes
from infra.bus.names import (
    CONSUMER_FORMATTER_FORGET,
    STREAM_FORGET,
    SUBJECT_FORGET_CHAT,
    SUBJECT_FORGET_INTAKE,
    SUBJECT_FORGET_TRANSCRIPTS,
    forget_analyses_subject,
)
from infra.domain.contracts import ForgetAnalyses, ForgetChat, ForgetIntake, ForgetTranscripts
from infra.domain.notes import Forgotten, forget_notes
from infra.domain.registry import ModeRegistry
from infra.voice.texts import text

log = logging.getLogger("voice_insight.formatter")


class ChatForgetter:
    def __init__(self, bus: Bus, bot: Bot) -> None:
        self.bus = bus
        self.bot = bot

    @consumes(SUBJECT_FORGET_CHAT, CONSUMER_FORMATTER_FORGET, stage="forget", stream=STREAM_FORGET)
    async def on_forget(self, request: ForgetChat, delivery: Delivery) -> None:
        asked = f"forget.{delivery.seq}"

        async def ask_the_keepers(gone: Forgotten) -> None:
            await self._ask(
                SUBJECT_FORGET_TRANSCRIPTS,
                ForgetTranscripts(chat_key=request.chat_key, fingerprints=tuple(gone.fingerprints)),
                f"{asked}.transcripts",
            )
            if not gone.correlation_ids:
                return
            await self._ask(
                SUBJECT_FORGET_INTAKE, ForgetIntake(correlation_ids=tuple(gone.correlation_ids)), f"{asked}.intake"
            )
            for mode in await _modes(self.bus):
                subject = forget_analyses_subject(mode)
                await self._ask(subject, ForgetAnalyses(digests=tuple(gone.digests)), f"{asked}.analyses.{mode}")

        gone = await forget_notes(self.bus, request.chat_key, ask_the_keepers)
        said = text(
            "forgotten",
            request.ui_language,
            notes=gone.notes,
            messages=gone.messages,
            settings=text("yes" if request.settings else "no", request.ui_language),
        )
        try:
            await self.bot.send_message(request.chat_id, said, message_thread_id=request.thread_id)
        except (TelegramForbiddenError, TelegramBadRequest) as exc:  # the chat is gone, or the bot was removed
            log.warning("a forgotten chat could not be told (%s); its data is erased", type(exc).__name__)

    async def _ask(self, subject: str, request: ForgetTranscripts | ForgetIntake | ForgetAnalyses, msg_id: str) -> None:
        await self.bus.publish(subject, request, msg_id=msg_id, stream=STREAM_FORGET)


async def _modes(bus: Bus) -> list[str]:
    return [definition.name for definition in await (await ModeRegistry.open(bus)).all()]
