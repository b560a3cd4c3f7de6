"""Everything the transcriber publishes, in one place.

- `voice.transcript` (`Transcript`): a note's text, whole or stitched from its pieces; once (`<cid>.transcript`);
- `voice.progress` (`TranscriptionProgress`): how far a long note has got; a courtesy, so one that cannot be
  published is only logged;
- `piece.transcribe` (`PieceRequested`): the pieces of a long note, for any transcriber;
- `voice.failed` (`Failure`): the note cannot be transcribed, and the user hears why.
"""

from __future__ import annotations

import asyncio
import logging
import time

from infra.bus import Bus, Fail
from infra.bus.names import STREAM_PIECES, SUBJECT_FAILED, SUBJECT_PIECE, SUBJECT_PROGRESS, SUBJECT_TRANSCRIPT
from infra.domain.chat_modes import is_chat_mode
from infra.domain.contracts import AudioReceived, Failure, Origin, PieceRequested, Transcript, TranscriptionProgress
from transcriber.cache import CachedTranscript

log = logging.getLogger("voice_insight.transcriber")

PROGRESS_FROM = 120.0
"""Recordings at least this long say how far transcription has got (a shorter one is done in seconds)."""
PROGRESS_EVERY = 5.0


def speech_decides(origin: Origin) -> bool:
    """Whether the note's analyses come in the language it was spoken in (`Transcript.ui_language`)."""
    return origin.follow_speech or origin.analyses_follow_speech


class Outbox:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def transcript(self, note: AudioReceived, known: CachedTranscript, seconds: float) -> None:
        cid = note.correlation_id
        transcript = Transcript(
            correlation_id=cid,
            text=known.text,
            language=known.language,
            language_probability=known.language_probability,
            duration=known.duration,
            segments=known.segments,
            ui_language=known.language if speech_decides(note.origin) else note.origin.ui_language,
            model=known.model,
            transcribe_seconds=round(seconds, 3),
            modes=note.modes,
            # Only to the chat's own modes' analyzer: other analyzers need not link transcripts to their chats.
            chat_key=note.origin.chat_key if any(map(is_chat_mode, note.modes)) else None,
        )
        await self.bus.publish(SUBJECT_TRANSCRIPT, transcript, msg_id=f"{cid}.transcript")

    async def progress(self, cid: str, done: float, total: float) -> None:
        event = TranscriptionProgress(correlation_id=cid, done_seconds=round(done, 1), total_seconds=round(total, 1))
        try:
            await self.bus.publish(SUBJECT_PROGRESS, event, msg_id=f"{cid}.progress.{int(done)}", traced=False)
        except Exception as exc:
            log.info("%s: progress not published (%s)", cid, type(exc).__name__)

    async def piece(self, work: PieceRequested) -> None:
        msg_id = f"{work.correlation_id}.piece.{work.index}"
        await self.bus.publish(SUBJECT_PIECE, work, msg_id=msg_id, stream=STREAM_PIECES)

    async def failure(self, note: AudioReceived, exc: BaseException) -> None:
        """`Fail(reason)` says why; anything else (every attempt failed, the worker died) is `internal`."""
        reason, detail = (exc.reason, exc.detail) if isinstance(exc, Fail) else ("internal", type(exc).__name__)
        cid = note.correlation_id
        failure = Failure(correlation_id=cid, stage="transcriber", reason=reason, detail=detail)  # type: ignore[arg-type]
        await self.bus.publish(SUBJECT_FAILED, failure, msg_id=f"{cid}.failed")


class ProgressReporter:
    """Called by the recognizer on its thread after each batch; publishes progress from the event loop, at most
    every `every` seconds."""

    def __init__(self, outbox: Outbox, cid: str, loop: asyncio.AbstractEventLoop, every: float) -> None:
        self.outbox, self.cid, self.loop, self.every = outbox, cid, loop, every
        self.last = time.monotonic()

    def __call__(self, done: float, total: float) -> None:
        if total < PROGRESS_FROM or time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        asyncio.run_coroutine_threadsafe(self.outbox.progress(self.cid, done, total), self.loop)
