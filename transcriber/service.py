"""The transcriber's subscriber: `AudioReceived` in, `Transcript` or `Failure` out.

A file Telegram has seen before (the same `file_unique_id`, forwarded by anyone) within a day is not
transcribed again: its transcript waits in `voice-transcript-cache` under a keyed hash of that id (and of the
chat's vocabulary), for 24 h. The chat's vocabulary goes to Whisper as hotwords.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import tempfile
import time

import msgspec
import nats.js.errors
from opentelemetry.trace import SpanKind

from infra.bus import (
    BUCKET_AUDIO,
    BUCKET_TRANSCRIPT_CACHE,
    CONSUMER_TRANSCRIBER,
    CONSUMER_TRANSCRIBER_QUEUED,
    SUBJECT_AUDIO,
    SUBJECT_AUDIO_QUEUED,
    SUBJECT_FAILED,
    SUBJECT_PROGRESS,
    SUBJECT_TRANSCRIPT,
    Bus,
    ConsumerSpec,
    Delivery,
    Fail,
    consumes,
)
from infra.contracts import AudioReceived, Failure, Segment, Transcript, TranscriptionProgress
from infra.kvcache import KVCache
from infra.metrics import AUDIO_SECONDS
from infra.notes import vocabulary_digest
from infra.telemetry import record_failure, tracer
from transcriber.asr import AudioProblem, SpeechRecognizer

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


class ProgressReporter:
    """Called by the recognizer on its thread after each batch; publishes `TranscriptionProgress` from the event
    loop, at most every `every` seconds. A progress message that cannot be published is only logged."""

    def __init__(self, bus: Bus, cid: str, loop: asyncio.AbstractEventLoop, every: float) -> None:
        self.bus, self.cid, self.loop, self.every = bus, cid, loop, every
        self.last = time.monotonic()

    def __call__(self, done: float, total: float) -> None:
        if total < PROGRESS_FROM or time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        event = TranscriptionProgress(
            correlation_id=self.cid, done_seconds=round(done, 1), total_seconds=round(total, 1)
        )
        sent = asyncio.run_coroutine_threadsafe(
            self.bus.publish(SUBJECT_PROGRESS, event, msg_id=f"{self.cid}.progress.{int(done)}", traced=False),
            self.loop,
        )
        sent.add_done_callback(self._logged)

    def _logged(self, sent: concurrent.futures.Future[None]) -> None:
        if not sent.cancelled() and (exc := sent.exception()) is not None:
            log.info("%s: progress not published (%s)", self.cid, type(exc).__name__)


class TranscriberService:
    def __init__(self, bus: Bus, recognizer: SpeechRecognizer, progress_every: float = PROGRESS_EVERY) -> None:
        self.bus = bus
        self.recognizer = recognizer
        self.progress_every = progress_every
        self.cache = KVCache(bus, BUCKET_TRANSCRIPT_CACHE, CachedTranscript, "transcript")

    # Fair order: `voice.audio` first; the overflow of users with several notes in flight only when it is empty.
    # Three attempts (a fourth delivery means its workers died each time), then the user hears back.
    @consumes(
        SUBJECT_AUDIO,
        CONSUMER_TRANSCRIBER,
        stage="transcribe",
        ack_wait=15.0,
        max_attempts=3,
        give_up="give_up",
        then=(ConsumerSpec(CONSUMER_TRANSCRIBER_QUEUED, SUBJECT_AUDIO_QUEUED, ack_wait=15.0, max_attempts=3),),
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
            with tracer().start_as_current_span(
                "object_store get", kind=SpanKind.CLIENT, attributes=attributes
            ) as span:
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
            with tracer().start_as_current_span("transcribe", attributes=attributes) as span:
                try:
                    progress = ProgressReporter(self.bus, cid, asyncio.get_running_loop(), self.progress_every)
                    result = await asyncio.to_thread(
                        self.recognizer.transcribe, audio, event.origin.language_hint, event.vocabulary, progress
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
