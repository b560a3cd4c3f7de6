"""Answered notes, kept a day for the buttons under their answer, and a chat's `/forget`.

The formatter keeps each answered note in `voice-notes` under `<chat key>.<correlation id>`: its transcript (for
"📄 Transcript" and for running another mode without transcribing again), the modes it got, and where its pieces
lie (the file's fingerprint in the transcript cache, the note's messages in the `VOICE` stream). That is what
lets `/forget` find everything of one chat without any key naming the chat.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import msgspec
import nats.js.errors

from infra.bus import Bus
from infra.bus.names import (
    BUCKET_ANALYSIS_CACHE,
    BUCKET_ANSWERED,
    BUCKET_INTAKE,
    BUCKET_JOINS,
    BUCKET_NOTES,
    BUCKET_PIECES,
    BUCKET_QUOTA,
    BUCKET_TRANSCRIPT_CACHE,
    BUCKET_USERS,
    STREAM,
    STREAM_INFLIGHT,
    STREAM_RECENT,
)
from infra.domain.contracts import Origin, Transcript

log = logging.getLogger("voice_insight.notes")


class StoredNote(msgspec.Struct, frozen=True, kw_only=True):
    origin: Origin
    transcript: Transcript
    modes_run: tuple[str, ...] = ()
    """Modes whose analysis is in the answer."""
    offered: tuple[str, ...] = ()
    """Modes offered as buttons under the answer, in button order (a button carries its index)."""
    fingerprint: str | None = None
    user_key: str | None = None
    seqs: tuple[int, ...] = ()
    """The note's events in the `VOICE` stream."""


def text_digest(text: str) -> str:
    """What the analysis cache files a transcript's analyses under (a key prefix): a hash, never the words."""
    return hashlib.sha256(b"transcript:" + text.encode()).hexdigest()[:32]


def vocabulary_digest(vocabulary: str | None) -> str:
    return hashlib.sha256((vocabulary or "").encode()).hexdigest()[:12] if vocabulary else "plain"


def note_key(chat_key: str, cid: str) -> str:
    return f"{chat_key}.{cid}"


_decode = msgspec.json.Decoder(StoredNote).decode


class NoteStore:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def put(self, chat_key: str, cid: str, note: StoredNote) -> None:
        await (await self.bus.kv(BUCKET_NOTES)).put(note_key(chat_key, cid), msgspec.json.encode(note))

    async def get(self, chat_key: str, cid: str) -> StoredNote | None:
        """The note, if its day is not over (and the chat did not say `/forget`)."""
        try:
            entry = await (await self.bus.kv(BUCKET_NOTES)).get(note_key(chat_key, cid))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        return _decode(entry.value) if entry.value else None

    async def of_chat(self, chat_key: str) -> list[tuple[str, StoredNote]]:
        found = []
        for key in await self.bus.kv_keys(BUCKET_NOTES, prefix=f"{chat_key}."):
            cid = key.split(".", 1)[1]
            if (note := await self.get(chat_key, cid)) is not None:
                found.append((cid, note))
        return found


@dataclass
class Forgotten:
    """What `/forget` deleted, counted for the user's answer."""

    notes: int = 0
    transcripts: int = 0
    analyses: int = 0
    messages: int = 0
    settings: bool = False


async def forget_chat(bus: Bus, chat_key: str, user_key: str | None) -> Forgotten:
    """Erase everything kept about one chat: its answered notes with their transcripts, cached transcripts and
    analyses, the note's events in the stream, its marks; and `user_key`'s counters (a private chat: the chat is
    the user). Notes still in flight finish; their audio is deleted once they are answered."""
    gone = Forgotten()
    for cid, note in await NoteStore(bus).of_chat(chat_key):
        gone.notes += 1
        for seq in note.seqs:
            if await bus.delete_message(STREAM, seq):
                gone.messages += 1
        if note.fingerprint:
            for key in await bus.kv_keys(BUCKET_TRANSCRIPT_CACHE, prefix=f"{note.fingerprint}."):
                await bus.erase(BUCKET_TRANSCRIPT_CACHE, key)
                gone.transcripts += 1
        for key in await bus.kv_keys(BUCKET_ANALYSIS_CACHE, prefix=f"*.{text_digest(note.transcript.text)}."):
            await bus.erase(BUCKET_ANALYSIS_CACHE, key)
            gone.analyses += 1
        for bucket in (BUCKET_ANSWERED, BUCKET_INTAKE, BUCKET_JOINS):
            await bus.erase(bucket, cid)
        await bus.erase_object(cid)
        await bus.erase(BUCKET_NOTES, note_key(chat_key, cid))
    for key in await bus.kv_keys(BUCKET_PIECES, prefix=f"{chat_key}."):  # long notes still being stitched
        await bus.erase(BUCKET_PIECES, key)
    if user_key:
        await bus.erase(BUCKET_USERS, user_key)
        for key in await bus.kv_keys(BUCKET_QUOTA, prefix=f"{user_key}."):  # one key per day
            await bus.erase(BUCKET_QUOTA, key)
        for stream, head in ((STREAM_INFLIGHT, "inflight"), (STREAM_RECENT, "recent")):
            await bus.purge(stream, f"{head}.{user_key}.>")
    log.info("a chat was forgotten: %d notes, %d stream messages", gone.notes, gone.messages)
    return gone
