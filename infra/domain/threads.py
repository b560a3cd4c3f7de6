"""Which note a reply to the bot asks about: the bot's messages that answer a note, and the conversation so far.

A question is a reply. Replying to the voice note itself names the note (its ID is the keyed hash of the chat and
that message). Replying to one of the bot's messages does not: Telegram gives a bot the message replied to, never
what that one replied to. So the formatter, which sends every answer, files each message it sends under
`<chat key>.<message id>` in `voice-threads`: the note the message answers and, for an answer to a question, the
turns of the conversation up to it (at most `MAX_TURNS`). A reply to that answer is a follow-up, read against
those turns. The formatter writes and reads every key (nobody else reads them: they hold what was asked and
answered). Kept as long as the notes (a day), and erased with them by `/forget` (`forget_threads`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import msgspec
import nats.js.errors

from infra.bus import Bus
from infra.bus.names import BUCKET_THREADS, USER_DATA_TTL
from infra.domain.contracts import Turn

log = logging.getLogger("voice_insight.threads")

MAX_TURNS = 4
"""Earlier questions and answers a follow-up is read with: a conversation, not a transcript of its own."""
MAX_QUESTION_LENGTH = 1000
"""Characters of a question that are asked: a question, not a document to analyse."""


class Thread(msgspec.Struct, frozen=True, kw_only=True):
    """What one of the bot's messages in a chat answers."""

    note: str
    """The note's correlation ID."""
    turns: tuple[Turn, ...] = ()
    """The questions about it answered so far in this conversation, oldest first, this message's answer last."""


def clock(seconds: float) -> str:
    """A moment of a recording as people read it: `mm:ss`, or `h:mm:ss` past the hour."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def thread_key(chat_key: str, message_id: int) -> str:
    return f"{chat_key}.{message_id}"


_decode = msgspec.json.Decoder(Thread).decode


class ThreadStore:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def file(self, chat_key: str, message_ids: Iterable[int], thread: Thread) -> None:
        """Each message filed as the thread, for as long as its oldest turn may be kept (`lifetime`)."""
        value = msgspec.json.encode(thread)
        for message_id in message_ids:
            await self.bus.kv_put(BUCKET_THREADS, thread_key(chat_key, message_id), value, lifetime(thread))

    async def get(self, chat_key: str, message_id: int) -> Thread | None:
        try:
            entry = await (await self.bus.kv(BUCKET_THREADS)).get(thread_key(chat_key, message_id))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        return _decode(entry.value) if entry.value else None


def continued(turns: Iterable[Turn], question: str, answer: str, asked_at: float) -> tuple[Turn, ...]:
    """The conversation with one more turn, the oldest dropped past `MAX_TURNS` and past their day."""
    now = time.time()
    kept = [t for t in turns if not t.asked_at or now - t.asked_at < USER_DATA_TTL]
    return (*kept, Turn(question=question, answer=answer, asked_at=asked_at))[-MAX_TURNS:]


def lifetime(thread: Thread, now: float | None = None) -> float:
    """Seconds a thread may be kept: a day, or what is left of its oldest turn's day. Every follow-up files the
    turns before it again, and nothing anybody asked may outlive its own day by riding along."""
    now = time.time() if now is None else now
    asked = [t.asked_at for t in thread.turns if t.asked_at]
    return max(1.0, min(asked) + USER_DATA_TTL - now) if asked else USER_DATA_TTL


async def forget_threads(bus: Bus, chat_key: str, notes: Iterable[str] | None = None) -> int:
    """`/forget`, the formatter's part of it here: the chat's threads, or only those of `notes` (a note erased
    once answered, its chat having said `/forget` while it was in flight). Returns how many went."""
    only = set(notes) if notes is not None else None
    kv = await bus.kv(BUCKET_THREADS)
    erased = 0
    for key in await bus.kv_keys(BUCKET_THREADS, prefix=f"{chat_key}."):
        if only is not None:
            try:
                entry = await kv.get(key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue
            if not entry.value or _decode(entry.value).note not in only:
                continue
        await bus.erase(BUCKET_THREADS, key)
        erased += 1
    return erased
