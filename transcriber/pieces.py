"""Long notes, shared by every transcriber: cut at pauses (`transcriber.split`) into pieces that wait on
`piece.transcribe` for any transcriber, this one included; whoever transcribes the last piece stitches the note's
transcript together from `voice-pieces` and publishes it. N transcribers thus share one long note.

Nothing is offered before the whole recording is decoded: one found too long by decoding is refused without a
piece of it transcribed. A piece transcribed by an attempt that crashed afterwards is not transcribed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import msgspec
import nats.js.errors
import numpy as np
from nats.js.kv import KeyValue

from infra.bus import Bus, Fail, Retry
from infra.bus.names import BUCKET_PIECES, kv_stream
from infra.domain.contracts import AudioReceived, PieceRequested, Segment
from infra.runtime.metrics import AUDIO_SECONDS
from infra.runtime.telemetry import record_failure, step
from transcriber.asr import SAMPLE_RATE, AudioProblem, SpeechRecognizer, to_float
from transcriber.cache import CachedTranscript, TranscriptCache
from transcriber.outbox import Outbox

log = logging.getLogger("voice_insight.transcriber")


class PieceTranscribed(msgspec.Struct, frozen=True, kw_only=True):
    """One piece of a long note, transcribed: kept in `voice-pieces` until the last piece is in."""

    segments: tuple[Segment, ...]
    seconds: float
    model: str
    language: str = ""
    """The language it was transcribed in: the note's, or (no speech at the note's start) its own."""


def piece_prefix(note: AudioReceived) -> str:
    """`<chat key>.<cid>.`: a chat's `/forget` finds its pieces by the chat key."""
    return f"{note.origin.chat_key or 'chat'}.{note.correlation_id}."


def piece_name(note: AudioReceived, index: int) -> str:
    """Where piece `index` of a note's samples lies in the Object Store."""
    return f"{note.audio.object_name}.piece.{index}"


