"""The transcriber's subscriber: `AudioReceived` in, `Transcript` or `Failure` out.

A file Telegram has seen before (the same `file_unique_id`, forwarded by anyone) within a day is not
transcribed again: its transcript waits in `voice-transcript-cache` under a keyed hash of that id (and of the
chat's vocabulary), for 24 h. The chat's vocabulary goes to Whisper as hotwords.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
import time
from collections.abc import Iterator

import msgspec
import nats.js.errors
import numpy as np
from nats.js.kv import KeyValue
from opentelemetry.trace import SpanKind

from infra.bus import Bus, ConsumerSpec, Delivery, Fail, Retry, consumes
from infra.bus.kvcache import KVCache
from infra.bus.names import (
    BUCKET_AUDIO,
    BUCKET_PIECES,
    BUCKET_TRANSCRIPT_CACHE,
    CONSUMER_TRANSCRIBER,
    CONSUMER_TRANSCRIBER_PIECES,
    CONSUMER_TRANSCRIBER_QUEUED,
    STREAM_PIECES,
    SUBJECT_AUDIO,
    SUBJECT_AUDIO_QUEUED,
    SUBJECT_FAILED,
    SUBJECT_PIECE,
    SUBJECT_PROGRESS,
    SUBJECT_TRANSCRIPT,
)
from infra.domain.contracts import AudioReceived, Failure, PieceRequested, Segment, Transcript, TranscriptionProgress
from infra.domain.notes import vocabulary_digest
from infra.runtime.metrics import AUDIO_SECONDS
from infra.runtime.telemetry import record_failure, step
from transcriber.asr import SAMPLE_RATE, AudioProblem, SpeechRecognizer, to_float
from transcriber.split import PIECE_SECONDS, pieces

log = logging.getLogger("voice_insight.transcriber")

SPOOL_IN_MEMORY = 4 * 1024 * 1024
"""A note's bytes are held in memory up to this size, on disk beyond."""


