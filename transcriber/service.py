"""The transcriber: a note's audio in, its text out.

Consumes, with one worker taking in this order (so a process never works on two things that each want all its
cores):
1. `voice.audio` (durable `transcriber`): new notes;
2. `piece.transcribe` (`transcriber-pieces`): pieces of long notes already begun (`transcriber.pieces`);
3. `voice.audio.queued` (`transcriber-queued`): the overflow of users with several notes in flight.

Publishes (`transcriber.outbox`): `voice.transcript`, `voice.progress` for long notes, `piece.transcribe`, and
`voice.failed`. On failure: audio that cannot be transcribed (`Fail`: corrupt, silent, too long) fails at once;
anything else is tried three times, and a fourth delivery means its workers died each time (out of memory,
killed); either way the user hears back through `voice.failed`. A note past its `TRANSCRIPTION_DEADLINE` is
left, with a failure saying so (`overdue`). A file seen before within a day comes from the
cache (`transcriber.cache`); the chat's vocabulary goes to Whisper as hotwords.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
import time

import nats.js.errors
from opentelemetry.trace import SpanKind

from infra.bus import Bus, Delivery, Fail, consumes
from infra.bus.names import (
    BUCKET_AUDIO,
    CONSUMER_TRANSCRIBER,
    CONSUMER_TRANSCRIBER_PIECES,
    CONSUMER_TRANSCRIBER_QUEUED,
    STREAM_PIECES,
    SUBJECT_AUDIO,
    SUBJECT_AUDIO_QUEUED,
    SUBJECT_PIECE,
)
from infra.domain.contracts import AudioReceived, PieceRequested
from infra.runtime.metrics import AUDIO_SECONDS, OVERDUE_SKIPPED
from infra.runtime.telemetry import record_failure, step
from transcriber.asr import AudioProblem, SpeechRecognizer, to_float
from transcriber.cache import CachedTranscript, TranscriptCache
from transcriber.outbox import PROGRESS_EVERY, Outbox, ProgressReporter
from transcriber.pieces import LongNotes
from transcriber.split import PIECE_SECONDS, pieces

log = logging.getLogger("voice_insight.transcriber")

SPOOL_IN_MEMORY = 4 * 1024 * 1024
"""A note's bytes are held in memory up to this size, on disk beyond."""


class TranscriberService:
    def __init__(
        self,
        bus: Bus,
        recognizer: SpeechRecognizer,
        progress_every: float = PROGRESS_EVERY,
        piece_seconds: float = PIECE_SECONDS,
        transcription_deadline: float = 6 * 3600.0,
    ) -> None:
        self.bus = bus
        self.transcription_deadline = transcription_deadline
        self.recognizer = recognizer
        self.progress_every = progress_every
        self.piece_seconds = piece_seconds
        self.outbox = Outbox(bus)
        self.cache = TranscriptCache(bus)
        self.long_notes = LongNotes(bus, recognizer, self.outbox, self.cache)

    @consumes(
        SUBJECT_AUDIO,
        CONSUMER_TRANSCRIBER,
        stage="transcribe",
        ack_wait=15.0,
        max_attempts=3,
        give_up="give_up",
        then=("transcribe_piece", "handle_queued"),
    )
    async def handle(self, event: AudioReceived, delivery: Delivery) -> None:
        cid = event.correlation_id
        if self.overdue(event):
            raise Fail("overdue", "past its transcription deadline")
        if known := await self.cache.get(event):
            await self.outbox.transcript(event, known, seconds=0.0)
            log.info("%s: transcript of a file seen before, from the cache", cid)
            return
        store = await self.bus.audio_store()
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as audio:
            with step(
                "object_store get", kind=SpanKind.CLIENT, attributes={"voice_insight.bucket": BUCKET_AUDIO}
            ) as span:
                try:
                    await store.get(event.audio.object_name, writeinto=audio)  # type: ignore[arg-type]
                except nats.js.errors.NotFoundError:
                    # Expired or already cleaned up after an answer: a late redelivery. Say so; the formatter
                    # ignores it if the note was answered.
                    record_failure(span, "audio_missing")
                    raise Fail("internal", "audio object missing") from None
                span.set_attribute("voice_insight.audio.size_bytes", audio.tell())
                audio.seek(0)
            with step("transcribe", attributes={"voice_insight.asr.model": self.recognizer.model_name}) as span:
                try:
                    cut = pieces(audio, self.recognizer.max_seconds, self.piece_seconds)
                    first = await asyncio.to_thread(next, cut, None)
                    second = await asyncio.to_thread(next, cut, None)
                    if first is not None and second is not None:
                        count = await self.long_notes.split(event, itertools.chain((first, second), cut))
                        span.set_attribute("voice_insight.asr.pieces", count)
                        return
                    assert first is not None  # `pieces` raises rather than yield nothing
                    progress = ProgressReporter(self.outbox, cid, asyncio.get_running_loop(), self.progress_every)
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
        # Cached before it goes out: once it is out the note may be answered, and erased if its chat said /forget.
        await self.cache.put(event, known)  # never raises: a cache that cannot be written is skipped
        await self.outbox.transcript(event, known, seconds=result.seconds)
        log.info(
            "%s: transcribed %.1fs of %s in %.2fs (attempt %d)",
            cid,
            result.duration,
            result.language,
            result.seconds,
            delivery.attempt,
        )

    @consumes(
        SUBJECT_AUDIO_QUEUED,
        CONSUMER_TRANSCRIBER_QUEUED,
        stage="transcribe",
        ack_wait=15.0,
        max_attempts=3,
        give_up="give_up",
    )
    async def handle_queued(self, event: AudioReceived, delivery: Delivery) -> None:
        """A note beyond its sender's fair share: the same work, taken when nothing else waits."""
        await self.handle(event, delivery)

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
        if self.overdue(piece.note):
            await self.long_notes.drop(piece)
            raise Fail("overdue", "past its transcription deadline")
        await self.long_notes.take(piece)

    def overdue(self, note: AudioReceived) -> bool:
        """Past its transcription deadline the note is over: its transcript would reach nobody (the formatter's
        watchdog tells the user, or has). Left, it frees the queue behind it, and its failure says why (once per
        note: `<cid>.failed`), which also tells the user where a formatter without the watchdog still runs."""
        if time.time() <= note.transcript_due(self.transcription_deadline):
            return False
        log.warning("%s: past its transcription deadline; left untranscribed", note.correlation_id)
        OVERDUE_SKIPPED.inc()
        return True

    async def give_up(self, event: AudioReceived, exc: BaseException) -> None:
        """The note cannot be transcribed (`Fail`), every attempt failed, or its worker died (out of memory,
        killed): the user still hears back."""
        await self.outbox.failure(event, exc)

    async def give_up_piece(self, piece: PieceRequested, exc: BaseException) -> None:
        """A piece that cannot be transcribed fails its note: the user hears back rather than gets half of it."""
        await self.outbox.failure(piece.note, exc)
