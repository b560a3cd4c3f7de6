"""The formatter: every event of a note in, one answer per note out.

Consumes:
- `voice.>`, every event (durable `formatter`): join it (`join`), tell the waiting user (`status`), and answer
  once the note is complete (`answer`);
- `voice.transcript` again (durable `formatter-deadline`): hold it until `JOIN_TIMEOUT` after it was published
  (a delayed nak, so the timer lives in JetStream and survives restarts), then answer with what is there;
- `voice.audio` and `voice.audio.queued` again (durables `formatter-watchdog`, `formatter-watchdog-queued`): the
  watchdog of a note whose transcript never comes (every transcriber gone, the queue longer than the
  `TRANSCRIPTION_DEADLINE`): looked at every ten minutes until answered, and at the deadline the user is told.

It publishes nothing on the bus: its output is the answer in the chat, through the Bot API. On failure: an
answer that cannot go out now is retried (`Retry`, for as long as the stream keeps the note), one that never can
is closed (`Fail`), and a transcript whose note's events are not merged yet is held until they are, or until
the stream cannot hold them any more (a day), when it is rejected.
Whatever path answers, `answer.Answerer` owns the "exactly one answer" rule.
"""

from __future__ import annotations

import logging
import time

from aiogram import Bot

from formatter.answer import ANSWER_BACKOFF_CAP, Answerer
from formatter.join import JoinState, JoinStore
from formatter.marks import AnswerMarks
from formatter.progress import PROGRESS_INTERVAL
from formatter.queue import QUEUE_EVERY
from formatter.sending import NOTIFY_AFTER, Sender
from formatter.status import StatusMessage
from infra.bus import Bus, Delivery, Reject, Retry, consumes
from infra.bus.names import (
    CONSUMER_FORMATTER,
    CONSUMER_FORMATTER_DEADLINE,
    CONSUMER_FORMATTER_WATCHDOG,
    CONSUMER_FORMATTER_WATCHDOG_QUEUED,
    STREAM,
    SUBJECT_ALL,
    SUBJECT_AUDIO,
    SUBJECT_AUDIO_QUEUED,
    SUBJECT_TRANSCRIPT,
    USER_DATA_TTL,
)
from infra.domain.answers import FORGOTTEN, Sent
from infra.domain.chat_modes import telemetry_name
from infra.domain.contracts import AudioReceived, Event, Failure, Transcript, TranscriptionProgress
from infra.runtime.telemetry import step

log = logging.getLogger("voice_insight.formatter")

ORPHAN_AFTER = 600.0
"""A transcript whose note has no join state this long after its deadline is waited for with a warning each time."""
ORPHAN_PAUSE = 60.0
"""Longest pause between two looks for the join state of a transcript past its deadline."""


def overdue(cid: str) -> Failure:
    """The watchdog's own failure of a note, kept in its join state: answered by the watchdog alone."""
    return Failure(correlation_id=cid, stage="formatter", reason="overdue", detail="no transcript in time")


WATCH_EVERY = 600.0
"""How often the watchdog looks at a note not answered yet: most are answered before its first look, and are
let go then, so what it holds at once is about ten minutes of notes."""
WATCHED_AT_ONCE = 200_000
"""Notes the watchdog (and the join deadline) may hold back at once: ten minutes at over 300 notes a second."""


