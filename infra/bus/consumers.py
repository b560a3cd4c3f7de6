"""Consumers and their outcomes: how a handler declares where it listens, and how each delivery is settled.

Services declare subscribers with `@consumes(subject, durable, ...)` on their handler methods (the message type
is the handler's annotation) and call `await bus.start(service)`; they publish with
`bus.publish(subject, event, msg_id)`. A handler is a plain async method over a typed event. Everything about
JetStream's delivery contract lives here, and how a delivery ends is settled in one place (`deliver`):

| the handler...                       | outcome    | the bus...                                                     |
|--------------------------------------|------------|----------------------------------------------------------------|
| returns                              | `done`     | acks (synchronously, so a lost ack shows up here)              |
| raises `Retry(delay)`                | `retry`    | naks with that delay: "not now", never "done"                  |
| raises `Fail(reason)`                | `failed`   | runs the consumer's `give_up` (the user hears back), then acks |
| raises `Reject(reason)`              | `rejected` | terminates the message (poison: retrying cannot help)          |
| raises anything else                 | `error`    | naks with capped exponential backoff...                        |
| ... on attempt `max_attempts`        | `gave_up`  | runs `give_up`, so the user hears back, and acks               |
| never returns (process killed)       |            | JetStream redelivers; a delivery past `max_attempts` goes      |
|                                      | `gave_up`  | straight to `give_up`: a note that kills its worker every time |
|                                      |            | still ends in a clear message                                  |

A consumer without `give_up` acks a `Fail` (the handler told whoever needed telling) and terminates what it gave
up on. Attempts are counted from JetStream's delivery count, not from exceptions (so a `Retry` uses one up too:
consumers that retry often leave `max_attempts` unlimited), and the server's own `max_deliver` stays unlimited: a
message is never dropped by the server behind our back. While a handler runs, in-progress acks keep the message
ours, so slow work (transcribing ten minutes of audio) is not redelivered to another replica mid-way, while a
crash still means redelivery, not loss. Undecodable messages are rejected like poison. Every outcome passes the
telemetry middleware (`infra.bus.observe`): a handler never counts or times its delivery itself; what it adds
are steps inside it (`infra.runtime.telemetry.step`) and measurements of its own, all under the one stage
vocabulary (`infra.runtime.metrics.STAGES`).
"""

from __future__ import annotations

import bisect
import dataclasses
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from nats.aio.msg import Msg

from infra.bus.names import STREAM
from infra.bus.observe import ConsumerTelemetry
from infra.runtime.metrics import known_stage

log = logging.getLogger("voice_insight.bus")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Outcome(Exception):
    """Root of the outcomes a handler may raise to tell the bus how to settle its message."""


class Retry(Outcome):
    """Not now: deliver this message again after `delay` seconds.

    `error` (a bounded label) marks the attempt as failed, e.g. Telegram away; without it the message is only
    early (a deadline not reached, someone else holding the answer).
    """

    def __init__(self, delay: float, why: str = "", *, error: str | None = None) -> None:
        super().__init__(why or f"retry in {delay:.1f}s")
        self.delay = delay
        self.error = error


