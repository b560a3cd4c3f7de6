"""The bus: the one place that knows subjects, buckets, headers, acks and trace context.

Services see two things: `Bus.publish(subject, event, msg_id)` and `Bus.consume(spec, decoder, handler)`,
where a handler is a plain async function over a typed event. Everything about JetStream's delivery
contract lives here:

The outcomes, settled in one place (`_handle`):

| the handler...                   | the bus...                                                            |
|----------------------------------|-----------------------------------------------------------------------|
| returns                          | acks (synchronously, so a lost ack shows up here)                     |
| raises `Retry(delay)`            | naks with that delay: "not now", never "done"                         |
| raises `Reject(reason)`          | terminates the message (poison: retrying cannot help), counts it      |
| raises anything else             | naks with capped exponential backoff; on attempt `max_attempts` the   |
|                                  | spec's `give_up` runs, so the user hears back, and the message is acked |
| never returns (process killed)   | JetStream redelivers; a delivery past `max_attempts` goes straight to |
|                                  | `give_up` without trying again: a note that kills its worker every    |
|                                  | time still ends in a clear message                                    |

Attempts are counted from JetStream's delivery count, not from exceptions (so a `Retry` uses one up too:
consumers that retry often leave `max_attempts` unlimited), and the server's own `max_deliver` stays unlimited: a
message is never dropped by the server behind our back. While a handler
runs, in-progress acks keep the message ours, so slow work (transcribing ten minutes of audio) is not
redelivered to another replica mid-way, while a crash still means redelivery, not loss. Undecodable messages
are rejected like poison.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import re
import time
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from opentelemetry import propagate
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind
from opentelemetry.util.types import Attributes

from infra.contracts import decoder, encode
from infra.metrics import CONSUMER_ACK_PENDING, CONSUMER_PENDING, CONSUMER_REDELIVERED, REDELIVERIES, REJECTED
from infra.telemetry import record_failure, tracer

log = logging.getLogger("voice_insight.bus")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# --- the public topology (documented in README) --------------------------------------------------

STREAM = "VOICE"
STREAM_UPDATES = "UPDATES"
"""Telegram updates taken in durably before their offset is confirmed to Telegram (work queue: gone once handled)."""
SUBJECT_UPDATES = "telegram.update"
SUBJECT_AUDIO = "voice.audio"
SUBJECT_AUDIO_QUEUED = "voice.audio.queued"
"""Notes of users who already have several in flight: transcribed when `voice.audio` is empty (fair order)."""
STREAM_INFLIGHT = "INFLIGHT"
"""One message per note in flight, on `inflight.<user>.<cid>`: counted per user, purged when answered."""
STREAM_RECENT = "RECENT"
"""One message per note taken in, on `recent.<user>.<cid>`, kept a minute: notes per minute per user."""
SUBJECT_TRANSCRIPT = "voice.transcript"
SUBJECT_FAILED = "voice.failed"
SUBJECT_ANALYSIS_PREFIX = "voice.analysis."
SUBJECT_ALL = "voice.>"

BUCKET_AUDIO = "voice-audio"  # Object Store: the voice note's bytes
BUCKET_MODES = "voice-modes"  # KV: live analyzer modes, kept by heartbeats
BUCKET_JOINS = "voice-joins"  # KV: the formatter's per-note join state
BUCKET_ANSWERED = "voice-answered"  # KV: the "answered" marks, created atomically
BUCKET_USERS = "voice-users"  # KV: keyed hashes of user ids seen in the last 24 h (active users)
BUCKET_QUOTA = "voice-quota"  # KV: seconds of speech per user hash per day
BUCKET_BUDGET = "voice-budget"  # KV: LLM tokens used by the whole bot per day
BUCKET_INTAKE = "voice-intake"  # KV: per note, the status message already sent and whether it was handed over

USER_DATA_TTL = 24 * 3600.0  # nothing a user said or sent outlives a day
MODES_TTL = 30.0
DUPLICATE_WINDOW = 20 * 60.0

# Consumers every deployment has; analyzers add `analyzer-<MODE>` consumers themselves.
CONSUMER_TRANSCRIBER = "transcriber"
CONSUMER_TRANSCRIBER_QUEUED = "transcriber-queued"
CONSUMER_FORMATTER = "formatter"
CONSUMER_FORMATTER_DEADLINE = "formatter-deadline"
CONSUMER_GATEWAY = "gateway"


def analysis_subject(mode: str) -> str:
    return f"{SUBJECT_ANALYSIS_PREFIX}{mode}"


def _messaging(subject: str, operation: str) -> dict[str, str]:
    """OpenTelemetry messaging attributes; subjects name a stage or mode, never a user."""
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": operation,
        "messaging.operation.name": "publish" if operation == "send" else "process",
    }


async def change_key(kv: KeyValue, key: str, change: Callable[[bytes | None], bytes]) -> bytes:
    """Read-modify-write of one KV key with compare-and-set: concurrent writers never lose each other's change.

    `change` gets the current value (None if there is none) and returns the new one; it runs again whenever
    someone else wrote in between, so it must be a pure function of what it is given.
    """
    while True:
        try:
            entry = await kv.get(key)
            current, revision = entry.value, entry.revision
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            current, revision = None, None
        value = change(current)
        try:
            if revision is None:
                await kv.create(key, value)
            else:
                await kv.update(key, value, last=revision)
            return value
        except nats.js.errors.KeyWrongLastSequenceError:
            continue


# --- consuming -----------------------------------------------------------------------------------


def _same_settings(have: api.ConsumerConfig, want: api.ConsumerConfig) -> bool:
    return (
        have.filter_subject == want.filter_subject
        and float(have.ack_wait or 0) == float(want.ack_wait or 0)
        and (have.max_deliver or -1) == want.max_deliver
        and have.max_ack_pending == want.max_ack_pending
    )


class Outcome(Exception):
    """Root of the outcomes a handler may raise to tell the bus how to settle its message."""


class Retry(Outcome):
    """Not now: deliver this message again after `delay` seconds."""

    def __init__(self, delay: float, why: str = "") -> None:
        super().__init__(why or f"retry in {delay:.1f}s")
        self.delay = delay


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

    @property
    def last_attempt(self) -> bool:
        return self.max_attempts > 0 and self.attempt >= self.max_attempts

    @property
    def past_last_attempt(self) -> bool:
        """Delivered again after the last attempt: that attempt never settled it (its worker died)."""
        return self.max_attempts > 0 and self.attempt > self.max_attempts


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


@dataclass(frozen=True)
class Declared:
    """Where a handler listens and how its messages are settled, as declared on the handler itself."""

    spec: ConsumerSpec
    then: tuple[ConsumerSpec, ...] = ()
    give_up: str | None = None
    """Name of the method, on the same service, that tells the user when the bus gives up."""


def consumes(
    subject: str,
    durable: str,
    *,
    ack_wait: float = 30.0,
    max_attempts: int = -1,
    concurrency: int = 1,
    deliver_new_only: bool = False,
    max_backoff: float = 30.0,
    stream: str = STREAM,
    traced: bool = True,
    then: tuple[ConsumerSpec, ...] = (),
    give_up: str | None = None,
) -> Callable[[F], F]:
    """Declare a service method a subscriber. The message type is the one its first parameter is annotated
    with, so decoder and handler cannot disagree. `durable` may name attributes of the service in braces
    (`"analyzer-{mode}"`). `Bus.start(service)` starts every subscriber a service declares."""

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


class _Attributes(dict[str, Any]):
    def __init__(self, owner: object) -> None:
        super().__init__()
        self.owner = owner

    def __missing__(self, key: str) -> Any:
        return getattr(self.owner, key)


@dataclass
class _Consumer(Generic[T]):
    specs: tuple[ConsumerSpec, ...]
    """In priority order: a worker takes from the first that has a message."""
    decoder: msgspec.json.Decoder
    handler: Handler[T]
    give_up: GiveUp[T] | None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def spec(self) -> ConsumerSpec:
        return self.specs[0]


class Bus:
    def __init__(self, nc: NATS, replicas: int = 1) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.replicas = replicas
        self._stopping = asyncio.Event()
        self._consumers: list[_Consumer[Any]] = []
        self._idle: dict[asyncio.Task[None], bool] = {}
        self._backlog_task: asyncio.Task[None] | None = None

    # connection ----------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, servers: list[str], name: str, replicas: int = 1, wait: float = 60.0) -> Bus:
        """Connect, retrying while the server is not up yet (compose starts everything at once)."""

        async def on_disconnect() -> None:
            log.warning("disconnected from NATS")

        async def on_reconnect() -> None:
            log.info("reconnected to NATS")

        async def on_error(exc: Exception) -> None:
            log.warning("NATS error: %s", exc)

        deadline = time.monotonic() + wait
        while True:
            try:
                nc = await nats.connect(
                    servers=servers,
                    name=name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                    error_cb=on_error,
                )
                return cls(nc, replicas=replicas)
            except (TimeoutError, OSError, nats.errors.NoServersError) as exc:
                if time.monotonic() > deadline:
                    where = ", ".join(re.sub(r"//[^@/]*@", "//", s) for s in servers)  # no credentials in logs
                    raise ConnectionError(f"cannot reach NATS at {where}: {type(exc).__name__}") from exc
                await asyncio.sleep(0.5)

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def ensure_topology(self) -> None:
        """Create the stream, buckets and core consumers if missing; safe to run from every service."""

        def stream(name: str, subject: str, age: float, **more: Any) -> api.StreamConfig:
            return api.StreamConfig(
                name=name,
                subjects=[subject],
                storage=api.StorageType.FILE,
                max_age=age,
                duplicate_window=min(age, DUPLICATE_WINDOW),
                num_replicas=self.replicas,
                **more,
            )

        streams = (
            stream(STREAM, SUBJECT_ALL, USER_DATA_TTL, retention=api.RetentionPolicy.LIMITS),
            stream(STREAM_UPDATES, SUBJECT_UPDATES, USER_DATA_TTL, retention=api.RetentionPolicy.WORK_QUEUE),
            # Counted, not read: one message per subject, the server counts subjects per user.
            stream(STREAM_INFLIGHT, "inflight.>", 3600.0, max_msgs_per_subject=1),
            stream(STREAM_RECENT, "recent.>", 60.0, max_msgs_per_subject=1),
        )
        for config in streams:
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self.js.update_stream(config)
        await self._ensure_kv(BUCKET_MODES, MODES_TTL)
        await self._ensure_kv(BUCKET_INTAKE, USER_DATA_TTL)
        await self._ensure_kv(BUCKET_QUOTA, USER_DATA_TTL)
        await self._ensure_kv(BUCKET_BUDGET, USER_DATA_TTL)
        await self._ensure_kv(BUCKET_JOINS, USER_DATA_TTL)
        await self._ensure_kv(BUCKET_ANSWERED, USER_DATA_TTL)
        await self._ensure_kv(BUCKET_USERS, USER_DATA_TTL)
        try:
            await self.js.object_store(BUCKET_AUDIO)
        except nats.js.errors.BucketNotFoundError:
            await self.js.create_object_store(
                BUCKET_AUDIO, config=api.ObjectStoreConfig(ttl=USER_DATA_TTL, replicas=self.replicas)
            )

    async def _ensure_kv(self, bucket: str, ttl: float) -> KeyValue:
        try:
            return await self.js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            return await self.js.create_key_value(
                config=api.KeyValueConfig(bucket=bucket, ttl=ttl, history=1, replicas=self.replicas)
            )

    async def ensure_consumer(self, spec: ConsumerSpec) -> None:
        """Create the durable, or bring an existing one's settings up to date with the code's spec."""
        config = api.ConsumerConfig(
            name=spec.durable,
            durable_name=spec.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.NEW if spec.deliver_new_only else api.DeliverPolicy.ALL,
            filter_subject=spec.filter_subject,
            ack_wait=spec.ack_wait,
            max_deliver=-1,
            max_ack_pending=1000,
        )
        try:
            info = await self.js.consumer_info(spec.stream, spec.durable)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None and _same_settings(info.config, config):
            return
        try:
            # CONSUMER.CREATE with an existing name updates the settings that may change (ack wait,
            # deliveries, filter); the start position of an existing durable is kept.
            if info is not None:
                config.deliver_policy = info.config.deliver_policy
                config.opt_start_seq, config.opt_start_time = info.config.opt_start_seq, info.config.opt_start_time
                log.info("%s: consumer settings changed in code; updating the durable", spec.durable)
            await self.js.add_consumer(spec.stream, config)
        except nats.js.errors.BadRequestError:
            # Another service created it between our look and our add: fine if it now exists.
            await self.js.consumer_info(spec.stream, spec.durable)

    async def kv(self, bucket: str) -> KeyValue:
        return await self.js.key_value(bucket)

    async def kv_size(self, bucket: str) -> int:
        """Live keys in a history-1 bucket: one message per key, expired ones gone."""
        info = await self.js.stream_info(f"KV_{bucket}")
        return info.state.messages

    async def audio_store(self) -> ObjectStore:
        return await self.js.object_store(BUCKET_AUDIO)

    # publishing ----------------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        event: msgspec.Struct,
        msg_id: str,
        timeout: float = 5.0,
        stream: str = STREAM,
        traced: bool = True,
    ) -> None:
        """Publish to the stream and wait for its ack; `msg_id` makes a repeated publish a no-op.

        The producer span's context travels in the message headers (W3C `traceparent`), so whoever consumes
        the message continues the same trace.
        """
        payload = encode(event)
        if not traced:
            await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=timeout, stream=stream)
            return
        attributes: Attributes = {**_messaging(subject, "send"), "messaging.message.body.size": len(payload)}
        with tracer().start_as_current_span(f"send {subject}", kind=SpanKind.PRODUCER, attributes=attributes) as span:
            headers: dict[str, str] = {"Nats-Msg-Id": msg_id}
            propagate.inject(headers)
            try:
                await self.js.publish(subject, payload, headers=headers, timeout=timeout, stream=stream)
            except Exception as exc:
                record_failure(span, exc)
                raise

    # consuming -----------------------------------------------------------------------------------

    async def start(self, service: object) -> list[ConsumerSpec]:
        """Start every subscriber `service` declares with `@consumes`; their durables exist on return."""
        started = []
        for name in sorted(dir(type(service))):
            function = getattr(type(service), name)
            declared = getattr(function, "__consumes__", None)
            if not isinstance(declared, Declared):
                continue
            spec = dataclasses.replace(declared.spec, durable=declared.spec.durable.format_map(_Attributes(service)))
            for each in (spec, *declared.then):
                await self.ensure_consumer(each)
            give_up = getattr(service, declared.give_up) if declared.give_up else None
            self.consume(spec, decoder(message_type(function)), getattr(service, name), give_up, then=declared.then)
            started.append(spec)
        return started

    def consume(
        self,
        spec: ConsumerSpec,
        decoder: msgspec.json.Decoder,
        handler: Handler[T],
        give_up: GiveUp[T] | None = None,
        then: tuple[ConsumerSpec, ...] = (),
    ) -> None:
        """Start `spec.concurrency` workers on a durable pull consumer (created if missing).

        `then` names lower-priority consumers for the same handler: a worker takes from them only when `spec`
        has nothing waiting (the transcribers' fair order).
        """
        consumer: _Consumer[T] = _Consumer((spec, *then), decoder, handler, give_up)
        self._consumers.append(consumer)
        if self._backlog_task is None:
            self._backlog_task = asyncio.create_task(self._watch_backlog())
        for n in range(spec.concurrency):
            task = asyncio.create_task(self._worker(consumer), name=f"{spec.durable}-{n}")
            consumer.tasks.append(task)

    async def _worker(self, consumer: _Consumer[Any]) -> None:
        me = asyncio.current_task()
        assert me is not None
        subs: dict[str, Any] = {}
        busy = False
        while not self._stopping.is_set():
            got = False
            for index, spec in enumerate(consumer.specs):
                # One consumer: long polls. Several: a long poll on the first only while all are idle, quick
                # looks otherwise, so a message on the first is never kept waiting behind the others.
                if len(consumer.specs) == 1:
                    timeout = 2.0
                else:
                    timeout = 0.05 if busy else (1.0 if index == 0 else 0.1)
                try:
                    if spec.durable not in subs:
                        await self.ensure_consumer(spec)
                        subs[spec.durable] = await self.js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
                    self._idle[me] = True
                    try:
                        msgs = await subs[spec.durable].fetch(1, timeout=timeout)
                    finally:
                        self._idle[me] = False
                except nats.errors.TimeoutError:
                    continue
                except asyncio.CancelledError:
                    return
                except Exception as exc:  # disconnected, server restarting, consumer briefly gone...
                    log.warning("%s: fetch failed (%s); retrying", spec.durable, type(exc).__name__)
                    subs.pop(spec.durable, None)
                    await asyncio.sleep(0.5)
                    break
                for msg in msgs:
                    await self._process(consumer, spec, msg)
                got = bool(msgs)
                break
            busy = got

    async def _process(self, consumer: _Consumer[Any], spec: ConsumerSpec, msg: Msg) -> None:
        try:
            event = consumer.decoder.decode(msg.data)
        except msgspec.MsgspecError as exc:
            log.error("%s: undecodable message on %s: %s; terminated", spec.durable, msg.subject, exc)
            REJECTED.labels(spec.durable, "undecodable").inc()
            await self._settle(msg.term())
            return
        delivery = Delivery(msg.subject, msg.metadata.num_delivered, spec.max_attempts)
        if delivery.attempt > 1:
            REDELIVERIES.labels(spec.durable).inc()
        if not spec.traced:
            await self._handle(consumer, spec, msg, event, delivery, INVALID_SPAN)
            return
        attributes: Attributes = {
            **_messaging(msg.subject, "process"),
            "messaging.consumer.group.name": spec.durable,
            "messaging.nats.delivery_count": delivery.attempt,
        }
        with tracer().start_as_current_span(
            f"process {msg.subject}",
            context=propagate.extract(msg.headers or {}),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            await self._handle(consumer, spec, msg, event, delivery, span)

    async def _handle(
        self, consumer: _Consumer[Any], spec: ConsumerSpec, msg: Msg, event: Any, delivery: Delivery, span: Span
    ) -> None:
        if delivery.past_last_attempt:
            # Every allowed attempt ended without settling the message: its worker died each time.
            record_failure(span, "attempts_exhausted")
            await self._give_up(consumer, spec, msg, event, EarlierAttemptsDied(f"{delivery.attempt - 1} attempts"))
            return
        keepalive = asyncio.create_task(self._keep_in_progress(msg, spec.ack_wait))
        try:
            await consumer.handler(event, delivery)
        except Retry as retry:
            span.set_attribute("voice_insight.retry_after_seconds", round(retry.delay, 3))
            await self._settle(msg.nak(delay=max(retry.delay, 0.05)))
            return
        except Reject as reject:
            record_failure(span, reject.reason)
            log.error("%s: rejected a message on %s: %s; terminated", spec.durable, msg.subject, reject.reason)
            REJECTED.labels(spec.durable, reject.reason).inc()
            await self._settle(msg.term())
            return
        except Exception as exc:
            record_failure(span, exc)
            if delivery.last_attempt:
                await self._give_up(consumer, spec, msg, event, exc)
                return
            delay = backoff(delivery.attempt, cap=spec.max_backoff)
            log.warning(
                "%s: attempt %d on %s failed: %s; retry in %.1fs",
                spec.durable,
                delivery.attempt,
                msg.subject,
                type(exc).__name__,
                delay,
            )
            await self._settle(msg.nak(delay=delay))
            return
        finally:
            keepalive.cancel()
        await self._settle(msg.ack_sync())

    async def _give_up(
        self, consumer: _Consumer[Any], spec: ConsumerSpec, msg: Msg, event: Any, exc: BaseException
    ) -> None:
        log.error("%s: giving up on %s: %s", spec.durable, msg.subject, type(exc).__name__)
        if consumer.give_up is None:
            REJECTED.labels(spec.durable, "attempts_exhausted").inc()
            await self._settle(msg.term())
            return
        try:
            await consumer.give_up(event, exc)
        except Exception as give_up_exc:
            log.error("%s: give-up handler failed too: %s", spec.durable, type(give_up_exc).__name__)
            await self._settle(msg.nak(delay=5.0))
            return
        await self._settle(msg.ack_sync())

    async def _watch_backlog(self, every: float = 5.0) -> None:
        """Export this process's consumers' backlog: what waits, what is in flight, what was redelivered."""
        while True:
            for stream, durable in {(s.stream, s.durable) for c in self._consumers for s in c.specs}:
                try:
                    info = await self.js.consumer_info(stream, durable)
                except Exception:
                    continue  # disconnected: the gauges keep their last value until NATS is back
                CONSUMER_PENDING.labels(durable).set(info.num_pending or 0)
                CONSUMER_ACK_PENDING.labels(durable).set(info.num_ack_pending or 0)
                CONSUMER_REDELIVERED.labels(durable).set(info.num_redelivered or 0)
            await asyncio.sleep(every)

    @staticmethod
    async def _settle(action: Awaitable[Any]) -> None:
        """Send an ack/nak; if the connection is gone the server redelivers, which handlers tolerate."""
        try:
            await action
        except Exception as exc:
            log.warning("ack/nak not confirmed (%s); the message may be redelivered", type(exc).__name__)

    @staticmethod
    async def _keep_in_progress(msg: Msg, ack_wait: float) -> None:
        while True:
            await asyncio.sleep(ack_wait / 3)
            try:
                await msg.in_progress()
            except Exception as exc:  # disconnected: redelivery after ack_wait is the designed outcome
                log.debug("in-progress ack not sent: %s", type(exc).__name__)

    # shutdown ------------------------------------------------------------------------------------

    async def close(self, grace: float = 30.0) -> None:
        """Stop fetching, let handlers in flight finish (their acks go out), then close the connection."""
        self._stopping.set()
        if self._backlog_task is not None:
            self._backlog_task.cancel()
        tasks = [t for c in self._consumers for t in c.tasks]
        for task in tasks:
            if self._idle.get(task, True):
                task.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
        # Handlers are done and their acks written; flush them out, then close. (A full `drain()` would also
        # wait out the pull requests we just abandoned, for nothing.)
        try:
            await self.nc.flush(timeout=2)
        except Exception as exc:
            log.warning("final flush failed (%s); unacked work will be redelivered", type(exc).__name__)
        await self.nc.close()
