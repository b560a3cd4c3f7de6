"""`/forget`, the gateway's part: it erases what it keeps itself and asks the formatter for the rest.

The gateway faces the internet in webhook mode, so it is given no more than it needs (`infra.ops.access`): it
cannot list the stored notes, purge the event stream or erase another service's buckets. `/forget` therefore
travels as requests on `FORGET` (a work queue), each carried out by whoever keeps that part of the chat: the chat's
settings and its person's counters here, now; its notes and their events by the formatter, which answers the chat
with what was deleted; cached transcripts and pieces by the transcriber; cached analyses by each mode's analyzer;
and the notes' intake records here again, once the formatter has named them (`forget.intake`). The notes refused
here (too long, not sound, over a limit: nothing of them reached the formatter) are filed under the chat as they
are refused, and named in the request, so the formatter leaves their answered marks forgotten and names them back.

Before all that, the chat's mark (`infra.domain.forgotten`): a note still in flight, wherever it is, is erased
as soon as it is answered, by the formatter or, refused at intake, here (`forget_refused_if_asked`).
"""

from __future__ import annotations

import logging

import msgspec

from infra.bus import Bus, Delivery, consumes
from infra.bus.names import (
    BUCKET_ANSWERED,
    BUCKET_INTAKE,
    CONSUMER_GATEWAY_FORGET,
    STREAM_FORGET,
    SUBJECT_FORGET_CHAT,
    SUBJECT_FORGET_INTAKE,
)
from infra.domain.answers import leave_forgotten
from infra.domain.contracts import ForgetChat, ForgetIntake
from infra.domain.forgotten import in_flight_at_forget, mark_forgotten
from infra.domain.notes import forget_intake, forget_refused, forget_user, refused_key, refused_of_chat

log = logging.getLogger("voice_insight.gateway")


async def ask_to_forget(bus: Bus, request: ForgetChat, user_key: str | None, message_id: int) -> None:
    """The chat's mark, the request for the notes' part, then the notes refused here and the person's counters
    (`msg_id`: the same `/forget` message asks once, however often it is handled, and says what there was)."""
    await mark_forgotten(await bus.kv(BUCKET_ANSWERED), request.chat_key, message_id)
    refused = await refused_of_chat(bus, request.chat_key)
    msg_id = f"forget.{request.chat_key}.{message_id}"
    named = msgspec.structs.replace(request, refused=tuple(refused))
    await bus.publish(SUBJECT_FORGET_CHAT, named, msg_id=msg_id, stream=STREAM_FORGET)
    for cid in refused:  # named: their records go with the others' (`forget.intake`)
        await bus.erase(BUCKET_INTAKE, refused_key(request.chat_key, cid))
    if user_key:
        await forget_user(bus, user_key)


async def file_refused(bus: Bus, chat_key: str, cid: str) -> None:
    """A note refused here, filed under its chat before its refusal is marked, so `/forget` finds it."""
    await (await bus.kv(BUCKET_INTAKE)).put(refused_key(chat_key, cid), b"")


async def forget_refused_if_asked(bus: Bus, chat_key: str, cid: str, message_id: int, taken_in: float | None) -> bool:
    """A note refused after its chat said `/forget` (it was still being taken in then): nothing of it is kept but
    its answered mark, which says only that it was forgotten (`infra.domain.answers.FORGOTTEN`), so that its update
    sent again is not taken in again. Called once its refusal is said, when nothing reads its records any more (no
    `Fail` follows: nobody else is to tell the chat)."""
    answered = await bus.kv(BUCKET_ANSWERED)
    if not await in_flight_at_forget(answered, chat_key, message_id, taken_in):
        return False
    await leave_forgotten(answered, cid)
    await forget_refused(bus, chat_key, cid)
    return True


class IntakeForgetter:
    """Erases the intake records of a forgotten chat's notes, which the formatter found."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @consumes(SUBJECT_FORGET_INTAKE, CONSUMER_GATEWAY_FORGET, stage="forget", stream=STREAM_FORGET)
    async def on_forget_intake(self, request: ForgetIntake, delivery: Delivery) -> None:
        await forget_intake(self.bus, request.correlation_ids)
