"""The formatter's two subscribers.

* `on_event` (every `voice.>` event): merge it into the join; when the note is complete, answer.
* `on_deadline` (every transcript, on its own consumer): hold the transcript until `JOIN_TIMEOUT` after it was
  published (a delayed nak, so the timer lives in JetStream and survives restarts), then answer with whatever
  is there and a note naming what is missing.

Either path goes through `finish`, which owns the "exactly one answer" rule: claim the answered mark, edit the
status message into the answer, mark it sent, then drop the user's data.
"""

from __future__ import annotations

import logging
import time

import nats.js.errors
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
from aiogram.types import ReplyParameters

from formatter.join import AnswerMarks, JoinState, JoinStore
from formatter.render import render_answer, render_failure
from infra.bus import Bus, Delivery, Retry
from infra.contracts import Event, Origin, Transcript
from infra.metrics import ANSWERS, ERRORS, PROCESSED, STAGE_SECONDS
from infra.telemetry import record_failure, tracer

log = logging.getLogger("voice_insight.formatter")


class FormatterService:
    def __init__(
        self,
        bus: Bus,
        bot: Bot,
        joins: JoinStore,
        marks: AnswerMarks,
        join_timeout: float,
        max_audio_seconds: float,
    ) -> None:
        self.bus = bus
        self.bot = bot
        self.joins = joins
        self.marks = marks
        self.join_timeout = join_timeout
        self.max_audio_seconds = max_audio_seconds

    async def on_event(self, event: Event, delivery: Delivery) -> None:
        cid = event.correlation_id
        if await self.marks.is_sent(cid):
            return  # late or redelivered piece of a note that already has its answer
        with tracer().start_as_current_span("join") as span:
            state = await self.joins.merge(cid, event)
            span.set_attributes({
                "voice_insight.join.modes_expected": len(state.modes),
                "voice_insight.join.analyses_in": len(state.analyses),
                "voice_insight.join.has_transcript": state.transcript is not None,
                "voice_insight.join.complete": state.complete,
            })
        if state.complete:
            await self.finish(cid, state)

    async def on_deadline(self, transcript: Transcript, delivery: Delivery) -> None:
        cid = transcript.correlation_id
        if await self.marks.is_sent(cid):
            return
        remaining = transcript.published_at + self.join_timeout - time.time()
        if remaining > 0:
            raise Retry(remaining, "join deadline not reached")
        state = await self.joins.get(cid)
        if state is None or state.origin is None or state.transcript is None:
            raise Retry(1.0, "join state not merged yet")
        log.warning("%s: join deadline passed; missing %s", cid, ",".join(state.missing_modes()) or "nothing")
        await self.finish(cid, state)

    async def finish(self, cid: str, state: JoinState) -> None:
        if not await self.marks.claim(cid):
            return
        assert state.origin is not None
        kind = "failure" if state.failed else ("partial" if state.missing_modes() else "complete")
        started = time.perf_counter()
        with tracer().start_as_current_span("reply", attributes={"voice_insight.answer.kind": kind}) as span:
            try:
                if state.failed:
                    assert state.failure is not None
                    messages = [render_failure(state.failure.reason, state.origin.ui_language, self.max_audio_seconds)]
                else:
                    messages = render_answer(state)
                span.set_attribute("voice_insight.answer.messages", len(messages))
                await self.deliver(state.origin, messages)
            except TelegramForbiddenError:
                log.warning("%s: the user blocked the bot; no answer possible", cid)
                ERRORS.labels("reply", "", "bot_blocked").inc()
            except TelegramRetryAfter as exc:
                record_failure(span, exc)
                ERRORS.labels("reply", "", "flood_control").inc()
                await self.marks.release(cid)
                raise Retry(float(exc.retry_after), "Telegram flood control") from exc
            except BaseException as exc:
                record_failure(span, exc)
                ERRORS.labels("reply", "", type(exc).__name__).inc()
                await self.marks.release(cid)
                raise
        await self.marks.mark_sent(cid)
        now = time.time()
        STAGE_SECONDS.labels("reply", "").observe(time.perf_counter() - started)
        if state.transcript is not None:
            STAGE_SECONDS.labels("join", "").observe(max(0.0, now - state.transcript.published_at))
        if state.received_at is not None:
            STAGE_SECONDS.labels("end_to_end", "").observe(max(0.0, now - state.received_at))
        ANSWERS.labels(kind).inc()
        PROCESSED.labels("reply", "").inc()
        log.info("%s: answered (%s)", cid, kind)
        await self._forget(cid, state)

    async def deliver(self, origin: Origin, messages: list[str]) -> None:
        """The first message replaces the status message; the rest follow as replies to the voice note."""
        try:
            await self.bot.edit_message_text(
                text=messages[0], chat_id=origin.chat_id, message_id=origin.status_message_id
            )
        except TelegramBadRequest as exc:
            if "message is not modified" in exc.message:
                pass  # a retry after an edit that did land
            elif "message to edit not found" in exc.message or "can't be edited" in exc.message:
                await self._send(origin, messages[0])  # the user deleted the status message
            else:
                raise
        for message in messages[1:]:
            await self._send(origin, message)

    async def _send(self, origin: Origin, message: str) -> None:
        await self.bot.send_message(
            chat_id=origin.chat_id,
            text=message,
            reply_parameters=ReplyParameters(message_id=origin.message_id, allow_sending_without_reply=True),
        )

    async def _forget(self, cid: str, state: JoinState) -> None:
        """The user has the answer: their audio and transcript need not wait for the 24 h TTL."""
        try:
            await self.joins.forget(cid)
            if state.object_name:
                store = await self.bus.audio_store()
                await store.delete(state.object_name)
        except nats.js.errors.NotFoundError:
            pass
        except Exception as exc:
            log.warning("%s: early clean-up failed (%s); the TTL will remove it", cid, type(exc).__name__)