class Fail(Outcome):
    """Over, and failed: no attempt can do better (corrupt audio, the LLM refused). The consumer's `give_up`
    tells the user, and the message is acked. `reason` is a bounded label (a metric's, a localized text's key);
    `detail` may say more for logs, never quoting the user."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


class Reject(Outcome):
    """Poison: this message can never be handled; terminate it. `reason` is a bounded label (a metric's)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EarlierAttemptsDied(Exception):
    """Handed to `give_up` when a delivery arrives past `max_attempts`: its workers died on every attempt."""


def backoff(attempt: int, first: float = 0.5, cap: float = 30.0) -> float:
    """Capped exponential backoff for the n-th attempt (1-based): 0.5, 1, 2, 4, ... `cap` seconds."""
    return min(first * 2 ** max(0, min(attempt - 1, 30)), cap)


@dataclass(frozen=True)
class Delivery:
    """What a handler may know about the message besides its event."""

    subject: str
    attempt: int
    max_attempts: int = -1
    seq: int = 0
    """The message's sequence in its stream (0: not from a stream): what erasing a chat's notes deletes."""

    @property
    def last_attempt(self) -> bool:
        return self.max_attempts > 0 and self.attempt >= self.max_attempts

    @property
    def past_last_attempt(self) -> bool:
        """Delivered again after the last attempt: that attempt never settled it (its worker died)."""
        return self.max_attempts > 0 and self.attempt > self.max_attempts


@dataclass(frozen=True)
class QueuePlace:
    waiting: int
    """Messages before this one, not delivered yet."""
    working: int
    """Messages delivered and not yet acked: being worked on."""
    pending: int
    """Every message not delivered yet, this one included."""


@dataclass(frozen=True)
class Queue:
    """What waits for one consumer, as one look at the stream saw it: every waiting message's place follows from
    it, so a hundred waiting notes cost one look, not a hundred."""

    delivered: int
    """The last stream sequence handed to the consumer."""
    waiting: tuple[int, ...]
    """Sequences of the consumer's messages not delivered yet, in order, up to the look's end or its cap."""
    working: int
    pending: int

    def place(self, seq: int) -> QueuePlace | None:
        """Where message `seq` stands (at most `len(waiting)` ahead); None once it has been delivered."""
        if seq <= self.delivered:
            return None
        return QueuePlace(waiting=bisect.bisect_left(self.waiting, seq), working=self.working, pending=self.pending)


Handler = Callable[[T, Delivery], Awaitable[None]]
GiveUp = Callable[[T, BaseException], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec:
    durable: str
    filter_subject: str
    ack_wait: float = 30.0
    max_attempts: int = -1
    """Handler attempts before `give_up`; -1 retries for as long as the stream keeps the message."""
    concurrency: int = 1
    deliver_new_only: bool = False
    """New durables start at the stream's tail: a mode added today does not replay yesterday."""
    max_backoff: float = 30.0
    """Longest pause between two failed attempts."""
    stream: str = STREAM
    traced: bool = True
    """False where the handler starts the trace itself (a Telegram update becomes a voice note's root span)."""
    stage: str = ""
    """The stage label of this consumer's metrics (`infra.bus.observe`), one of `STAGES`; empty for a consumer
    outside the pipeline (a test's)."""
    mode: str = ""
    """The mode label of its metrics: the analysis mode an analyzer runs, empty elsewhere."""
    max_ack_pending: int = 1000
    """Messages out at once, those held back by a delayed nak included: a consumer that holds every note for
    minutes (a deadline, a watchdog) needs room for all the notes of those minutes."""

    def __post_init__(self) -> None:
        if self.stage:
            known_stage(self.stage)

    def telemetry(self) -> ConsumerTelemetry:
        return ConsumerTelemetry(self.durable, self.stage, self.mode, self.traced)


@dataclass(frozen=True)
class Declared:
    """Where a handler listens and how its messages are settled, as declared on the handler itself."""

    spec: ConsumerSpec
    then: tuple[str, ...] = ()
    """Other `@consumes` methods of the same service whose durables these workers take from, in this order, when
    `spec` has nothing waiting (those methods then have no workers of their own)."""
    give_up: str | None = None
    """Name of the method, on the same service, that tells the user when the bus gives up."""


def consumes(
    subject: str,
    durable: str,
    *,
    stage: str = "",
    mode: str = "",
    ack_wait: float = 30.0,
    max_attempts: int = -1,
    concurrency: int = 1,
    deliver_new_only: bool = False,
    max_backoff: float = 30.0,
    stream: str = STREAM,
    traced: bool = True,
    then: tuple[str, ...] = (),
    give_up: str | None = None,
    max_ack_pending: int = 1000,
) -> Callable[[F], F]:
    """Declare a service method a subscriber. The message type is the one its first parameter is annotated
    with, so decoder and handler cannot disagree. `stage` (one of `infra.runtime.metrics.STAGES`) and `mode`
    label its metrics. `durable` and `mode` may name attributes of the service in braces (`"analyzer-{mode}"`).
    `Bus.start(service)` starts every subscriber a service declares."""

    spec = ConsumerSpec(
        durable,
        subject,
        ack_wait=ack_wait,
        max_attempts=max_attempts,
        concurrency=concurrency,
        deliver_new_only=deliver_new_only,
        max_backoff=max_backoff,
        stream=stream,
        traced=traced,
        stage=stage,
        mode=mode,
        max_ack_pending=max_ack_pending,
    )

    def declare(handler: F) -> F:
        handler.__consumes__ = Declared(spec, then, give_up)  # type: ignore[attr-defined]
        return handler

    return declare


def declaration(handler: Callable[..., Any]) -> Declared:
    found = getattr(handler, "__consumes__", None)
    if not isinstance(found, Declared):
        raise TypeError(f"{handler!r} is not declared with @consumes")
    return found


def message_type(handler: Callable[..., Any]) -> Any:
    """The type a handler takes: the annotation of its first parameter after `self`."""
    hints = typing.get_type_hints(handler)
    parameters = [name for name in inspect.signature(handler).parameters if name != "self"]
    return hints[parameters[0]]


@dataclass(frozen=True)
class Verdict:
    """How one delivery ended (an outcome of `infra.bus.observe`'s table) and what the server is told."""

    outcome: str
    reason: str | None = None
    """A bounded label: why it failed, was rejected or retried; None when nothing went wrong."""
    delay: float = 0.0
    cause: BaseException | None = None
    """What the handler raised (for `gave_up` after dead workers: `EarlierAttemptsDied`)."""
    told: bool = False
    """`give_up` ran and told the user."""

    def settle(self, msg: Msg) -> Awaitable[Any]:
        match self.outcome:
            case "done" | "failed":
                return msg.ack_sync()
            case "gave_up" if self.told:
                return msg.ack_sync()
            case "retry" | "error":
                return msg.nak(delay=self.delay)
            case _:  # rejected, or given up with nobody to tell
                return msg.term()

    @property
    def terminates(self) -> bool:
        return self.outcome == "rejected" or (self.outcome == "gave_up" and not self.told)


async def deliver(
    handler: Handler[T],
    event: T,
    delivery: Delivery,
    give_up: GiveUp[T] | None = None,
    *,
    name: str = "",
    max_backoff: float = 30.0,
) -> Verdict:
    """One delivery of `event` through the outcome table (this module's docstring), with no server involved:
    the verdict says how the bus settles it. The bus runs every message through here, and tests call it to see
    a handler exactly as the bus sees it. `give_up` runs here too, for `Fail` and the last attempt."""
    name = name or getattr(handler, "__name__", "handler")
    if give_up is None:
        give_up = _declared_give_up(handler)
    if delivery.past_last_attempt:
        # Every allowed attempt ended without settling the message: its worker died each time.
        died = EarlierAttemptsDied(f"{delivery.attempt - 1} attempts")
        return await _tell(name, give_up, event, Verdict("gave_up", reason="attempts_exhausted", cause=died))
    try:
        await handler(event, delivery)
    except Retry as retry:
        return Verdict("retry", delay=max(retry.delay, 0.05), reason=retry.error, cause=retry)
    except Fail as fail:
        log.info("%s: a message on %s failed: %s", name, delivery.subject, fail.reason)
        return await _tell(name, give_up, event, Verdict("failed", reason=fail.reason, cause=fail))
    except Reject as reject:
        log.error("%s: rejected a message on %s: %s; terminated", name, delivery.subject, reject.reason)
        return Verdict("rejected", reason=reject.reason, cause=reject)
    except Exception as exc:
        if delivery.last_attempt:
            return await _tell(name, give_up, event, Verdict("gave_up", reason=type(exc).__name__, cause=exc))
        delay = backoff(delivery.attempt, cap=max_backoff)
        log.warning(
            "%s: attempt %d on %s failed: %s; retry in %.1fs",
            name,
            delivery.attempt,
            delivery.subject,
            type(exc).__name__,
            delay,
        )
        return Verdict("error", delay=delay, reason=type(exc).__name__, cause=exc)
    return Verdict("done")


def _declared_give_up(handler: Callable[..., Any]) -> Any:
    """The `give_up` a bound handler's `@consumes` names, if any."""
    declared = getattr(handler, "__consumes__", None)
    owner = getattr(handler, "__self__", None)
    if isinstance(declared, Declared) and declared.give_up and owner is not None:
        return getattr(owner, declared.give_up)
    return None


async def _tell(name: str, give_up: GiveUp[T] | None, event: T, verdict: Verdict) -> Verdict:
    """Run `give_up` so the user hears back; if that fails too, the whole message is tried again soon."""
    assert verdict.cause is not None
    if verdict.outcome == "gave_up":
        log.error("%s: giving up on a message: %s", name, type(verdict.cause).__name__)
    if give_up is None:
        return verdict
    try:
        await give_up(event, verdict.cause)
    except Exception as exc:
        log.error("%s: give-up handler failed too: %s", name, type(exc).__name__)
        return Verdict("error", delay=5.0, reason=type(exc).__name__, cause=exc)
    return dataclasses.replace(verdict, told=True)
