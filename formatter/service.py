"""The formatter's two subscribers.

* `on_event` (every `voice.>` event): merge it into the join; when the note is complete, answer.
* `on_deadline` (every transcript, on its own consumer): hold the transcript until `JOIN_TIMEOUT` after it was
  published (a delayed nak, so the timer lives in JetStream and survives restarts), then answer with whatever
  is there and a note naming what is missing.

Either path goes through `finish`, which owns the "exactly one answer" rule: claim the answered mark, edit the
status message into the answer (and send any further parts, each recorded as it goes), mark it sent, then drop
the user's data. Failures are sorted: Telegram away or flood control means "later" (capped backoff, for as long
as the stream keeps the note); a chat that is gone or a bot that is blocked means "never" (counted, logged, the
note closed).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import nats.js.errors
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup, ReplyParameters
from opentelemetry.trace import Span, Status, StatusCode

from formatter.join import AlreadySent, AnswerMarks, ClaimLost, HeldElsewhere, JoinState, JoinStore, Owned
from formatter.progress import PROGRESS_INTERVAL, Progress
from formatter.queue import QUEUE_EVERY, QueueWatch
from formatter.render import Attachment, Part, render_answer, render_failure, transcribing
from infra.bus import Bus, Delivery, Fail, Reject, Retry, backoff, consumes
from infra.bus.names import (
    BUCKET_QUOTA,
    CONSUMER_FORMATTER,
    CONSUMER_FORMATTER_DEADLINE,
    SUBJECT_ALL,
    SUBJECT_TRANSCRIPT,
)
from infra.domain.contracts import Analysis, AudioReceived, Event, Origin, Transcript, TranscriptionProgress
from infra.domain.limits import DailyCounter, note_finished
from infra.domain.modes import live_modes
from infra.domain.notes import NoteStore, StoredNote
from infra.runtime.metrics import ANSWERS, RENDER_FAILURES, STAGE_SECONDS
from infra.runtime.telemetry import record_failure, tracer
from infra.voice.buttons import answer_keyboard

log = logging.getLogger("voice_insight.formatter")

ANSWER_BACKOFF_CAP = 60.0
"""Longest pause between two tries of an answer while Telegram is unreachable."""
MAX_MODE_BUTTONS = 8
"""Buttons for modes the note did not get, at most (Telegram shows a keyboard of 100, people read far fewer)."""
ORPHAN_AFTER = 600.0
"""A transcript whose note never got join state this long after its deadline has nobody to answer."""

# The Bot API's "never" (retrying cannot help): blocked by the user, chat gone, a request Telegram refuses.
# TelegramBadRequest "message is not modified" and "message to edit not found" are handled before this.
PERMANENT = (
    TelegramForbiddenError,
    TelegramBadRequest,
    TelegramNotFound,
    TelegramEntityTooLarge,
    TelegramMigrateToChat,
)


def _permanent_reason(exc: BaseException) -> str:
    if isinstance(exc, TelegramForbiddenError):
        return "bot_blocked"
    if isinstance(exc, TelegramMigrateToChat):
        return "chat_migrated"
    message = getattr(exc, "message", "").lower()
    if "chat not found" in message:
        return "chat_not_found"
    if "parse entities" in message:
        return "bad_markup"
    return "bad_request"


_BOUNDED = re.compile(r"[a-z0-9_]{1,40}")


def say_why(span: Span, kind: str, state: JoinState) -> None:
    """Make a failed or partial answer findable in Jaeger by one tag (`voice_insight.answer.degraded=true`), its span
    failed, and an event saying why: the stage and reason that failed the note, or the modes missing and their
    errors. Names and reason codes only: nothing the user said, nothing an analyzer wrote."""
    why: dict[str, str]
    if state.failure is not None and kind == "failure":
        why = {"voice_insight.failure.stage": state.failure.stage, "voice_insight.failure.reason": state.failure.reason}
        status = f"failure: {state.failure.stage} {state.failure.reason}"
    else:
        missing = state.missing_modes()
        errors = [
            f"{m}:{e if _BOUNDED.fullmatch(e := (state.analyses[m].error or '')) else 'other'}"
            if m in state.analyses
            else f"{m}:no_answer"
            for m in missing
        ]
        why = {"voice_insight.modes.missing": ",".join(missing), "voice_insight.modes.errors": ",".join(errors)}
        status = f"partial: {','.join(errors)}"
    span.set_attribute("voice_insight.answer.degraded", True)
    span.add_event(f"answer {kind}", attributes=why)
    span.set_status(Status(StatusCode.ERROR, status))


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
    ) -> None:
        self.bus = bus
        self.bot = bot
        self.joins = joins
        self.marks = marks
        self.join_timeout = join_timeout
        self.max_audio_seconds = max_audio_seconds
        self.answer_backoff_cap = answer_backoff_cap
        self.progress = Progress(marks, self._edit_status, progress_interval)
        self.show_progress = show_progress
        self.queue = QueueWatch(bus, self.progress, queue_every)

    # Every event of every note; retried for as long as Telegram is away (capped backoff): never dropped.
    @consumes(SUBJECT_ALL, CONSUMER_FORMATTER, stage="answer", ack_wait=30.0, concurrency=8)
    async def on_event(self, event: Event, delivery: Delivery) -> None:
        cid = event.correlation_id
        if await self.marks.is_sent(cid):
            return  # late or redelivered piece of a note that already has its answer
        if isinstance(event, TranscriptionProgress):  # for the status message; joined only as a place to erase
            self.queue.taken(cid)
            known = await self.joins.merge(cid, event, delivery.seq)
            if self.show_progress and known.origin is not None and known.transcript is None:
                self.progress.say(cid, known.origin, transcribing(event, known.origin.ui_language))
            return
        with tracer().start_as_current_span("join") as span:
            state = await self.joins.merge(cid, event, delivery.seq)
            span.set_attributes(
                {
                    "voice_insight.join.modes_expected": len(state.modes),
                    "voice_insight.join.analyses_in": len(state.analyses),
                    "voice_insight.join.has_transcript": state.transcript is not None,
                    "voice_insight.join.complete": state.complete,
                }
            )
        if isinstance(event, Transcript):
            self.queue.observe(event.transcribe_seconds)
            self.queue.taken(cid)
        if state.complete:
            await self.finish(cid, state, delivery)
        elif not self.show_progress:
            return
        elif isinstance(event, Transcript | Analysis):
            self.progress.show(cid, state)
        elif isinstance(event, AudioReceived) and state.transcript is None and not state.failed:
            self.queue.watch(cid, event.origin, delivery.subject, delivery.seq)

    # Every transcript again, held back by delayed naks until its join deadline.
    @consumes(SUBJECT_TRANSCRIPT, CONSUMER_FORMATTER_DEADLINE, stage="answer", ack_wait=30.0, concurrency=8)
    async def on_deadline(self, transcript: Transcript, delivery: Delivery) -> None:
        cid = transcript.correlation_id
        if await self.marks.is_sent(cid):
            return
        remaining = transcript.published_at + self.join_timeout - time.time()
        if remaining > 0:
            raise Retry(remaining, "join deadline not reached")
        state = await self.joins.get(cid)
        if state is None or state.origin is None or state.transcript is None:
            if -remaining > ORPHAN_AFTER:
                raise Reject("join_state_missing")  # its audio event never reached a formatter: nobody to answer
            raise Retry(1.0, "join state not merged yet")
        log.warning("%s: join deadline passed; missing %s", cid, ",".join(state.missing_modes()) or "nothing")
        await self.finish(cid, state, delivery)

    async def finish(self, cid: str, state: JoinState, delivery: Delivery) -> None:
        """Claim the answer, send what is still unsent of it, mark it sent; see `AnswerMarks` for the rules."""
        self.progress.forget(cid)  # progress not shown yet is overtaken by the answer itself
        claim = await self.marks.claim(cid)
        match claim:
            case AlreadySent():
                return
            case HeldElsewhere(retry_in=wait):
                raise Retry(wait, "another formatter holds the answer")
        assert isinstance(claim, Owned) and state.origin is not None
        kind = "failure" if state.failed else ("partial" if state.missing_modes() else "complete")
        started = time.perf_counter()
        with tracer().start_as_current_span("reply", attributes={"voice_insight.answer.kind": kind}) as span:
            if kind != "complete":
                say_why(span, kind, state)
            parts = self.render(cid, state)
            keyboard = await self.keep_for_buttons(cid, state) if not state.failed else None
            span.set_attribute("voice_insight.answer.messages", len(parts))
            heartbeat = asyncio.create_task(claim.keep_alive(self.marks.lease / 3))
            try:
                await self.deliver(claim, state.origin, parts, keyboard)
            except ClaimLost:
                log.warning("%s: another formatter took the answer over; stepping back", cid)
                raise Retry(self.marks.lease, "claim lost") from None
            except PERMANENT as exc:
                record_failure(span, exc)
                reason = _permanent_reason(exc)
                log.warning("%s: the answer cannot be delivered (%s); giving up", cid, reason)
                await claim.done("undeliverable")
                await self._forget(cid, state)
                raise Fail(reason) from None
            except TelegramRetryAfter as exc:
                record_failure(span, exc)
                await claim.release()
                raise Retry(float(exc.retry_after), "Telegram flood control", error="flood_control") from None
            except (TimeoutError, TelegramNetworkError, TelegramServerError, TelegramUnauthorizedError) as exc:
                # Telegram away (outage, restart, network): keep the answer and try again, backing off up to
                # a minute, for as long as the stream keeps the note.
                record_failure(span, exc)
                await claim.release()
                delay = backoff(delivery.attempt, cap=self.answer_backoff_cap)
                raise Retry(delay, "Telegram unavailable", error="telegram_unavailable") from None
            except BaseException as exc:
                record_failure(span, exc)
                await claim.release()
                raise
            finally:
                heartbeat.cancel()
        await claim.done()
        now = time.time()
        STAGE_SECONDS.labels("reply", "").observe(time.perf_counter() - started)
        if state.transcript is not None:
            STAGE_SECONDS.labels("join", "").observe(max(0.0, now - state.transcript.published_at))
        if state.received_at is not None:
            STAGE_SECONDS.labels("end_to_end", "").observe(max(0.0, now - state.received_at))
        ANSWERS.labels(kind).inc()
        self.progress.forget(cid)
        self.queue.taken(cid)
        log.info("%s: answered (%s)", cid, kind)
        await self._forget(cid, state)

    async def keep_for_buttons(self, cid: str, state: JoinState) -> InlineKeyboardMarkup | None:
        """Keep the answered note for a day (its buttons need its transcript) and build the buttons: the
        transcript as files, and every live mode the note did not get. Without the note kept, no buttons: a
        button must never promise what cannot be done."""
        assert state.origin is not None and state.transcript is not None
        lang = state.origin.ui_language
        ran = tuple(m for m, a in state.analyses.items() if a.error is None)
        try:
            offered = [m for m in await live_modes(self.bus) if m.mode not in ran][:MAX_MODE_BUTTONS]
            chat = state.origin.chat_key
            if chat is None:
                return None
            note = StoredNote(
                origin=state.origin,
                transcript=state.transcript,
                modes_run=ran,
                offered=tuple(m.mode for m in offered),
                fingerprint=state.fingerprint,
                user_key=state.user_key,
                seqs=state.seqs,
            )
            await NoteStore(self.bus).put(chat, cid, note)
        except Exception as exc:  # the answer matters more than its buttons
            log.warning("%s: note not kept for its buttons (%s)", cid, type(exc).__name__)
            return None
        return answer_keyboard(cid, [(m.mode, m.titles.get(lang) or m.title) for m in offered], lang)

    def render(self, cid: str, state: JoinState) -> list[Part]:
        """The answer's messages. A rendering bug must not leave the user waiting: they get an apology instead."""
        assert state.origin is not None
        lang = state.origin.ui_language
        try:
            if state.failed:
                assert state.failure is not None
                return [render_failure(state.failure.reason, lang, self.max_audio_seconds)]
            return render_answer(state)
        except Exception as exc:
            log.error("%s: rendering failed (%s); answering with an apology", cid, type(exc).__name__)
            RENDER_FAILURES.inc()
            return [render_failure("internal", lang, self.max_audio_seconds)]

    async def deliver(
        self, claim: Owned, origin: Origin, parts: list[Part], keyboard: InlineKeyboardMarkup | None = None
    ) -> None:
        """The first message replaces the status message (with the buttons under it); files and further
        messages follow as replies to the voice note, in its topic.

        Each part is recorded in the claim before the next one goes, so a retry or a takeover resumes after the
        last part the user already has: exactly one copy of every part.
        """
        for index in range(claim.parts_sent, len(parts)):
            part = parts[index]
            if isinstance(part, Attachment):
                await self._send_file(origin, part)
            elif index == 0:
                await self._edit_status(origin, part, keyboard)
            else:
                await self._send(origin, part)
            await claim.advance(index + 1)

    async def _edit_status(self, origin: Origin, message: str, keyboard: InlineKeyboardMarkup | None = None) -> None:
        try:
            await self.bot.edit_message_text(
                text=message, chat_id=origin.chat_id, message_id=origin.status_message_id, reply_markup=keyboard
            )
        except TelegramBadRequest as exc:
            if "message is not modified" in exc.message:
                return  # a retry after an edit that did land
            if "message to edit not found" in exc.message or "can't be edited" in exc.message:
                await self._send(origin, message, keyboard)  # the user deleted the status message
                return
            raise

    async def _send(self, origin: Origin, message: str, keyboard: InlineKeyboardMarkup | None = None) -> None:
        await self.bot.send_message(
            chat_id=origin.chat_id,
            text=message,
            message_thread_id=origin.thread_id,
            reply_parameters=ReplyParameters(message_id=origin.message_id, allow_sending_without_reply=True),
            reply_markup=keyboard,
        )

    async def _send_file(self, origin: Origin, file: Attachment) -> None:
        await self.bot.send_document(
            chat_id=origin.chat_id,
            document=BufferedInputFile(file.content, filename=file.name),
            caption=file.caption or None,
            message_thread_id=origin.thread_id,
            reply_parameters=ReplyParameters(message_id=origin.message_id, allow_sending_without_reply=True),
        )

    async def _forget(self, cid: str, state: JoinState) -> None:
        """The user has the answer: their audio and transcript need not wait for the 24 h TTL.

        The note also stops counting against its sender's notes in flight, and its minutes count against
        their day.
        """
        try:
            await note_finished(self.bus, cid)
            if state.user_key and state.transcript is not None:
                await DailyCounter(await self.bus.kv(BUCKET_QUOTA)).add(state.user_key, state.transcript.duration)
        except Exception as exc:
            log.warning(
                "%s: limits not updated (%s); the in-flight mark expires within the hour", cid, type(exc).__name__
            )
        try:
            await self.joins.forget(cid)
            if state.object_name:
                store = await self.bus.audio_store()
                await store.delete(state.object_name)
        except nats.js.errors.NotFoundError:
            pass
        except Exception as exc:
            log.warning("%s: early clean-up failed (%s); the TTL will remove it", cid, type(exc).__name__)
