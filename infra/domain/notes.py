"""Answered notes, kept a day for the buttons under their answer, and a chat's `/forget`.

The formatter keeps each answered note in `voice-notes` under `<chat key>.<correlation id>`: its transcript (for
"📄 Transcript" and for running another mode without transcribing again), the modes it got, and where its pieces
lie (the file's fingerprint in the transcript cache, the note's messages in the `VOICE` stream). A note that
failed (not sound, no speech, overdue...) has no transcript and no buttons, but its events name the chat: where
they lie is kept under `<chat key>.<correlation id>.failed` (`NoteTrail`). That is what lets `/forget` find
everything of one chat without any key naming the chat.

`/forget` is carried out by whoever keeps each part (`infra.bus.names.STREAM_FORGET`), so no account erases what it
does not keep: `find_forgotten` and `erase_notes` are the formatter's, `forget_transcripts` the transcriber's,
`forget_analyses` a mode's analyzer's, `forget_intake`, `forget_refused` and `forget_user` the gateway's. The notes
the gateway refused (nothing of them reached the formatter) it files under the chat (`refused_key`) and names in
its request. Notes in flight at that moment are erased the same way once answered (`infra.domain.forgotten`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

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
    SUBJECT_NOTE_GET,
    kv_stream,
)
from infra.domain.answers import leave_forgotten
from infra.domain.contracts import NoteAsked, Origin, Transcript

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


class NoteTrail(msgspec.Struct, frozen=True, kw_only=True):
    """Where a failed note of a chat lies, kept for `/forget` only: never shown, never asked for by a button."""

    seqs: tuple[int, ...] = ()
    fingerprint: str | None = None


def note_key(chat_key: str, cid: str) -> str:
    return f"{chat_key}.{cid}"


def trail_key(chat_key: str, cid: str) -> str:
    """Three tokens, where a note's key has two: a button's request, which names one token each, never reaches it."""
    return f"{chat_key}.{cid}.failed"


_decode = msgspec.json.Decoder(StoredNote).decode
_decode_trail = msgspec.json.Decoder(NoteTrail).decode


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

    async def failed(self, chat_key: str, cid: str) -> bool:
        """Whether the note is one that failed (its trail is kept, and no transcript)."""
        try:
            entry = await (await self.bus.kv(BUCKET_NOTES)).get(trail_key(chat_key, cid))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return False
        return bool(entry.value)

    async def keep_trail(self, chat_key: str, cid: str, trail: NoteTrail) -> None:
        await (await self.bus.kv(BUCKET_NOTES)).put(trail_key(chat_key, cid), msgspec.json.encode(trail))

    async def of_chat(self, chat_key: str) -> list[tuple[str, StoredNote | NoteTrail]]:
        """The chat's answered notes and the trails of its failed ones."""
        kv = await self.bus.kv(BUCKET_NOTES)
        found: list[tuple[str, StoredNote | NoteTrail]] = []
        for key in await self.bus.kv_keys(BUCKET_NOTES, prefix=f"{chat_key}."):
            cid, _, failed = key.removeprefix(f"{chat_key}.").partition(".")
            try:
                entry = await kv.get(key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue
            if entry.value:
                found.append((cid, _decode_trail(entry.value) if failed else _decode(entry.value)))
        return found


def button_proof(cid: str, transcript: str) -> str:
    """What a button under an answer carries besides the note's ID, and must show to have the note: a hash of the
    note's transcript. The gateway holds the key the IDs are made with, so it could derive any note's ID; it never
    sees a transcript unless a press under the answer shows it the proof."""
    return hashlib.sha256(f"button:{cid}:{transcript}".encode()).hexdigest()[:16]


_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a chat key and a correlation ID are made of: no dot, no wildcard, so a request names one note exactly."""


async def answer_note_request(bus: Bus, request: bytes) -> bytes:
    """The formatter's answer to `notes.get`: the note under exactly that key, with its button's proof, or nothing."""
    asked = msgspec.json.decode(request, type=NoteAsked)
    if not (_TOKEN.fullmatch(asked.chat_key) and _TOKEN.fullmatch(asked.correlation_id)):
        log.warning("a note request that names no single note was refused")
        return b""
    note = await NoteStore(bus).get(asked.chat_key, asked.correlation_id)
    if note is None:
        return b""
    if not hmac.compare_digest(button_proof(asked.correlation_id, note.transcript.text), asked.proof):
        log.warning("a note request without its button's proof was refused")
        return b""
    return msgspec.json.encode(note)


async def ask_for_note(bus: Bus, chat_key: str, cid: str, proof: str) -> StoredNote | None:
    """The gateway's read of a note, for a button under its answer: asked of the formatter by its exact key and the
    button's proof, since the gateway may not read the bucket (a key with a wildcard in it would read any note)."""
    answer = await bus.ask(SUBJECT_NOTE_GET, NoteAsked(chat_key=chat_key, correlation_id=cid, proof=proof))
    return _decode(answer) if answer else None


@dataclass(frozen=True)
class Trail:
    """Where everything of one note lies: its events, its cached transcript (`fingerprint`) and analyses
    (`digest` of its transcript); its join, mark, audio and records are under its ID."""

    cid: str
    seqs: tuple[int, ...] = ()
    fingerprint: str | None = None
    digest: str | None = None


def trail_of(cid: str, note: StoredNote | NoteTrail) -> Trail:
    digest = text_digest(note.transcript.text) if isinstance(note, StoredNote) else None
    return Trail(cid, note.seqs, note.fingerprint, digest)


@dataclass
class Forgotten:
    """A forgotten chat's notes, as the formatter found them (answered or failed), or one note erased after its
    answer: what it tells the chat, erases itself, and asks the other keepers to erase (cached transcripts and
    analyses, intake records)."""

    trails: list[Trail] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(len(trail.seqs) for trail in self.trails)

    @property
    def correlation_ids(self) -> tuple[str, ...]:
        return tuple(trail.cid for trail in self.trails)

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(trail.fingerprint for trail in self.trails if trail.fingerprint)

    @property
    def digests(self) -> tuple[str, ...]:
        return tuple(trail.digest for trail in self.trails if trail.digest)


async def find_forgotten(bus: Bus, chat_key: str) -> Forgotten:
    """The chat's answered and failed notes, found before anything is erased: once they are gone, nothing names
    the rest."""
    return Forgotten([trail_of(cid, note) for cid, note in await NoteStore(bus).of_chat(chat_key)])


async def erase_notes(bus: Bus, chat_key: str, gone: Forgotten) -> None:
    """The formatter's part of `/forget`: the notes with their transcripts, their events in the stream (one
    message at a time: nobody may purge `VOICE`), their joins and audio. Each one's answered mark is not erased
    but left saying only that the note was forgotten (`infra.domain.answers.FORGOTTEN`): without it, an event
    of the note that comes late would open its join again, and its update sent again by Telegram would be taken
    in and answered again. A note still in flight is not among them: it is erased the same way once it is
    answered (`infra.domain.forgotten`)."""
    marks = await bus.kv(BUCKET_ANSWERED)
    for trail in gone.trails:
        await leave_forgotten(marks, trail.cid)
        for seq in trail.seqs:
            await bus.delete_message(STREAM, seq)
        await bus.erase(BUCKET_JOINS, trail.cid)
        await bus.erase_object(trail.cid)
        for key in (note_key(chat_key, trail.cid), trail_key(chat_key, trail.cid)):
            await bus.erase(BUCKET_NOTES, key)
    log.info("a chat's notes were forgotten: %d notes, %d stream messages", len(gone.trails), gone.messages)


async def forget_transcripts(
    bus: Bus, chat_key: str, fingerprints: Iterable[str], pieces: bool = True, notes: Iterable[str] = ()
) -> int:
    """The transcriber's part: cached transcripts of these files, and the transcribed pieces of long notes: all
    the chat's (`pieces`), or those of the `notes` named (each under `<chat key>.<correlation id>.`). Returns how
    many cached transcripts went."""
    erased = 0
    for fingerprint in fingerprints:
        for key in await bus.kv_keys(BUCKET_TRANSCRIPT_CACHE, prefix=f"{fingerprint}."):
            await bus.erase(BUCKET_TRANSCRIPT_CACHE, key)
            erased += 1
    for key in await bus.kv_keys(BUCKET_PIECES, prefix=f"{chat_key}.") if pieces else ():
        await bus.erase(BUCKET_PIECES, key)
    for cid in notes:
        await bus.purge(kv_stream(BUCKET_PIECES), f"$KV.{BUCKET_PIECES}.{note_key(chat_key, cid)}.>")
    return erased


async def forget_analyses(bus: Bus, mode: str, digests: Iterable[str]) -> int:
    """One mode's analyzer's part: its cached analyses of these transcripts, found under its own prefix and purged
    key by key (its write grant covers its own keys only; a purge of the stream would reach every mode's, and a KV
    stream refuses deletes by sequence). Each leaves an empty purge marker under the key, a hash of the transcript
    and never the chat, which expires with the cache's hour. Returns how many."""
    cache = await bus.kv(BUCKET_ANALYSIS_CACHE)
    erased = 0
    for digest in digests:
        for key in await bus.kv_keys(BUCKET_ANALYSIS_CACHE, prefix=f"{mode}.{digest}."):
            await cache.purge(key)
            erased += 1
    return erased


def files_mark(cid: str) -> str:
    """Where the gateway marks, in the intake bucket, that a note's transcript went out as files (and as which
    message): "📄 Transcript" sends them once per note."""
    return f"{cid}.files"


async def forget_intake(bus: Bus, correlation_ids: Iterable[str]) -> None:
    """The gateway's part, once the formatter has found the notes: their intake records and marks."""
    for cid in correlation_ids:
        await bus.erase(BUCKET_INTAKE, cid)
        await bus.erase(BUCKET_INTAKE, files_mark(cid))


def refused_key(chat_key: str, cid: str) -> str:
    """A note the gateway answered itself (refused: nothing of it reached the formatter), filed under its chat in
    `voice-intake` for `/forget`. Its intake record and answered mark are under its ID alone."""
    return f"{chat_key}.{cid}"


async def refused_of_chat(bus: Bus, chat_key: str) -> list[str]:
    return [key.removeprefix(f"{chat_key}.") for key in await bus.kv_keys(BUCKET_INTAKE, prefix=f"{chat_key}.")]


async def forget_refused(bus: Bus, chat_key: str, cid: str) -> None:
    """The gateway's part for a note it refused after its chat said `/forget` (it was being taken in then): its
    intake record, its filing under the chat, and any audio a retried intake stored. Its answered mark says only
    that it was forgotten, and the chat's `/forget` named it to nobody."""
    await bus.erase(BUCKET_INTAKE, cid)
    await bus.erase(BUCKET_INTAKE, refused_key(chat_key, cid))
    await bus.erase_object(cid)


async def forget_user(bus: Bus, user_key: str) -> None:
    """The gateway's part for the person in a private chat: the counters kept under their keyed hash."""
    await bus.erase(BUCKET_USERS, user_key)
    for key in await bus.kv_keys(BUCKET_QUOTA, prefix=f"{user_key}."):  # one key per day
        await bus.erase(BUCKET_QUOTA, key)
    for stream, head in ((STREAM_INFLIGHT, "inflight"), (STREAM_RECENT, "recent")):
        await bus.purge(stream, f"{head}.{user_key}.>")