class CachedTranscript(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    language: str
    language_probability: float
    duration: float
    segments: tuple[Segment, ...]
    model: str


def transcript_cache_key(event: AudioReceived) -> str | None:
    """`<file fingerprint>.<vocabulary digest>`: the vocabulary changes what Whisper writes, and a chat's
    `/forget` finds the file's transcripts by the prefix."""
    if not event.audio.fingerprint:
        return None
    return f"{event.audio.fingerprint}.{vocabulary_digest(event.vocabulary)}"


PROGRESS_FROM = 120.0
"""Recordings at least this long say how far transcription has got (a shorter one is done in seconds)."""
PROGRESS_EVERY = 5.0


async def publish_progress(bus: Bus, cid: str, done: float, total: float) -> None:
    """`TranscriptionProgress` for the status message: a courtesy, so one that cannot be published is only logged."""
    event = TranscriptionProgress(correlation_id=cid, done_seconds=round(done, 1), total_seconds=round(total, 1))
    try:
        await bus.publish(SUBJECT_PROGRESS, event, msg_id=f"{cid}.progress.{int(done)}", traced=False)
    except Exception as exc:
        log.info("%s: progress not published (%s)", cid, type(exc).__name__)


class ProgressReporter:
    """Called by the recognizer on its thread after each batch; publishes progress from the event loop, at most
    every `every` seconds."""

    def __init__(self, bus: Bus, cid: str, loop: asyncio.AbstractEventLoop, every: float) -> None:
        self.bus, self.cid, self.loop, self.every = bus, cid, loop, every
        self.last = time.monotonic()

    def __call__(self, done: float, total: float) -> None:
        if total < PROGRESS_FROM or time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        asyncio.run_coroutine_threadsafe(publish_progress(self.bus, self.cid, done, total), self.loop)


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


class TranscriberService:
    """A short note is transcribed where it lands. A long one (`split.pieces`) is cut at pauses into pieces that
    wait on `piece.transcribe` for any transcriber, this one included; whoever transcribes the last piece stitches
    the note's transcript together from `voice-pieces` and publishes it. N transcribers thus share one long note."""

    def __init__(
        self,
        bus: Bus,
        recognizer: SpeechRecognizer,
        progress_every: float = PROGRESS_EVERY,
        piece_seconds: float = PIECE_SECONDS,
    ) -> None:
        self.bus = bus
        self.recognizer = recognizer
        self.progress_every = progress_every
        self.piece_seconds = piece_seconds
        self.cache = KVCache(bus, BUCKET_TRANSCRIPT_CACHE, CachedTranscript, "transcript")

    # One worker, in this order: new notes; pieces of long notes already begun; the overflow of users with several
    # notes in flight. Three attempts (a fourth delivery means its workers died each time), then the user hears back.
    @consumes(
        SUBJECT_AUDIO,
        CONSUMER_TRANSCRIBER,
        stage="transcribe",
        ack_wait=15.0,
        max_attempts=3,
        give_up="give_up",
        then=(
            "transcribe_piece",
            ConsumerSpec(CONSUMER_TRANSCRIBER_QUEUED, SUBJECT_AUDIO_QUEUED, ack_wait=15.0, max_attempts=3),
        ),
    )
    async def handle(self, event: AudioReceived, delivery: Delivery) -> None:
        cid = event.correlation_id
        cache_key = transcript_cache_key(event)
        if known := await self._cached(cache_key):
            await self._publish(event, known, seconds=0.0)
            log.info("%s: transcript of a file seen before, from the cache", cid)
            return
        store = await self.bus.audio_store()
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as audio:
            attributes = {"voice_insight.bucket": BUCKET_AUDIO}
            with step("object_store get", kind=SpanKind.CLIENT, attributes=attributes) as span:
                try:
                    await store.get(event.audio.object_name, writeinto=audio)  # type: ignore[arg-type]
                except nats.js.errors.NotFoundError:  # never stored, expired, or deleted after an answer
                    # Expired or already cleaned up after an answer: a late redelivery. Say so; the formatter
                    # ignores it if the note was answered.
                    record_failure(span, "audio_missing")
                    raise Fail("internal", "audio object missing") from None
                span.set_attribute("voice_insight.audio.size_bytes", audio.tell())
                audio.seek(0)
            attributes = {"voice_insight.asr.model": self.recognizer.model_name}
            with step("transcribe", attributes=attributes) as span:
                try:
                    cut = pieces(audio, self.recognizer.max_seconds, self.piece_seconds)
                    first = await asyncio.to_thread(next, cut, None)
                    second = await asyncio.to_thread(next, cut, None)
                    if first is not None and second is not None:
                        count = await self._split(event, itertools.chain((first, second), cut))
                        span.set_attribute("voice_insight.asr.pieces", count)
                        return
                    assert first is not None  # `pieces` raises rather than yield nothing
                    progress = ProgressReporter(self.bus, cid, asyncio.get_running_loop(), self.progress_every)
                    result = await asyncio.to_thread(
                        self.recognizer.recognize,
                        to_float(first),
                        language_hint=event.origin.language_hint,
                        vocabulary=event.vocabulary,
                        progress=progress,
                    )
                except AudioProblem as problem:
                    log.info("%s: %s (%s)", cid, problem.reason, problem)
                    record_failure(span, problem.reason)
                    raise Fail(problem.reason, str(problem)) from None
                span.set_attributes(
                    {
                        "voice_insight.audio.duration_seconds": round(result.duration, 3),
                        "voice_insight.asr.language": result.language,
                        "voice_insight.asr.language_probability": round(result.language_probability, 3),
                        "voice_insight.asr.real_time_factor": round(result.seconds / result.duration, 4),
                        "voice_insight.asr.segments": len(result.segments),
                    }
                )
        AUDIO_SECONDS.inc(result.duration)
        known = CachedTranscript(
            text=result.text,
            language=result.language,
            language_probability=round(result.language_probability, 3),
            duration=round(result.duration, 2),
            segments=result.segments,
            model=self.recognizer.model_name,
        )
        await self._publish(event, known, seconds=result.seconds)
        await self._remember(cache_key, known)
        log.info(
            "%s: transcribed %.1fs of %s in %.2fs (attempt %d)",
            cid,
            result.duration,
            result.language,
            result.seconds,
            delivery.attempt,
        )

    async def _split(self, event: AudioReceived, cut: Iterator[np.ndarray]) -> int:
        """Store every piece, then offer them all on `piece.transcribe`. Nothing is offered before the whole
        recording is decoded: one found too long by decoding is refused without a piece of it transcribed."""
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
            await self.bus.publish(SUBJECT_PIECE, work, msg_id=f"{cid}.piece.{index}", stream=STREAM_PIECES)
        await publish_progress(self.bus, cid, 0.0, bounds[-1])
        log.info("%s: %.0fs of audio split into %d pieces", cid, bounds[-1], len(names))
        return len(names)

    @consumes(
        SUBJECT_PIECE,
        CONSUMER_TRANSCRIBER_PIECES,
        stage="transcribe",
        stream=STREAM_PIECES,
        ack_wait=15.0,
        max_attempts=3,
        give_up="give_up_piece",
    )
    async def transcribe_piece(self, piece: PieceRequested, delivery: Delivery) -> None:
        """Transcribe one piece (unless a crashed attempt already did), then stitch the note if it was the last."""
        kv = await self.bus.kv(BUCKET_PIECES)
        key = f"{piece_prefix(piece.note)}{piece.index}"
        if await self._stored_piece(kv, key) is None:
            done = await self._transcribe_piece(piece)
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

    async def _transcribe_piece(self, piece: PieceRequested) -> PieceTranscribed:
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
            await publish_progress(self.bus, cid, done, piece.bounds[-1])
            return
        parts = [await self._stored_piece(kv, f"{prefix}{i}") for i in range(piece.count)]
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
        await self._publish(piece.note, known, seconds=time.time() - piece.split_at)
        await self._remember(transcript_cache_key(piece.note), known)
        for index in range(piece.count):
            await self.bus.erase_object(piece_name(piece.note, index))
        log.info("%s: %d pieces stitched, %.0fs of audio", cid, piece.count, piece.bounds[-1])

    @staticmethod
    async def _stored_piece(kv: KeyValue, key: str) -> PieceTranscribed | None:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return msgspec.json.decode(entry.value, type=PieceTranscribed) if entry.value else None

    async def _publish(self, event: AudioReceived, known: CachedTranscript, seconds: float) -> None:
        cid = event.correlation_id
        transcript = Transcript(
            correlation_id=cid,
            text=known.text,
            language=known.language,
            language_probability=known.language_probability,
            duration=known.duration,
            segments=known.segments,
            ui_language=known.language if event.origin.follow_speech else event.origin.ui_language,
            model=known.model,
            transcribe_seconds=round(seconds, 3),
            modes=event.modes,
        )
        await self.bus.publish(SUBJECT_TRANSCRIPT, transcript, msg_id=f"{cid}.transcript")

    async def _cached(self, key: str | None) -> CachedTranscript | None:
        """A transcript of this very file, heard with the same vocabulary, from the last day."""
        return await self.cache.get(key) if key else None

    async def _remember(self, key: str | None, known: CachedTranscript) -> None:
        if key:
            await self.cache.put(key, known)

    async def give_up(self, event: AudioReceived, exc: BaseException) -> None:
        """The note cannot be transcribed (`Fail`), every attempt failed, or its worker died (out of memory,
        killed): the user still hears back."""
        reason, detail = (exc.reason, exc.detail) if isinstance(exc, Fail) else ("internal", type(exc).__name__)
        cid = event.correlation_id
        failure = Failure(correlation_id=cid, stage="transcriber", reason=reason, detail=detail)  # type: ignore[arg-type]
        await self.bus.publish(SUBJECT_FAILED, failure, msg_id=f"{cid}.failed")

    async def give_up_piece(self, piece: PieceRequested, exc: BaseException) -> None:
        """A piece that cannot be transcribed fails its note: the user hears back rather than gets half of it."""
        await self.give_up(piece.note, exc)
