"""What the status message says while a note waits: its place in the queue (`formatter.queue`), how far
transcription has got, and what of the answer is ready (`formatter.progress`).

A courtesy that never holds the answer up: every edit is brief and exclusive (`Progress`), and once the note is
complete or answered nothing more is shown.
"""

from __future__ import annotations

from formatter.join import JoinState
from formatter.marks import AnswerMarks
from formatter.progress import PROGRESS_INTERVAL, Edit, Progress
from formatter.queue import QUEUE_EVERY, QueueWatch
from formatter.render import transcribing
from infra.bus import Bus, Delivery
from infra.domain.contracts import Analysis, AudioReceived, Event, Transcript, TranscriptionProgress


class StatusMessage:
    def __init__(
        self,
        bus: Bus,
        marks: AnswerMarks,
        edit: Edit,
        progress_interval: float = PROGRESS_INTERVAL,
        queue_every: float = QUEUE_EVERY,
        shown: bool = True,
    ) -> None:
        self.progress = Progress(marks, edit, progress_interval)
        self.queue = QueueWatch(bus, self.progress, queue_every)
        self.shown = shown
        """False: the status message changes only into the answer."""

    def taken(self, cid: str) -> None:
        """A transcriber has the note."""
        self.queue.taken(cid)

    def transcribing(self, progress: TranscriptionProgress, known: JoinState) -> None:
        """A long note's transcription has got this far."""
        cid = progress.correlation_id
        if self.shown and known.origin is not None and known.transcript is None:
            body = transcribing(progress, known.origin.ui_language)
            self.progress.say(cid, known.origin, body, level=progress.done_seconds / max(progress.total_seconds, 1.0))

    def follow(self, event: Event, state: JoinState, delivery: Delivery) -> None:
        """The note's join took `event` in: say what it means for the waiting user, if anything."""
        cid = event.correlation_id
        if isinstance(event, Transcript):
            self.queue.observe(event.transcribe_seconds)
            self.queue.taken(cid)
        if state.complete or not self.shown:
            return  # the answer itself comes next
        if isinstance(event, Transcript | Analysis):
            self.progress.show(cid, state)
        elif isinstance(event, AudioReceived) and state.transcript is None and not state.failed:
            self.queue.watch(cid, event.origin, delivery.subject, delivery.seq)

    def answering(self, cid: str) -> None:
        """The answer is going out: progress not shown yet is overtaken by it."""
        self.progress.forget(cid)

    def answered(self, cid: str) -> None:
        self.progress.forget(cid)
        self.queue.taken(cid)