class FormatterService:
    def __init__(
        self,
        bus: Bus,
        bot: Bot,
        joins: JoinStore,
        marks: AnswerMarks,
        join_timeout: float,
        max_audio_seconds: float,
        answer_backoff_cap: float = ANSWER_BACKOFF_CAP,
        progress_interval: float = PROGRESS_INTERVAL,
        show_progress: bool = True,
        queue_every: float = QUEUE_EVERY,
        transcription_deadline: float = 6 * 3600.0,
        notify_after: float = NOTIFY_AFTER,
    ) -> None:
        self.bus = bus
        self.joins = joins
        self.marks = marks
        self.join_timeout = join_timeout
        self.transcription_deadline = transcription_deadline
        sender = Sender(bot, notify_after)
        self.status = StatusMessage(bus, marks, sender.show_progress, progress_interval, queue_every, show_progress)
        self.answerer = Answerer(bus, sender, joins, marks, self.status, max_audio_seconds, answer_backoff_cap)

    # Every event of every note; retried for as long as Telegram is away (capped backoff): never dropped.
    @consumes(SUBJECT_ALL, CONSUMER_FORMATTER, stage="answer", ack_wait=30.0, concurrency=8)
    async def on_event(self, event: Event, delivery: Delivery) -> None:
        cid = event.correlation_id
        if isinstance(mark := await self.marks.peek(cid), Sent):
            if mark == FORGOTTEN and delivery.seq:  # its chat said /forget, and nothing else of it is left
                await self.bus.delete_message(STREAM, delivery.seq)
            return  # a late or redelivered piece of a note that already has its answer
        if isinstance(event, TranscriptionProgress):
            self.status.taken(cid)  # a transcriber has the note: its place in the queue is of no interest
            known = await self.joins.merge(cid, event, delivery.seq)  # joined only as a place to erase
            self.status.transcribing(event, known)
            return
        state = await self.join(cid, event, delivery.seq)
        self.status.follow(event, state, delivery)
        if state.complete:
            await self.answerer.answer(cid, state, delivery)

    # Every transcript again, held back by delayed naks until its join deadline.
    @consumes(
        SUBJECT_TRANSCRIPT,
        CONSUMER_FORMATTER_DEADLINE,
        stage="answer",
        ack_wait=30.0,
        concurrency=8,
        max_ack_pending=WATCHED_AT_ONCE,
    )
    async def on_deadline(self, transcript: Transcript, delivery: Delivery) -> None:
        cid = transcript.correlation_id
        if await self.marks.is_sent(cid):
            return
        remaining = transcript.published_at + self.join_timeout - time.time()
        if remaining > 0:
            raise Retry(remaining, "join deadline not reached")
        state = await self.joins.get(cid)
        if state is None or state.origin is None or state.transcript is None:
            # The note's own events are not merged yet (the main consumer is behind, after an outage): wait for
            # them for as long as the stream keeps them, then give up knowingly (logged and counted as rejected).
            overdue = -remaining
            if time.time() > transcript.published_at + USER_DATA_TTL:
                raise Reject("join_state_missing")
            if overdue > ORPHAN_AFTER:
                log.warning("%s: no join state %.0f s past its deadline; waiting for the note's events", cid, overdue)
            raise Retry(min(ORPHAN_PAUSE, max(1.0, overdue / 10)), "join state not merged yet")
        log.warning(
            "%s: join deadline passed; missing %s",
            cid,
            ",".join(map(telemetry_name, state.missing_modes())) or "nothing",
        )
        await self.answerer.answer(cid, state, delivery)

    # Every note's audio again: its watchdog, until it is answered or its transcription deadline has passed.
    @consumes(
        SUBJECT_AUDIO,
        CONSUMER_FORMATTER_WATCHDOG,
        stage="answer",
        ack_wait=30.0,
        concurrency=8,
        max_ack_pending=WATCHED_AT_ONCE,
        then=("on_overdue_queued",),
    )
    async def on_overdue(self, note: AudioReceived, delivery: Delivery) -> None:
        cid = note.correlation_id
        if await self.marks.is_sent(cid):
            return
        due = note.transcript_due(self.transcription_deadline)
        if (remaining := due - time.time()) > 0:
            raise Retry(min(remaining, WATCH_EVERY), "transcription deadline not reached")
        state = await self.joins.get(cid)
        if state is not None and state.transcript is not None:
            return  # the join deadline has it
        if state is not None and state.failure is not None and state.failure != overdue(cid):
            return  # a stage failed the note: that failure's own answer (the main consumer's) has it
        if (state is None or state.failure is None) and await self.unmerged_before(due):
            # The main consumer has not been handed everything from before the deadline (an outage of the
            # formatters): the transcript may be among it. Not "overdue" before it has been looked at.
            raise Retry(ORPHAN_PAUSE, "the note's events are not all merged yet")
        # Ours to answer, now or on the next look if this answer cannot go out yet: the failure kept in the state
        # is the watchdog's own, which nobody else answers.
        log.warning("%s: no transcript %.0f s after the note arrived; telling the user", cid, -remaining)
        if state is None or state.origin is None:
            await self.joins.merge(cid, note, delivery.seq)
        await self.answerer.answer(cid, await self.joins.merge(cid, overdue(cid)), delivery)

    @consumes(
        SUBJECT_AUDIO_QUEUED,
        CONSUMER_FORMATTER_WATCHDOG_QUEUED,
        stage="answer",
        ack_wait=30.0,
        max_ack_pending=WATCHED_AT_ONCE,
    )
    async def on_overdue_queued(self, note: AudioReceived, delivery: Delivery) -> None:
        """The watchdog of the notes past their sender's fair share, which wait on a subject of their own."""
        await self.on_overdue(note, delivery)

    async def unmerged_before(self, moment: float) -> bool:
        """Whether events stored before `moment` still wait for the main consumer."""
        oldest = await self.bus.oldest_waiting(CONSUMER_FORMATTER, SUBJECT_ALL)
        return oldest is not None and oldest < moment

    async def join(self, cid: str, event: Event, seq: int) -> JoinState:
        """Merge the event into everything known about its note (`formatter.join`)."""
        with step("join") as span:
            state = await self.joins.merge(cid, event, seq)
            span.set_attributes(
                {
                    "voice_insight.join.modes_expected": len(state.modes),
                    "voice_insight.join.analyses_in": len(state.analyses),
                    "voice_insight.join.has_transcript": state.transcript is not None,
                    "voice_insight.join.complete": state.complete,
                }
            )
        return state
