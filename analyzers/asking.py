"""The asker: a question about a recording, posed with the note's transcript (`asker.question`), in; its answer
(`ask.answer`) out, for the formatter to send. Any number of askers share one durable (`asker`).

It reads no stored note: the formatter, which keeps the notes, finds the note asked about and poses the
question with its transcript and the conversation so far, as analyzers get transcripts. The transcript is data to
the model, never instructions (`analyzers.questions`). Past today's token budget the question is told so
(`budget`); an LLM that fails on every attempt, that it could not answer now (`failed`). The model is the
deployment's `ASK_MODEL`, else the DEFAULT mode's current one.
"""

from __future__ import annotations

import logging
import time

from analyzers.budget import TokenBudget
from analyzers.llm import ChatLLM, LLMFailure
from analyzers.questions import (
    MAX_ANSWER_TOKENS,
    SYSTEM_PROMPT,
    TEMPERATURE,
    Reply,
    excerpt,
    messages_for,
    seconds_of,
    timed_lines,
)
from analyzers.service import clean
from infra.bus import Bus, Delivery, Fail, consumes
from infra.bus.names import (
    BUCKET_ANSWERED,
    CONSUMER_ASKER,
    STREAM_ASK,
    STREAM_ASKER,
    SUBJECT_ANSWER,
    SUBJECT_POSED,
)
from infra.domain.answers import Sent, read_mark
from infra.domain.contracts import AskRefusal, QuestionAnswered, QuestionPosed, Usage
from infra.domain.registry import ModeRegistry
from infra.runtime.metrics import LIMITED, TOKENS

log = logging.getLogger("voice_insight.asker")

QUESTION_DEADLINE = 900.0
"""Seconds a question may wait for an asker (all of them down, a backlog) before it is told to ask again."""
FALLBACK_MODEL = "gpt-4o-mini"
"""Only when neither `ASK_MODEL` nor the DEFAULT mode names one (a registry not readable at the first question)."""
TOKENS_LABEL = "questions"
"""The `mode` label questions' tokens are counted under: not a mode, so no mode's name."""


class AskerService:
    def __init__(self, bus: Bus, llm: ChatLLM, registry: ModeRegistry, model: str = "", daily_tokens: int = 0) -> None:
        self.bus = bus
        self.llm = llm
        self.registry = registry
        self.model = model
        """`ASK_MODEL`; empty: the DEFAULT mode's."""
        self.budget = TokenBudget(bus, daily_tokens)
        self._default_model = FALLBACK_MODEL

    async def model_now(self) -> str:
        if self.model:
            return self.model
        try:
            self._default_model = (await self.registry.get("DEFAULT")).definition.model
        except Exception as exc:  # the last one known
            log.warning(
                "the DEFAULT mode's model not readable (%s); asking %s", type(exc).__name__, self._default_model
            )
        return self._default_model

    @consumes(
        SUBJECT_POSED,
        CONSUMER_ASKER,
        stage="ask",
        stream=STREAM_ASKER,
        ack_wait=60.0,
        max_attempts=3,
        concurrency=8,
        give_up="give_up",
    )
    async def handle(self, posed: QuestionPosed, delivery: Delivery) -> None:
        if not await self.still_wanted(posed.correlation_id, posed.asked_at, QUESTION_DEADLINE):
            return
        model = await self.model_now()
        transcript = posed.transcript
        lines = excerpt(timed_lines(transcript.segments, transcript.text), posed.question)
        try:
            done = await self.llm.complete(
                model=model,
                system=SYSTEM_PROMPT,
                user=messages_for(lines, posed.turns, posed.question),
                max_tokens=MAX_ANSWER_TOKENS,
                temperature=TEMPERATURE,
                timeout=self.llm.timeout_for(25.0),
                result_type=Reply,
            )
        except LLMFailure as failure:
            log.warning("%s: the question was not answered: %s", posed.correlation_id, failure.reason)
            raise Fail(failure.reason) from None
        await self.spend(done.usage, done.model)
        reply = done.parsed if isinstance(done.parsed, Reply) else Reply(found=True, answer=done.content, at=[])
        answer = QuestionAnswered(
            correlation_id=posed.correlation_id,
            chat_key=posed.chat_key,
            reply=posed.reply,
            note=posed.note,
            question=posed.question,
            answer=clean(reply.answer),
            found=reply.found,
            at=moments(reply.at, transcript.duration),
            turns=posed.turns,
            model=done.model,
            usage=done.usage,
            latency=round(done.latency, 3),
            asked_at=posed.asked_at,
        )
        log.info("%s: answered in %.2fs", posed.correlation_id, done.latency)
        await self.publish(answer)

    async def still_wanted(self, cid: str, asked_at: float, deadline: float) -> bool:
        """Whether the request is to be answered now: not if its answer is out already (a redelivery); `Fail` if it
        waited past `deadline` for an asker (told to ask again, not answered hours on) or today's budget is spent."""
        answered, _ = await read_mark(await self.bus.kv(BUCKET_ANSWERED), cid)
        if isinstance(answered, Sent):
            return False
        if asked_at and time.time() - asked_at > deadline:
            raise Fail("late")
        if await self.over_budget():
            LIMITED.labels("budget").inc()
            raise Fail("budget")
        return True

    async def over_budget(self) -> bool:
        return await self.budget.used_up()

    async def spend(self, usage: Usage, model: str, label: str = TOKENS_LABEL) -> None:
        """Tokens counted (`label`: questions or digests, never a mode's name) and taken from today's budget."""
        TOKENS.labels(label, model, "input").inc(usage.input_tokens)
        TOKENS.labels(label, model, "output").inc(usage.output_tokens)
        await self.budget.spend(usage)

    async def give_up(self, posed: QuestionPosed, exc: BaseException) -> None:
        """No answer this time: the user hears why at once, rather than nothing."""
        why: AskRefusal = "budget" if isinstance(exc, Fail) and exc.reason == "budget" else "failed"
        log.info("%s: no answer (%s)", posed.correlation_id, why)
        refusal = QuestionAnswered(
            correlation_id=posed.correlation_id,
            chat_key=posed.chat_key,
            reply=posed.reply,
            note=posed.note,
            question=posed.question,
            refusal=why,
            asked_at=posed.asked_at,
        )
        await self.publish(refusal)

    async def publish(self, answer: QuestionAnswered) -> None:
        await self.bus.publish(SUBJECT_ANSWER, answer, msg_id=f"{answer.correlation_id}.answer", stream=STREAM_ASK)


def moments(marks: list[str], duration: float) -> tuple[float, ...]:
    """The moments the model named that lie in the recording, in order, each once."""
    found = {s for m in marks if (s := seconds_of(m)) is not None and 0 <= s <= (duration or float("inf"))}
    return tuple(sorted(found))[:3]
