"""While a note waits for a transcriber: its place in the queue in the status message, "2 notes ahead, about 10 s".

The formatter sees every note arrive (`AudioReceived`), so it watches the note's place among the transcribers'
work until a transcriber takes it. One look at the queue (`Bus.queue`, reading the waiting messages in order)
serves every note this formatter watches for half a round: a backlog of N notes costs about N reads a round,
not N²/2. It and says it through the same brief, exclusive status
edits as progress (`Progress.say`). Nothing is said while nothing waits ahead. The time is an estimate: notes
ahead × the recent transcription time per note ÷ the notes being transcribed at once. A note of someone with
several in flight (`voice.audio.queued`) also waits for everything on `voice.audio`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from formatter.progress import Progress
from infra.bus import Bus, Queue
from infra.bus.names import CONSUMER_TRANSCRIBER, CONSUMER_TRANSCRIBER_QUEUED, SUBJECT_AUDIO, SUBJECT_AUDIO_QUEUED
from infra.domain.contracts import Origin
from infra.voice.texts import text

log = logging.getLogger("voice_insight.formatter")

QUEUE_EVERY = 3.0
"""Seconds between two looks at a note's place (and at most one status edit each)."""
WATCH_AT_MOST = 1800.0
PLACES_COUNTED = 100
"""Notes ahead counted at most (a queue longer than this says this many)."""


def export_transcriber_backlog(bus: Bus) -> None:
    """Export the transcribers' backlog from the formatter too (`Bus.watch_backlog`): a transcriber exports its
    own durables' backlog, so with every transcriber gone nobody would, and NotesWaiting would stay silent while
    notes pile up. The formatter reads these durables' positions anyway, for a note's place in the queue."""
    bus.watch_backlog(CONSUMER_TRANSCRIBER, SUBJECT_AUDIO)
    bus.watch_backlog(CONSUMER_TRANSCRIBER_QUEUED, SUBJECT_AUDIO_QUEUED)


@dataclass(frozen=True)
class _Look:
    queue: Queue
    upto: int
    """The look read the queue up to this sequence."""
    at: float


class QueueWatch:
    def __init__(self, bus: Bus, progress: Progress, every: float = QUEUE_EVERY) -> None:
        self.bus = bus
        self.progress = progress
        self.every = every
        self.per_note: float | None = None
        """Recent transcription seconds per note (a moving average), for the estimate."""
        self._taken: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watched: dict[str, tuple[str, int]] = {}
        """The notes watched now: their subject and sequence, so one look reads as far as the last of them."""
        self._looks: dict[tuple[str, str], _Look] = {}
        self._looking: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    def observe(self, transcribe_seconds: float) -> None:
        """A transcript came: it teaches the estimate how long a note takes."""
        if transcribe_seconds > 0:
            last = self.per_note
            self.per_note = transcribe_seconds if last is None else 0.8 * last + 0.2 * transcribe_seconds

    def watch(self, cid: str, origin: Origin, subject: str, seq: int) -> None:
        if (
            seq
            and subject in (SUBJECT_AUDIO, SUBJECT_AUDIO_QUEUED)
            and cid not in self._tasks
            and cid not in self._taken
        ):
            self._watched[cid] = (subject, seq)
            self._tasks[cid] = asyncio.create_task(self._run(cid, origin, subject, seq))

    def taken(self, cid: str) -> None:
        """The note has its transcript (or its answer): its place is of no interest any more."""
        if len(self._taken) > 10_000:
            self._taken.clear()
        self._taken.add(cid)
        self._watched.pop(cid, None)
        task = self._tasks.pop(cid, None)
        if task is not None:
            task.cancel()

    async def _run(self, cid: str, origin: Origin, subject: str, seq: int) -> None:
        said = ""
        started = time.monotonic()
        try:
            while time.monotonic() - started < WATCH_AT_MOST:
                await asyncio.sleep(self.every)
                try:
                    found = await self._place(origin.ui_language, subject, seq)
                except Exception as exc:  # NATS away a moment: look again next time
                    log.debug("%s: queue place unknown (%s)", cid, type(exc).__name__)
                    continue
                if found is None or cid in self._taken:
                    return  # a transcriber has it
                line, ahead = found
                if line and line != said:
                    self.progress.say(cid, origin, line, level=-float(ahead))  # fewer ahead: further along
                    said = line
        finally:
            self._tasks.pop(cid, None)
            self._watched.pop(cid, None)

    async def place(self, lang: str, subject: str, seq: int) -> str | None:
        """What the status should say now: "" when nothing waits ahead, None once the note is taken."""
        found = await self._place(lang, subject, seq)
        return found[0] if found is not None else None

    async def _place(self, lang: str, subject: str, seq: int) -> tuple[str, int] | None:
        """`place`, and how many notes are ahead."""
        if subject == SUBJECT_AUDIO:
            place = (await self._queue(CONSUMER_TRANSCRIBER, SUBJECT_AUDIO, seq)).place(seq)
            if place is None:
                return None
            ahead, working = place.waiting + place.working, place.working
        else:
            place = (await self._queue(CONSUMER_TRANSCRIBER_QUEUED, SUBJECT_AUDIO_QUEUED, seq)).place(seq)
            if place is None:
                return None
            first = await self.bus.queue(CONSUMER_TRANSCRIBER, SUBJECT_AUDIO, upto=0, cap=0)  # its size only
            before = first.pending + first.working
            ahead, working = before + place.waiting + place.working, max(place.working, first.working)
        if ahead == 0:
            return "", 0
        eta = ""
        if self.per_note is not None:
            seconds = max(1, round(ahead * self.per_note / max(1, working)))
            eta = text("queue_eta", lang, seconds=seconds)
        return text("queue_position", lang, ahead=ahead, eta=eta), ahead

    async def _queue(self, durable: str, subject: str, seq: int) -> Queue:
        """The queue as last seen, if that was less than half a round ago and reached `seq`; else a new look, as
        far as the last note watched on `subject`."""
        key = (durable, subject)
        async with self._looking[key]:
            look = self._looks.get(key)
            if (
                look is None
                or time.monotonic() - look.at > self.every / 2
                or (seq >= look.upto and len(look.queue.waiting) < PLACES_COUNTED)
            ):
                upto = max([s for watched, s in self._watched.values() if watched == subject] + [seq]) + 1
                look = _Look(await self.bus.queue(durable, subject, upto, PLACES_COUNTED), upto, time.monotonic())
                self._looks[key] = look
            return look.queue
