"""What a question and `/digest` have in common at the gateway: each is a request of one message, answered once
(its answered mark, under its ID), counted against its sender's notes per minute, and answered where it was asked.
"""

from __future__ import annotations

from aiogram.types import Message
from nats.js.kv import KeyValue

from gateway.intake import correlation_id
from infra.bus import Bus
from infra.domain.answers import Sent, encode_mark
from infra.domain.contracts import ReplyTo
from infra.domain.limits import UserLedger, user_key
from infra.runtime.metrics import LIMITED
from infra.runtime.settings import Limits


def request_id(key: bytes, message: Message) -> str:
    """A request's ID, as a note's: a keyed hash of its chat and message, so Telegram repeating it changes nothing."""
    return correlation_id(key, message.chat.id, message.message_id)


def reply_to(message: Message, lang: str) -> ReplyTo:
    """Where the request's answer goes: a reply to it, in its topic, in the words of `lang`."""
    return ReplyTo(
        chat_id=message.chat.id,
        message_id=message.message_id,
        ui_language=lang,
        thread_id=message.message_thread_id if message.is_topic_message else None,
    )


async def over_the_limit(bus: Bus, key: bytes, message: Message, cid: str, limits: Limits) -> bool:
    """Counted as one of its sender's requests this minute (with their notes); whether that is one too many."""
    if not message.from_user or not limits.per_minute:
        return False
    user = user_key(key, message.from_user.id)
    ledger = UserLedger(bus)
    await ledger.taken_in(user, cid)
    if await ledger.recent(user) > limits.per_minute:
        LIMITED.labels("per_minute").inc()
        return True
    return False


async def refuse(answered: KeyValue, cid: str, message: Message, said: str | None) -> None:
    """The request answered by the gateway itself (`said`, or nothing where silence is right), and marked so a
    repeat is not answered again."""
    if said is not None:
        await message.reply(said)
    await answered.put(cid, encode_mark(Sent(outcome="refused")))
