"""One note's answer, in the order it happens:

1. claim the answered mark (`formatter.marks`): answered already, nothing to do; held by another formatter,
   try again later;
2. render the answer (an apology if rendering fails) and keep the note for its buttons (`formatter.buttons`), or,
   failed, where it lies (for `/forget`), or nothing if its chat said `/forget` since (`formatter.forget.keep`);
3. send what the user does not have yet, part by part (`formatter.sending`), the claim kept alive meanwhile;
4. mark it sent, count it, and drop the user's data (`formatter.cleanup`): all of it, if its chat said `/forget`
   while it was in flight (`formatter.forget.forget_if_asked`).

A failure on the way out is sorted once, here: Telegram away or flood control means "later" (the claim released,
a `Retry` with capped backoff, for as long as the stream keeps the note); a chat that is gone or a bot that is
blocked means "never" (the note closed as undeliverable, a `Fail`); a claim lost to another formatter means that
one answers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import NoReturn, assert_never

import msgspec
from aiogram.exceptions import TelegramRetryAfter
from opentelemetry.trace import Span, Status, StatusCode

from formatter.cleanup import forget
from formatter.forget import forget_if_asked, keep
from formatter.join import JoinState, JoinStore
from formatter.marks import BRIEF_WAIT, AlreadySent, AnswerMarks, ClaimLost, HeldElsewhere, Owned
from formatter.render import Part, render_answer, render_failure
from formatter.replies import file_answer
from formatter.sending import Sender, away, permanent_reason
from formatter.status import StatusMessage
from infra.bus import Bus, Delivery, Fail, Retry, backoff
from infra.domain.chat_modes import telemetry_name
from infra.runtime.metrics import ANSWERS, RENDER_FAILURES, observe_stage
from infra.runtime.telemetry import record_failure, step
from infra.voice.telegram import TELEGRAM_PERMANENT

log = logging.getLogger("voice_insight.formatter")

REFUSED_ANSWER = frozenset({"bad_request", "bad_markup"})
"""Permanent failures of the answer itself, not of the chat (blocked, gone, migrated): an apology can still go."""
BRIEF_LOOKS = 12
"""Looks at a mark a progress edit holds before the answer is left for a redelivery: six seconds, past an edit's
five of patience."""
ANSWER_BACKOFF_CAP = 60.0
"""Longest pause between two tries of an answer while Telegram is unreachable."""

_BOUNDED = re.compile(r"[a-z0-9_]{1,40}")


def answer_kind(state: JoinState) -> str:
    """`failure` (the note failed), `partial` (modes missing at the deadline) or `complete`."""
    return "failure" if state.failed else ("partial" if state.missing_modes() else "complete")


def promised(state: JoinState, shown: tuple[str, ...] | None) -> JoinState:
    """The note as its answer was begun: with the analyses it was first rendered with (`shown`), not those that
    landed since, so the parts still to send are the ones that follow those already out."""
    if shown is None:
        return state
    return msgspec.structs.replace(state, analyses={m: a for m, a in state.analyses.items() if m in shown})


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
            f"{telemetry_name(m)}:{e if _BOUNDED.fullmatch(e := (state.analyses[m].error or '')) else 'other'}"
            if m in state.analyses
            else f"{telemetry_name(m)}:no_answer"
            for m in missing
        ]
        missing = [telemetry_name(m) for m in missing]  # a chat's own mode by what it is, not by the chat's words
        why = {"voice_insight.modes.missing": ",".join(missing), "voice_insight.modes.errors": ",".join(errors)}
        status = f"partial: {','.join(errors)}"
    span.set_attribute("voice_insight.answer.degraded", True)
    span.add_event(f"answer {kind}", attributes=why)
    span.set_status(Status(StatusCode.ERROR, status))


class Answerer:
    def __init__(
        self,
        bus: Bus,
        sender: Sender,
        joins: JoinStore,
        marks: AnswerMarks,
        status: StatusMessage,
        max_audio_seconds: float,
        backoff_cap: float = ANSWER_BACKOFF_CAP,
    ) -> None:
        self.bus = bus
        self.sender = sender
        self.joins = joins
        self.marks = marks
        self.status = status
        self.max_audio_seconds = max_audio_seconds
        self.backoff_cap = backoff_cap

    async def answer(self, cid: str, state: JoinState, delivery: Delivery) -> None:
        self.status.answering(cid)
        claim = await self.claim(cid)
        if claim is None:
            return
        state = promised(state, claim.shown)
        assert state.origin is not None
        kind = answer_kind(state)
        started = time.perf_counter()
        with step("reply", attributes={"voice_insight.answer.kind": kind}) as span:
            if kind != "complete":
                say_why(span, kind, state)
            parts = self.render(cid, state)
            keyboard = await keep(self.bus, cid, state)
            span.set_attribute("voice_insight.answer.messages", len(parts))
            heartbeat = asyncio.create_task(claim.keep_alive(self.marks.lease / 3))
            try:
                shown = tuple(sorted(state.analyses))
                messages = await self.sender.deliver(claim, state.origin, parts, keyboard, shown, state.received_at)
            except BaseException as exc:
                await self.settle_failure(claim, cid, state, delivery, span, exc)
            finally:
                heartbeat.cancel()
        await claim.done()
        await file_answer(self.bus, cid, state, messages)
        observe_stage("reply", time.perf_counter() - started)
        self.measure(state, kind)
        self.status.answered(cid)
        log.info("%s: answered (%s)", cid, kind)
        erased = await forget_if_asked(self.bus, self.joins, cid, state)
        await forget(self.bus, self.joins, cid, state, erased=erased)

    async def claim(self, cid: str) -> Owned | None:
        """Ours to answer; None: answered already. Held by another formatter: later. Held by a progress edit (a
        brief hold, milliseconds but for flood control): waited for here, up to the edit's own patience, rather
        than redelivered."""
        for _ in range(BRIEF_LOOKS):
            match await self.marks.claim(cid):
                case AlreadySent():
                    return None
                case HeldElsewhere(retry_in=wait) if wait <= BRIEF_WAIT:
                    await asyncio.sleep(wait)
                case HeldElsewhere(retry_in=wait):
                    raise Retry(wait, "another formatter holds the answer")
                case Owned() as owned:
                    return owned
                case unexpected:
                    assert_never(unexpected)
        raise Retry(BRIEF_WAIT, "a progress edit holds the answer")

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

    async def settle_failure(
        self, claim: Owned, cid: str, state: JoinState, delivery: Delivery, span: Span, exc: BaseException
    ) -> NoReturn:
        """Sort a failure to deliver (this module's docstring) and raise its outcome: `Retry` for "later", `Fail`
        for "never", the failure itself (the claim released) for anything unforeseen."""
        if isinstance(exc, ClaimLost):
            log.warning("%s: another formatter took the answer over; stepping back", cid)
            raise Retry(self.marks.lease, "claim lost") from None
        record_failure(span, exc)
        if isinstance(exc, TELEGRAM_PERMANENT):
            reason = permanent_reason(exc)
            log.warning("%s: the answer cannot be delivered (%s); giving up", cid, reason)
            if reason in REFUSED_ANSWER:
                await self.apologise(claim, cid, state)
            await claim.done("undeliverable")
            erased = await forget_if_asked(self.bus, self.joins, cid, state)
            await forget(self.bus, self.joins, cid, state, erased=erased)
            raise Fail(reason) from None
        await claim.release()
        if isinstance(exc, TelegramRetryAfter):
            raise Retry(float(exc.retry_after), "Telegram flood control", error="flood_control") from None
        if away(exc):
            delay = backoff(delivery.attempt, cap=self.backoff_cap)
            raise Retry(delay, "Telegram unavailable", error="telegram_unavailable") from None
        raise exc

    async def apologise(self, claim: Owned, cid: str, state: JoinState) -> None:
        """Telegram took the chat but not this answer: the status message says so, rather than "Listening…" for
        good (or, when the answer's first parts are out or the note waited long, a message after them, the status
        gone). Best effort: the note is closed either way."""
        assert state.origin is not None
        apology = render_failure("internal", state.origin.ui_language, self.max_audio_seconds)
        try:
            if claim.parts_sent == 0 and not self.sender.pings(claim, state.received_at):
                await self.sender.edit_status(state.origin, apology)
            else:
                await self.sender.send(state.origin, apology)
                if claim.parts_sent == 0 or claim.pinged:
                    await self.sender.drop_status(state.origin)
        except Exception as exc:
            log.warning("%s: the apology could not be sent either (%s)", cid, type(exc).__name__)

    @staticmethod
    def measure(state: JoinState, kind: str) -> None:
        now = time.time()
        if state.transcript is not None:
            observe_stage("join", now - state.transcript.published_at)
        if state.received_at is not None:
            observe_stage("end_to_end", now - state.received_at)
        ANSWERS.labels(kind).inc()
