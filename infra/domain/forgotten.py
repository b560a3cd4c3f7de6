"""The mark a chat's `/forget` leaves, so that its notes still in flight then are erased as soon as they are
answered, wherever they were at the moment (at the gateway's intake, at a transcriber, at an analyzer).

The gateway writes it in `voice-answered` before it asks anyone to erase anything, under a hash of the chat's
key (nothing `/forget` leaves behind is keyed by the chat's own key), and it holds the `/forget` message's ID and
nothing else. Telegram numbers a chat's messages in order, so a note with a smaller message ID was sent before
the `/forget`: no clock of ours is compared, and a redelivered `/forget` leaves the same mark. It lasts as long as
the bucket keeps anything (24 h), as long as a note can be in flight.
"""

from __future__ import annotations

import hashlib

import nats.js.errors
from nats.js.kv import KeyValue

from infra.domain.contracts import Origin


def forgotten_key(chat_key: str) -> str:
    return "forgotten." + hashlib.sha256(f"forgotten:{chat_key}".encode()).hexdigest()[:32]


async def forgotten_before(answered: KeyValue, chat_key: str) -> int:
    """The message ID of the chat's latest `/forget` in the last day; 0 if none."""
    try:
        entry = await answered.get(forgotten_key(chat_key))
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return 0
    try:
        return int(entry.value or b"0")
    except ValueError:
        return 0


async def mark_forgotten(answered: KeyValue, chat_key: str, message_id: int) -> None:
    """Leave the mark; an earlier `/forget` (redelivered late) never lowers a later one's."""
    if await forgotten_before(answered, chat_key) < message_id:
        await answered.put(forgotten_key(chat_key), str(message_id).encode())


async def sent_before_forget(answered: KeyValue, chat_key: str | None, message_id: int) -> bool:
    """Whether the chat said `/forget` after this note of it: the note is to leave nothing once answered."""
    return chat_key is not None and message_id < await forgotten_before(answered, chat_key)


async def forgotten_since(answered: KeyValue, origin: Origin) -> bool:
    return await sent_before_forget(answered, origin.chat_key, origin.message_id)
