"""`/forget`, the gateway's part: it erases what it keeps itself and asks the formatter for the rest.

The gateway faces the internet in webhook mode, so it is given no more than it needs (`infra.ops.access`): it
cannot list the stored notes, purge the event stream or erase another service's buckets. `/forget` therefore
travels as requests on `FORGET` (a work queue), each carried out by whoever keeps that part of the chat: the chat's
settings and its person's counters here, now; its notes and their events by the formatter, which answers the chat
with what was deleted; cached transcripts and pieces by the transcriber; cached analyses by each mode's analyzer;
and the notes' intake records here again, once the formatter has named them (`forget.intake`).
"""

from __future__ import annotations

import logging

from infra.bus import Bus, Delivery, consumes
from infra.bus.names import CONSUMER_GATEWAY_FORGET, STREAM_FORGET, SUBJECT_FORGET_CHAT, SUBJECT_FORGET_INTAKE
from infra.domain.contracts import ForgetChat, ForgetIntake
from infra.domain.notes import forget_intake, forget_user

log = logging.getLogger("voice_insight.gateway")


async def ask_to_forget(bus: Bus, request: ForgetChat, user_key: str | None, message_id: int) -> None:
    """The request for the notes' part, then the person's counters (`msg_id`: the same `/forget` message asks
    once, however often it is handled)."""
    msg_id = f"forget.{request.chat_key}.{message_id}"
    await bus.publish(SUBJECT_FORGET_CHAT, request, msg_id=msg_id, stream=STREAM_FORGET)
    if user_key:
        await forget_user(bus, user_key)


class IntakeForgetter:
    """Erases the intake records of a forgotten chat's notes, which the formatter found."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @consumes(SUBJECT_FORGET_INTAKE, CONSUMER_GATEWAY_FORGET, stage="forget", stream=STREAM_FORGET)
    async def on_forget_intake(self, request: ForgetIntake, delivery: Delivery) -> None:
        await forget_intake(self.bus, request.correlation_ids)
