"""Questions about a recording, the formatter's first part: which note a question asks about, and whether there
is anything to answer it from. The formatter keeps the notes and the threads, so it is the one that looks: the
asker, like an analyzer, reads no stored note and gets what it answers from on the bus (`ASKER`).

`QuestionDesk` takes the gateway's questions (`ask.question`, durable `formatter-questions`). The note is the one
replied to, or the one the bot's message answers (`infra.domain.threads`, with the conversation so far). With its
transcript kept, the question is posed to any asker (`asker.question`). Without, the question is answered at once,
through the same way out as an asker's answer (`ask.answer`, `formatter.replies`), with why: no note there
(`not_a_note`), no transcript (`not_transcribed`: it failed, or was refused), its day over (`expired`), erased
by `/forget` (`forgotten`), not answered yet (`in_flight`).
"""

from __future__ import annotations

import logging
import time

from formatter.join import JoinStore
from infra.bus import Bus, Delivery, consumes
from infra.bus.names import (
    BUCKET_ANSWERED,
    BUCKET_JOINS,
    CONSUMER_FORMATTER_QUESTIONS,
    STREAM_ASK,
    STREAM_ASKER,
    SUBJECT_ANSWER,
    SUBJECT_POSED,
    SUBJECT_QUESTION,
    USER_DATA_TTL,
)
from infra.domain.answers import FORGOTTEN, Claimed, Released, Sent, read_mark
from infra.domain.contracts import AskRefusal, QuestionAnswered, QuestionAsked, QuestionPosed, Turn
from infra.domain.forgotten import forget_mark
from infra.domain.notes import NoteStore
from infra.domain.threads import ThreadStore

log = logging.getLogger("voice_insight.formatter")


class QuestionDesk:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @consumes(
        SUBJECT_QUESTION,
        CONSUMER_FORMATTER_QUESTIONS,
        stage="answer",
        stream=STREAM_ASK,
        max_attempts=5,
        give_up="give_up",
    )
    async def on_question(self, question: QuestionAsked, delivery: Delivery) -> None:
        marks = await self.bus.kv(BUCKET_ANSWERED)
        answered, _ = await read_mark(marks, question.correlation_id)
        if isinstance(answered, Sent):
            return  # a repeated question, answered already
        forgotten = await forget_mark(marks, question.chat_key)
        if forgotten is not None and question.about_message_id < forgotten.message_id:
            # From before the chat's /forget: whatever it asks about is erased, or being erased right now.
            return await self.refuse(question, question.note, "forgotten")
        note_id: str | None = question.note
        turns: tuple[Turn, ...] = ()
        if note_id is None:
            thread = await ThreadStore(self.bus).get(question.chat_key, question.about_message_id)
            if thread is not None:
                note_id, turns = thread.note, thread.turns
        if note_id is None:
            return await self.refuse(question, None, await self.why_no_thread(question))
        note = await NoteStore(self.bus).get(question.chat_key, note_id)
        if note is None:
            return await self.refuse(question, note_id, await self.why_no_note(question.chat_key, note_id))
        posed = QuestionPosed(
            correlation_id=question.correlation_id,
            chat_key=question.chat_key,
            reply=question.reply,
            question=question.question,
            note=note_id,
            transcript=note.transcript,
            turns=turns,
            asked_at=question.asked_at,
        )
        await self.bus.publish(SUBJECT_POSED, posed, msg_id=f"{question.correlation_id}.posed", stream=STREAM_ASKER)

    async def why_no_thread(self, question: QuestionAsked) -> AskRefusal:
        """A reply to a message of the bot's that answers no note kept: one from before the chat's `/forget`, one
        from more than a day ago, or one that never answered a note (a greeting, a setting, a refusal)."""
        mark = await forget_mark(await self.bus.kv(BUCKET_ANSWERED), question.chat_key)
        if mark is not None and question.about_message_id < mark.message_id:
            return "forgotten"
        if question.about_sent_at and time.time() - question.about_sent_at > USER_DATA_TTL:
            return "expired"
        return "not_a_note"

    async def why_no_note(self, chat_key: str, note_id: str) -> AskRefusal:
        mark, _ = await read_mark(await self.bus.kv(BUCKET_ANSWERED), note_id)
        if mark == FORGOTTEN:
            return "forgotten"
        if isinstance(mark, Sent) and (
            mark.outcome == "refused" or await NoteStore(self.bus).failed(chat_key, note_id)
        ):
            return "not_transcribed"  # refused at intake (too long, not sound...), or it failed
        if isinstance(mark, Claimed | Released):
            return "in_flight"  # being answered
        if mark is None and await JoinStore(await self.bus.kv(BUCKET_JOINS)).get(note_id) is not None:
            return "in_flight"  # still being transcribed or analysed
        return "expired"  # its day is over (or it never was a note of ours: a voice note from before the bot)

    async def give_up(self, question: QuestionAsked, exc: BaseException) -> None:
        """The question could not be looked into (NATS failing it every time): the user hears so, not nothing."""
        await self.refuse(question, question.note, "failed")

    async def refuse(self, question: QuestionAsked, note: str | None, why: AskRefusal) -> None:
        log.info("%s: nothing to answer the question from (%s)", question.correlation_id, why)
        refusal = QuestionAnswered(
            correlation_id=question.correlation_id,
            chat_key=question.chat_key,
            reply=question.reply,
            note=note,
            question=question.question,
            refusal=why,
            asked_at=question.asked_at,
        )
        msg_id = f"{question.correlation_id}.answer"
        await self.bus.publish(SUBJECT_ANSWER, refusal, msg_id=msg_id, stream=STREAM_ASK)
