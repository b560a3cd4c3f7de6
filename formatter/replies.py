"""Questions about a recording, the formatter's last part: the answer goes out once, as a reply to the question,
and the bot's messages are filed as threads (`infra.domain.threads`) so a reply to any of them asks about its note.

`QuestionReplies` takes the answers (`ask.answer`, durable `formatter-answers`): an asker's, or the formatter's own
refusal (`formatter.questions`). An answer is sent exactly
once, as a note's is: its answered mark (under the question's ID) is claimed, the message sent, the mark set.
Telegram away or flood control means later (`Retry`); a chat that is gone or a bot that is blocked, never
(`Fail`). Once sent, the answer is filed with the conversation so far, a follow-up's thread, unless the chat said
`/forget` since the question was asked.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Sequence
from typing import NoReturn

from aiogram.exceptions import TelegramRetryAfter

from formatter.join import JoinState
from formatter.marks import AlreadySent, AnswerMarks, ClaimLost, HeldElsewhere, Owned
from formatter.sending import Sender, away, permanent_reason
from infra.bus import Bus, Delivery, Fail, Retry, backoff, consumes
from infra.bus.names import BUCKET_ANSWERED, CONSUMER_FORMATTER_ANSWERS, STREAM_ASK, SUBJECT_ANSWER
from infra.domain.contracts import Origin, QuestionAnswered
from infra.domain.forgotten import forgotten_since, in_flight_at_forget
from infra.domain.threads import Thread, ThreadStore, clock, continued
from infra.runtime.metrics import observe_stage
from infra.voice.telegram import TELEGRAM_PERMANENT
from infra.voice.texts import text

log = logging.getLogger("voice_insight.formatter")

ANSWER_BACKOFF_CAP = 60.0


def render_reply(answered: QuestionAnswered) -> str:
    """The message that answers a question: the answer and the moments it comes from, or why there is none."""
    lang = answered.reply.ui_language
    if answered.refusal is not None:
        return text(f"ask_{answered.refusal}", lang)
    said = html.escape(answered.answer) or text("ask_not_said", lang)
    if answered.found and answered.at:
        said += "\n\n" + " ".join(f"<code>[{clock(at)}]</code>" for at in answered.at)
    return f"💬 {said}"


async def file_answer(bus: Bus, cid: str, state: JoinState, messages: Sequence[int]) -> None:
    """A note's answer is out: each of its messages is filed as the note's thread, so a reply to it may ask
    about the note. Not a failed note's (no transcript to ask), nor one whose chat said `/forget` since (kept
    nothing). Best effort: a reply to an answer not filed is told the bot knows no note there."""
    origin = state.origin
    if origin is None or origin.chat_key is None or state.failed or state.transcript is None or not messages:
        return
    try:
        if await forgotten_since(await bus.kv(BUCKET_ANSWERED), origin, state.received_at):
            return
        await ThreadStore(bus).file(origin.chat_key, messages, Thread(note=cid))
    except Exception as exc:
        log.warning("%s: the answer's messages were not filed for questions (%s)", cid, type(exc).__name__)


class QuestionReplies:
    def __init__(self, bus: Bus, sender: Sender, marks: AnswerMarks, backoff_cap: float = ANSWER_BACKOFF_CAP) -> None:
        self.bus = bus
        self.sender = sender
        self.marks = marks
        self.backoff_cap = backoff_cap

    @consumes(SUBJECT_ANSWER, CONSUMER_FORMATTER_ANSWERS, stage="answer", stream=STREAM_ASK, max_backoff=60.0)
    async def on_answer(self, answered: QuestionAnswered, delivery: Delivery) -> None:
        claim = await self.claim(answered.correlation_id)
        if claim is None:
            return
        reply = answered.reply
        origin = Origin(
            chat_id=reply.chat_id,
            message_id=reply.message_id,
            status_message_id=0,
            ui_language=reply.ui_language,
            thread_id=reply.thread_id,
            chat_key=answered.chat_key,
        )
        try:
            sent = await self.sender.send(origin, render_reply(answered))
            await claim.advance(1)
        except BaseException as exc:
            await self.settle_failure(claim, answered, delivery, exc)
        await claim.done()
        if answered.asked_at:
            observe_stage("question", time.time() - answered.asked_at)
        await self.file(answered, sent)

    async def claim(self, cid: str) -> Owned | None:
        match await self.marks.claim(cid):
            case AlreadySent():
                return None
            case HeldElsewhere(retry_in=wait):
                raise Retry(wait, "another formatter holds the answer")
            case Owned() as owned:
                if owned.parts_sent:  # sent, then the formatter died before it could say so
                    await owned.done()
                    return None
                return owned
        raise AssertionError("unreachable")

    async def file(self, answered: QuestionAnswered, message_id: int) -> None:
        """The answer as the next turn of the note's conversation: a reply to it is a follow-up."""
        if answered.note is None or answered.refusal is not None:
            return
        try:
            marks = await self.bus.kv(BUCKET_ANSWERED)
            if await in_flight_at_forget(marks, answered.chat_key, answered.reply.message_id, answered.asked_at):
                return  # the chat said /forget while the question was being answered: nothing of it is kept
            turns = continued(answered.turns, answered.question, answered.answer)
            await ThreadStore(self.bus).file(answered.chat_key, (message_id,), Thread(note=answered.note, turns=turns))
        except Exception as exc:
            log.warning(
                "%s: the answer was not filed for a follow-up (%s)", answered.correlation_id, type(exc).__name__
            )

    async def settle_failure(
        self, claim: Owned, answered: QuestionAnswered, delivery: Delivery, exc: BaseException
    ) -> NoReturn:
        if isinstance(exc, ClaimLost):
            raise Retry(self.marks.lease, "claim lost") from None
        if isinstance(exc, TELEGRAM_PERMANENT):
            reason = permanent_reason(exc)
            log.warning("%s: the answer to a question cannot be delivered (%s)", answered.correlation_id, reason)
            await claim.done("undeliverable")
            raise Fail(reason) from None
        await claim.release()
        if isinstance(exc, TelegramRetryAfter):
            raise Retry(float(exc.retry_after), "Telegram flood control", error="flood_control") from None
        if away(exc):
            raise Retry(backoff(delivery.attempt, cap=self.backoff_cap), "Telegram unavailable") from None
        raise exc
