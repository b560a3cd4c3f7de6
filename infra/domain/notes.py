"""Answered notes, kept a day for the buttons under their answer, and a chat's `/forget`.

The formatter keeps each answered note in `voice-notes` under `<chat key>.<correlation id>`: its transcript (for
"📄 Transcript" and for running another mode without transcribing again), the modes it got, and where its pieces
lie (the file's fingerprint in the transcript cache, the note's messages in the `VOICE` stream). That is what
lets `/forget` find everything of one chat without any key naming the chat.

`/forget` is carried out by whoever keeps each part (`infra.bus.names.STREAM_FORGET`), so no account erases what it
does not keep: `forget_notes` is the formatter's, `forget_transcripts` the transcriber's, `forget_analyses` a mode's
analyzer's, `forget_intake` and `forget_user` the gateway's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import msgspec

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
        """The note, if its day is not over (and the chat did not say `/forget`). Asked for by its key alone: the
        gateway, which reads a note only for a button under its answer, may not list or scan the bucket."""
        value = await self.bus.kv_value(BUCKET_NOTES, note_key(chat_key, cid))
        return _decode(value) if value else None

    async def of_chat(self, chat_key: str) -> list[tuple[str, StoredNote]]:
        found = []
        for key in await self.bus.kv_keys(BUCKET_NOTES, prefix=f"{chat_key}."):
            cid = key.split(".", 1)[1]
            if (note := await self.get(chat_key, cid)) is not None:
                found.append((cid, note))
        return found


@dataclass
class Forgotten:
    """What the formatter erased of a forgotten chat, and what the other keepers are to erase of it."""

    notes: int = 0
    messages: int = 0
    correlation_ids: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)


async def forget_notes(bus: Bus, chat_key: str, before_erasing: Callable[[Forgotten], Awaitable[None]]) -> Forgotten:
    """The formatter's part of `/forget`: the chat's answered notes with their transcripts, their events in the
    stream (one message at a time: nobody may purge `VOICE`), their joins, marks and audio. What identifies the
    rest, kept by others (cached transcripts and analyses, intake records), is handed to `before_erasing` while
    it can still be found: once the notes are gone, nothing names it. Notes still in flight finish; their audio
    is deleted once they are answered."""
    gone = Forgotten()
    notes = await NoteStore(bus).of_chat(chat_key)
    for cid, note in notes:
        gone.correlation_ids.append(cid)
        if note.fingerprint:
            gone.fingerprints.append(note.fingerprint)
        gone.digests.append(text_digest(note.transcript.text))
    await before_erasing(gone)
    for cid, note in notes:
        gone.notes += 1
        for seq in note.seqs:
            if await bus.delete_message(STREAM, seq):
                gone.messages += 1
        for bucket in (BUCKET_ANSWERED, BUCKET_JOINS):
            await bus.erase(bucket, cid)
        await bus.erase_object(cid)
        await bus.erase(BUCKET_NOTES, note_key(chat_key, cid))
    log.info("a chat's notes were forgotten: %d notes, %d stream messages", gone.notes, gone.messages)
    return gone


async def forget_transcripts(bus: Bus, chat_key: str, fingerprints: Iterable[str]) -> int:
    """The transcriber's part: cached transcripts of these files, and pieces of the chat's long notes still being
    stitched. Returns how many cached transcripts went."""
    erased = 0
    for fingerprint in fingerprints:
        for key in await bus.kv_keys(BUCKET_TRANSCRIPT_CACHE, prefix=f"{fingerprint}."):
            await bus.erase(BUCKET_TRANSCRIPT_CACHE, key)
            erased += 1
    for key in await bus.kv_keys(BUCKET_PIECES, prefix=f"{chat_key}."):
        await bus.erase(BUCKET_PIECES, key)
    return erased


async def forget_analyses(bus: Bus, mode: str, digests: Iterable[str]) -> int:
    """One mode's analyzer's part: its cached analyses of these transcripts. Erased key by key with a purge marker
    (its write grant covers its own keys only; a purge of the stream would reach every mode's). Returns how many."""
    cache = await bus.kv(BUCKET_ANALYSIS_CACHE)
    erased = 0
    for digest in digests:
        for key in await bus.kv_keys(BUCKET_ANALYSIS_CACHE, prefix=f"{mode}.{digest}."):
            await cache.purge(key)
            erased += 1
    return erased


async def forget_intake(bus: Bus, correlation_ids: Iterable[str]) -> None:
    """The gateway's part, once the formatter has found the notes: their intake records."""
    for cid in correlation_ids:
        await bus.erase(BUCKET_INTAKE, cid)


async def forget_user(bus: Bus, user_key: str) -> None:
    """The gateway's part for the person in a private chat: the counters kept under their keyed hash."""
    await bus.erase(BUCKET_USERS, user_key)
    for key in await bus.kv_keys(BUCKET_QUOTA, prefix=f"{user_key}."):  # one key per day
        await bus.erase(BUCKET_QUOTA, key)
    for stream, head in ((STREAM_INFLIGHT, "inflight"), (STREAM_RECENT, "recent")):
        await bus.purge(stream, f"{head}.{user_key}.>")
