"""One message that answers one request (a question, a digest), sent exactly once: its answered mark, under the
request's ID, is claimed, the message sent, the claim advanced, the mark set; a formatter that died after sending
leaves a claim whose part is counted, and whoever takes it over only marks it sent.

A failure on the way out is sorted as an answer's is (`formatter.answer`): Telegram away or flood control means
later (`Retry`, the claim released); a chat that is gone or a bot that is blocked, never (`Fail`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from aiogram.exceptions import TelegramRetryAfter

from formatter.marks import AlreadySent, AnswerMarks, ClaimLost, HeldElsewhere, Owned
from formatter.sending import away, permanent_reason
from infra.bus import Delivery, Fail, Retry, backoff
from infra.domain.contracts import Origin, ReplyTo
from infra.voice.telegram import TELEGRAM_PERMANENT

log = logging.getLogger("voice_insight.formatter")

BACKOFF_CAP = 60.0


def reply_origin(reply: ReplyTo, chat_key: str) -> Origin:
    """Where the message goes, as the sender takes it: a reply to `reply.message_id` (0: a message of its own)."""
    return Origin(
        chat_id=reply.chat_id,
        message_id=reply.message_id,
        status_message_id=0,
        ui_language=reply.ui_language,
        thread_id=reply.thread_id,
        chat_key=chat_key,
    )


async def send_once(
    marks: AnswerMarks, cid: str, send: Callable[[], Awaitable[int]], delivery: Delivery, what: str
) -> int | None:
    """The message sent, its ID; None if it was sent already (by us before, or by another formatter)."""
    match await marks.claim(cid):
        case AlreadySent():
            return None
        case HeldElsewhere(retry_in=wait):
            raise Retry(wait, f"another formatter holds the {what}")
        case Owned() as claim:
            pass
    if claim.parts_sent:  # sent, then its formatter died before it could say so
        await claim.done()
        return None
    heartbeat = asyncio.create_task(claim.keep_alive(marks.lease / 3))  # flood control may hold it a while
    try:
        sent = await send()
        await claim.advance(1)
    except BaseException as exc:
        await _settle(marks, claim, cid, delivery, exc, what)
    finally:
        heartbeat.cancel()
    await claim.done()
    return sent


async def _settle(
    marks: AnswerMarks, claim: Owned, cid: str, delivery: Delivery, exc: BaseException, what: str
) -> NoReturn:
    if isinstance(exc, ClaimLost):
        raise Retry(marks.lease, "claim lost") from None
    if isinstance(exc, TELEGRAM_PERMANENT):
        reason = permanent_reason(exc)
        log.warning("%s: the %s cannot be delivered (%s)", cid, what, reason)
        await claim.done("undeliverable")
        raise Fail(reason) from None
    await claim.release()
    if isinstance(exc, TelegramRetryAfter):
        raise Retry(float(exc.retry_after), "Telegram flood control", error="flood_control") from None
    if away(exc):
        raise Retry(backoff(delivery.attempt, cap=BACKOFF_CAP), "Telegram unavailable") from None
    raise exc
