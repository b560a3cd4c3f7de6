"""Questions about a recording: a text reply to the bot's answer (or to an answer to a question, a follow-up), or
in a private chat to the voice note itself, goes on the bus as a `QuestionAsked` (`ask.question`), which an
asker answers from the note's transcript and the formatter sends back as a reply to the question.

In a group, only a reply to one of the bot's own messages is a question (Telegram delivers those to a bot in
privacy mode too); a reply to somebody's voice note there is the group talking to its sender. A question counts
against its sender's notes per minute, like a note; without an LLM it is told at once that questions need one.
Its ID is a keyed hash of its chat and message, as a note's: a repeated update publishes it once (the stream's
duplicate window) and is answered once (its answered mark).
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot
from aiogram.enums import ChatType
from aiogram.filters import Filter
from aiogram.types import Message
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import Attributes

from gateway.chats import chat_key
from gateway.intake import correlation_id, media_of
from gateway.requests import over_the_limit, refuse, reply_to, request_id
from infra.bus import Bus
from infra.bus.names import BUCKET_ANSWERED, STREAM_ASK, SUBJECT_QUESTION
from infra.domain.answers import is_answered
from infra.domain.contracts import QuestionAsked
from infra.domain.threads import MAX_QUESTION_LENGTH
from infra.runtime.settings import Limits
from infra.runtime.telemetry import step
from infra.voice.texts import text

log = logging.getLogger("voice_insight.gateway")


class AsksAboutNote(Filter):
    """Text in reply to one of the bot's messages, or, in a private chat, to a voice note (or any sound the bot
    takes): passed on as `about`, the message replied to."""

    async def __call__(self, message: Message, bot: Bot) -> bool | dict[str, Any]:
        about = message.reply_to_message
        words = message.text or ""
        if about is None or not words.strip() or words.startswith("/"):
            return False
        if about.from_user is not None and about.from_user.id == (await bot.me()).id:
            return {"about": about}
        if message.chat.type == ChatType.PRIVATE and media_of(about) is not None:
            return {"about": about}
        return False


async def on_question(
    message: Message, about: Message, lang: str, bot: Bot, bus: Bus, key: bytes, limits: Limits, analyses_on: bool
) -> None:
    """The root span of the question's trace: what it replies to and how long it is, never its words."""
    cid = request_id(key, message)
    attributes: Attributes = {
        "voice_insight.correlation_id": cid,
        "voice_insight.question.length": len(message.text or ""),
    }
    with step("question receive", kind=SpanKind.SERVER, attributes=attributes):
        answered = await bus.kv(BUCKET_ANSWERED)
        if await is_answered(answered, cid):
            return  # a repeated update of a question answered already
        if not analyses_on:  # said where it was asked; a group's replies to the bot are its own business then
            said = text("ask_off", lang) if message.chat.type == ChatType.PRIVATE else None
            return await refuse(answered, cid, message, said)
        if await over_the_limit(bus, key, message, cid, limits):
            return await refuse(answered, cid, message, text("ask_slow_down", lang))
        own = about.from_user is not None and about.from_user.id == (await bot.me()).id
        question = QuestionAsked(
            correlation_id=cid,
            chat_key=chat_key(key, message.chat.id),
            reply=reply_to(message, lang),
            question=(message.text or "").strip()[:MAX_QUESTION_LENGTH],
            about_message_id=about.message_id,
            about_sent_at=about.date.timestamp(),
            note=None if own else correlation_id(key, message.chat.id, about.message_id),
        )
        await bus.publish(SUBJECT_QUESTION, question, msg_id=cid, stream=STREAM_ASK)
        log.info("%s: a question asked", cid)
