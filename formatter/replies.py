"""Questions about a recording, the formatter's last part: the answer goes out once, as a reply to the question,
and the bot's messages are filed as threads (`infra.domain.threads`) so a reply to any of them asks about its note.

`QuestionReplies` takes the answers (`ask.answer`, durable `formatter-answers`): an asker's, or the formatter's own
refusal (`formatter.questions`), each sent exactly once under the question's ID (`formatter.single`). Once sent,
the answer is filed with the conversation so far, a follow-up's thread, unless the chat said `/forget` since the
question was asked.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Sequence

from formatter.join import JoinState
from formatter.marks import AnswerMarks
from formatter.sending import Sender
from formatter.single import reply_origin, send_once
from infra.bus import Bus, Delivery, consumes
from infra.bus.names import BUCKET_ANSWERED, CONSUMER_FORMATTER_ANSWERS, STREAM_ASK, SUBJECT_ANSWER
from infra.domain.contracts import QuestionAnswered
from infra.domain.forgotten import forgotten_since, in_flight_at_forget
from infra.domain.threads import Thread, ThreadStore, clock, continued
from infra.runtime.metrics import observe_stage
from infra.voice.texts import text

log = logging.getLogger("voice_insight.formatter")

ANSWER_ROOM = 3000
"""Characters of an answer shown at most (before markup is escaped): a model that wrote on is cut, not refused by
Telegram's 4096."""

ANSWER_BACKOFF_CAP = 60.0


def render_reply(answered: QuestionAnswered) -> str:
    """The message that answers a question: the answer and the moments it comes from, or why there is none."""
    lang = answered.reply.ui_language
    if answered.refusal is not None:
        return text(f"ask_{answered.refusal}", lang)
    answer = answered.answer if len(answered.answer) <= ANSWER_ROOM else answered.answer[: ANSWER_ROOM - 1] + "…"
    said = html.escape(answer) or text("ask_not_said", lang)
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
    def __init__(self, bus: Bus, sender: Sender, marks: AnswerMarks) -> None:
        self.bus = bus
        self.sender = sender
        self.marks = marks

    @consumes(SUBJECT_ANSWER, CONSUMER_FORMATTER_ANSWERS, stage="answer", stream=STREAM_ASK, max_backoff=60.0)
    async def on_answer(self, answered: QuestionAnswered, delivery: Delivery) -> None:
        origin = reply_origin(answered.reply, answered.chat_key)
        message = render_reply(answered)
        sent = await send_once(
            self.marks, answered.correlation_id, lambda: self.sender.send(origin, message), delivery, "answer"
        )
        if sent is None:
            return
        if answered.asked_at:
            observe_stage("question", time.time() - answered.asked_at)
        await self.file(answered, sent)

    async def file(self, answered: QuestionAnswered, message_id: int) -> None:
        """The answer as the next turn of the note's conversation: a reply to it is a follow-up."""
        if answered.note is None or answered.refusal is not None:
            return
        try:
            marks = await self.bus.kv(BUCKET_ANSWERED)
            if await in_flight_at_forget(marks, answered.chat_key, answered.reply.message_id, answered.asked_at):
                return  # the chat said /forget while the question was being answered: nothing of it is kept
            turns = continued(answered.turns, answered.question, answered.answer, answered.asked_at or time.time())
            await ThreadStore(self.bus).file(answered.chat_key, (message_id,), Thread(note=answered.note, turns=turns))
        except Exception as exc:
            log.warning("%s: answer not filed for a follow-up (%s)", answered.correlation_id, type(exc).__name__)
