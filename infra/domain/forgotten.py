"""The mark a chat's `/forget` leaves, so that its notes still in flight then are erased as soon as they are
answered, wherever they were at the moment (at the gateway's intake, at a transcriber, at an analyzer).

The gateway writes it in `voice-answered` before it asks anyone to erase anything, under a hash of the chat's
key (nothing `/forget` leaves behind is keyed by the chat's own key), and it holds the `/forget` message's ID and
when the mark was written, nothing else. A note was in flight then if it was taken in before that moment (its
intake's first claim, `AudioReceived.received_at`: the gateway's clock on both sides) and sent before the
`/forget` (a smaller message ID: Telegram numbers a chat's messages in order). Either alone would not do: a note
asked for after the `/forget` (`/transcribe` in reply to an old voice note) was sent long before it, and a note
sent just after it may be taken in while it is being handled. A redelivered `/forget` leaves the mark as it was.
It lasts as long as the bucket keeps anything (24 h), as long as a note can be in flight.
"""

from __future__ import annotations

import hashlib
import time

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from infra.domain.contracts import Origin


class ForgetMark(msgspec.Struct, frozen=True):
    message_id: int
    """The `/forget` message's ID."""
    at: float = 0.0
    """When the mark was written (Unix time); 0: a mark from before it said (a message ID alone)."""


def forgotten_key(chat_key: str) -> str:
    return "forgotten." + hashlib.sha256(f"forgotten:{chat_key}".encode()).hexdigest()[:32]


_decode = msgspec.json.Decoder(ForgetMark).decode


async def forget_mark(answered: KeyValue, chat_key: str) -> ForgetMark | None:
    """The chat's latest `/forget` in the last day, if any."""
    try:
        entry = await answered.get(forgotten_key(chat_key))
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    value = entry.value or b""
    try:
        return ForgetMark(int(value)) if value.isdigit() else _decode(value)
    except (ValueError, msgspec.DecodeError):
        return None


async def mark_forgotten(answered: KeyValue, chat_key: str, message_id: int) -> None:
    """Leave the mark; an earlier `/forget` (redelivered late) never lowers a later one's, and the same one
    redelivered leaves it as it was (the moment is the first handling's)."""
    found = await forget_mark(answered, chat_key)
    if found is None or found.message_id < message_id:
        await answered.put(forgotten_key(chat_key), msgspec.json.encode(ForgetMark(message_id, time.time())))


async def in_flight_at_forget(
    answered: KeyValue, chat_key: str | None, message_id: int, taken_in: float | None
) -> bool:
    """Whether the chat said `/forget` while this note of it was in flight (sent before it, and taken in before
    it: `taken_in`, None if unknown): the note is to leave nothing once answered."""
    if chat_key is None:
        return False
    mark = await forget_mark(answered, chat_key)
    if mark is None or message_id >= mark.message_id:
        return False
    return taken_in is None or not mark.at or taken_in < mark.at


async def forgotten_since(answered: KeyValue, origin: Origin, taken_in: float | None) -> bool:
    return await in_flight_at_forget(answered, origin.chat_key, origin.message_id, taken_in)