class LongNotes:
    def __init__(self, bus: Bus, recognizer: SpeechRecognizer, outbox: Outbox, cache: TranscriptCache) -> None:
        self.bus = bus
        self.recognizer = recognizer
        self.outbox = outbox
        self.cache = cache

    async def split(self, event: AudioReceived, cut: Iterator[np.ndarray]) -> int:
        """Store every piece, then offer them all on `piece.transcribe`; returns how many."""
        store = await self.bus.audio_store()
        names: list[str] = []
        bounds = [0.0]
        language: tuple[str, float] | None = None
        try:
            while (piece := await asyncio.to_thread(next, cut, None)) is not None:
                if not names:
                    language = await asyncio.to_thread(
                        self.recognizer.language_of, to_float(piece), event.origin.language_hint
                    )
                names.append(piece_name(event, len(names)))
                await store.put(names[-1], piece.tobytes())
                bounds.append(bounds[-1] + piece.size / SAMPLE_RATE)
        except AudioProblem:
            for name in names:
                await self.bus.erase_object(name)
            raise
        cid = event.correlation_id
        started = time.time()
        for index, name in enumerate(names):
            work = PieceRequested(
                correlation_id=cid,
                note=event,
                index=index,
                bounds=tuple(bounds),
                object_name=name,
                language=language[0] if language else None,
                language_probability=round(language[1], 3) if language else 0.0,
                split_at=started,
            )
            await self.outbox.piece(work)
        await self.outbox.progress(cid, 0.0, bounds[-1])
        log.info("%s: %.0fs of audio split into %d pieces", cid, bounds[-1], len(names))
        return len(names)

    async def take(self, piece: PieceRequested) -> None:
        """Transcribe one piece (unless a crashed attempt already did), then stitch the note if it was the last."""
        kv = await self.bus.kv(BUCKET_PIECES)
        key = f"{piece_prefix(piece.note)}{piece.index}"
        if await self._stored(kv, key) is None:
            done = await self._transcribe(piece)
            await kv.put(key, msgspec.json.encode(done))
            log.info(
                "%s: piece %d of %d (%.0fs) transcribed in %.1fs",
                piece.correlation_id,
                piece.index + 1,
                piece.count,
                piece.duration,
                done.seconds,
            )
        await self._stitch_when_complete(piece, kv)

    async def _transcribe(self, piece: PieceRequested) -> PieceTranscribed:
        store = await self.bus.audio_store()
        attributes: dict[str, str | int] = {
            "voice_insight.asr.model": self.recognizer.model_name,
            "voice_insight.asr.piece": piece.index,
            "voice_insight.asr.pieces": piece.count,
        }
        with step("transcribe piece", attributes=attributes) as span:
            try:
                stored = await store.get(piece.object_name)
            except nats.js.errors.NotFoundError:
                record_failure(span, "audio_missing")
                raise Fail("internal", "piece missing") from None
            assert stored.data is not None
            audio = to_float(np.frombuffer(stored.data, dtype=np.int16))
            del stored
            started = time.perf_counter()
            language = piece.language or ""
            try:
                result = await asyncio.to_thread(
                    self.recognizer.recognize,
                    audio,
                    language=piece.language,
                    language_hint=piece.note.origin.language_hint,
                    vocabulary=piece.note.vocabulary,
                    offset=piece.start,
                )
                segments, language = result.segments, result.language
            except AudioProblem as problem:
                if problem.reason != "no_speech":
                    raise Fail(problem.reason, str(problem)) from None
                segments = ()  # a pause between talks: nothing to add
            seconds = time.perf_counter() - started
            span.set_attributes(
                {
                    "voice_insight.audio.duration_seconds": round(piece.duration, 3),
                    "voice_insight.asr.real_time_factor": round(seconds / max(piece.duration, 0.01), 4),
                    "voice_insight.asr.segments": len(segments),
                }
            )
        AUDIO_SECONDS.inc(piece.duration)
        return PieceTranscribed(
            segments=segments, seconds=round(seconds, 3), model=self.recognizer.model_name, language=language
        )

    async def _stitch_when_complete(self, piece: PieceRequested, kv: KeyValue) -> None:
        """The pieces in, in order, make the transcript. Every piece's worker looks after storing its own: of two
        finishing together at least one sees both, and a transcript stitched twice is published once
        (`<cid>.transcript` is its message ID)."""
        prefix, cid = piece_prefix(piece.note), piece.correlation_id
        have = {int(key.removeprefix(prefix)) for key in await self.bus.kv_keys(BUCKET_PIECES, prefix)}
        if len(have) < piece.count:
            done = sum(piece.bounds[i + 1] - piece.bounds[i] for i in have)
            await self.outbox.progress(cid, done, piece.bounds[-1])
            return
        parts = [await self._stored(kv, f"{prefix}{i}") for i in range(piece.count)]
        if any(part is None for part in parts):
            raise Retry(1.0, "a piece is listed but not readable yet")
        segments = tuple(s for part in parts if part is not None for s in part.segments)
        text = " ".join(s.text for s in segments).strip()
        if not text:
            raise Fail("no_speech", "nothing but silence in every piece")
        # The language told at the start; if the start was silent, that of the piece with the most speech.
        spoken = max((p for p in parts if p is not None), key=lambda p: sum(s.end - s.start for s in p.segments))
        known = CachedTranscript(
            text=text,
            language=piece.language or spoken.language,
            language_probability=piece.language_probability,
            duration=round(piece.bounds[-1], 2),
            segments=segments,
            model=self.recognizer.model_name,
        )
        await self.cache.put(piece.note, known)  # before it goes out, as a whole note's (`TranscriberService`)
        await self.outbox.transcript(piece.note, known, seconds=time.time() - piece.split_at)
        for index in range(piece.count):
            await self.bus.erase_object(piece_name(piece.note, index))
        log.info("%s: %d pieces stitched, %.0fs of audio", cid, piece.count, piece.bounds[-1])

    async def drop(self, piece: PieceRequested) -> None:
        """A note given up on (past its deadline): every piece's samples and every transcribed piece go now, not a
        day later; what is gone already is skipped."""
        for index in range(piece.count):
            await self.bus.erase_object(piece_name(piece.note, index))
        await self.bus.purge(kv_stream(BUCKET_PIECES), f"$KV.{BUCKET_PIECES}.{piece_prefix(piece.note)}>")

    @staticmethod
    async def _stored(kv: KeyValue, key: str) -> PieceTranscribed | None:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return msgspec.json.decode(entry.value, type=PieceTranscribed) if entry.value else None
