"""The client: one connection to NATS, and everything a service does through it.

Connecting (with a refused login told apart from a server not up yet), checking the topology that provisioning
creates, KV and Object Store access, publishing with trace context and a dedup id, and running the workers of
the consumers a service declares (`infra.bus.consumers`), with in-progress acks and the backlog gauges.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import Attributes

from infra.bus.codec import decoder, encode
from infra.bus.consumers import (
    ConsumerSpec,
    Declared,
    Delivery,
    GiveUp,
    Handler,
    Queue,
    Verdict,
    declaration,
    deliver,
    message_type,
)
from infra.bus.names import (
    BUCKET_AUDIO,
    KV_BUCKETS,
    KV_ENTRY_TTL,
    STREAM,
    USER_DATA_TTL,
    inbox_prefix,
    kv_stream,
    object_stream,
    streams,
)
from infra.bus.observe import ConsumerTelemetry, messaging_attributes
from infra.runtime.metrics import (
    CONSUMER_ACK_PENDING,
    CONSUMER_BACKLOG_AGE,
    CONSUMER_PENDING,
    CONSUMER_REDELIVERED,
    NATS_REFUSED,
    REDELIVERIES,
    REJECTED,
)
from infra.runtime.telemetry import record_failure, tracer

log = logging.getLogger("voice_insight.bus")

T = TypeVar("T")


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


def _same_settings(have: api.ConsumerConfig, want: api.ConsumerConfig) -> bool:
    return (
        have.filter_subject == want.filter_subject
        and float(have.ack_wait or 0) == float(want.ack_wait or 0)
        and (have.max_deliver or -1) == want.max_deliver
        and have.max_ack_pending == want.max_ack_pending
    )


class _Attributes(dict[str, Any]):
    def __init__(self, owner: object) -> None:
        super().__init__()
        self.owner = owner

    def __missing__(self, key: str) -> Any:
        return getattr(self.owner, key)


@dataclass(frozen=True)
class _Route(Generic[T]):
    """One durable a worker takes from, with the handler its messages go to."""

    spec: ConsumerSpec
    decoder: msgspec.json.Decoder
    handler: Handler[T]
    give_up: GiveUp[T] | None
    telemetry: ConsumerTelemetry
    """Counted apart per durable, under its handler's stage and mode."""


@dataclass
class _Consumer:
    routes: tuple[_Route[Any], ...]
    """In priority order: a worker takes from the first that has a message."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def spec(self) -> ConsumerSpec:
        return self.routes[0].spec


def _delivered(info: api.ConsumerInfo) -> int:
    """The last stream sequence handed to the consumer: what follows it has not been delivered yet."""
    return info.delivered.stream_seq if info.delivered and info.delivered.stream_seq else 0


class LoginRefused(ConnectionError):
    """NATS refused the credentials: a setting to fix, not a server to wait for."""


class Bus:
    backlog_every: float = 5.0
    """Seconds between two looks at the backlog of the durables this process exports (`_watch_backlog`)."""

    def __init__(self, nc: NATS, replicas: int = 1) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.replicas = replicas
        self._stopping = asyncio.Event()
        self._consumers: list[_Consumer] = []
        self._served: list[Subscription] = []
        self._idle: dict[asyncio.Task[None], bool] = {}
        self._backlog_task: asyncio.Task[None] | None = None
        self._watched: set[tuple[str, str, str]] = set()
        """Durables of other services whose backlog this process exports too (`watch_backlog`)."""

    # connection ----------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        servers: list[str],
        name: str,
        replicas: int = 1,
        wait: float = 60.0,
        user: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Bus:
        """Connect, retrying while the server is not up yet (compose starts everything at once). `user` and
        `password` (from a secret file: `Settings.nats_credentials`) keep credentials out of the URL, which
        `docker inspect` and process listings show. `tls`: verify the servers against a CA of the cluster's own
        (`tls://` URLs). A user's replies come to an inbox of its own (`inbox_prefix`): its account
        (`infra.ops.access`) may read no other."""

        async def on_disconnect() -> None:
            log.warning("disconnected from NATS")

        async def on_reconnect() -> None:
            log.info("reconnected to NATS")

        refused = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower():
                refused.set()
            if "permissions violation" in str(exc).lower():
                NATS_REFUSED.inc()  # the account lacks a grant: what asked for it waits for an answer in vain
            log.warning("NATS error: %s", exc)

        where = ", ".join(re.sub(r"//[^@/]*@", "//", s) for s in servers)  # no credentials in logs
        deadline = time.monotonic() + wait
        while True:
            nc = NATS()
            connecting = asyncio.ensure_future(
                nc.connect(
                    servers=servers,
                    name=name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]  # seconds, a float in practice
                    connect_timeout=2,
                    user=user,
                    password=password,
                    tls=tls,
                    inbox_prefix=inbox_prefix(user) if user else "_INBOX",
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                    error_cb=on_error,
                )
            )
            # A refused login is retried by the client for ever: stop at once and say why instead.
            told = asyncio.ensure_future(refused.wait())
            await asyncio.wait(
                {connecting, told}, timeout=max(0.1, deadline - time.monotonic()), return_when="FIRST_COMPLETED"
            )
            told.cancel()
            if connecting.done() and connecting.exception() is None:
                return cls(nc, replicas=replicas)
            if not connecting.done():
                connecting.cancel()
                await asyncio.gather(connecting, return_exceptions=True)
                await nc.close()
            if refused.is_set():
                raise LoginRefused(f"NATS at {where} refused the login: check NATS_USER and NATS_PASSWORD_FILE")
            exc = connecting.exception() if not connecting.cancelled() else TimeoutError()
            if time.monotonic() > deadline:
                raise ConnectionError(f"cannot reach NATS at {where}: {type(exc).__name__}") from exc
            await asyncio.sleep(0.5)

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    def _streams(self) -> tuple[api.StreamConfig, ...]:
        return streams(self.replicas)

    async def ensure_topology(self) -> None:
        """Create the streams and buckets if missing, or bring their settings up to date: provisioning
        (`voice-insight provision`), run by a user allowed to (the services are not)."""
        for config in self._streams():
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self.js.update_stream(config)
        for bucket, ttl, history in KV_BUCKETS:
            await self._ensure_kv(bucket, ttl, history)
        try:
            await self.js.object_store(BUCKET_AUDIO)
        except nats.js.errors.BucketNotFoundError:
            await self.js.create_object_store(
                BUCKET_AUDIO, config=api.ObjectStoreConfig(ttl=USER_DATA_TTL, replicas=self.replicas)
            )

    def topology(self) -> set[str]:
        """The names of every stream the deployment has, buckets' streams included."""
        names = {config.name for config in self._streams() if config.name}
        return names | {kv_stream(bucket) for bucket, _, _ in KV_BUCKETS} | {object_stream(BUCKET_AUDIO)}

    async def await_topology(self, wait: float = 60.0) -> None:
        """Wait until provisioning has created every stream and bucket: a service only checks, it creates none
        (it is not allowed to). Fails with what is missing, and what to run, once `wait` is over."""
        deadline = time.monotonic() + wait
        while True:
            try:
                missing = self.topology() - await self._stream_names()
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                missing = self.topology()
            if not missing:
                return
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"NATS has no {', '.join(sorted(missing))}: run `voice-insight provision` first (as the admin user)"
                )
            await asyncio.sleep(0.5)

    async def _api(self, subject: str, request: dict[str, Any]) -> dict[str, Any]:
        """One JetStream API request with the fields nats.py does not pass (paging, subject filters)."""
        reply = await self.nc.request(subject, msgspec.json.encode(request), timeout=5)
        answer: dict[str, Any] = msgspec.json.decode(reply.data)
        if "error" in answer:
            raise nats.js.errors.APIError.from_error(answer["error"])
        return answer

    async def _stream_names(self) -> set[str]:
        """Every stream's name, page by page (the one listing every account may ask for)."""
        names: set[str] = set()
        while True:
            answer = await self._api("$JS.API.STREAM.NAMES", {"offset": len(names)})
            page = answer.get("streams") or []
            names.update(page)
            if not page or len(names) >= answer.get("total", 0):
                return names

    async def _ensure_kv(self, bucket: str, ttl: float | None, history: int = 1) -> KeyValue:
        """Create the bucket, or bring an existing one's TTL and history up to date with the code's."""
        try:
            kv = await self.js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            created = await self.js.create_key_value(
                config=api.KeyValueConfig(bucket=bucket, ttl=ttl, history=history, replicas=self.replicas)
            )
            if bucket not in KV_ENTRY_TTL:
                return created
            kv = created  # its entries' own lifetimes: allowed on the stream below
        config = (await self.js.stream_info(kv_stream(bucket))).config
        entry_ttl = bucket in KV_ENTRY_TTL
        if (
            float(config.max_age or 0) != float(ttl or 0)
            or config.max_msgs_per_subject != history
            or (entry_ttl and not config.allow_msg_ttl)
        ):
            changed = dataclasses.replace(
                config, max_age=ttl or 0, max_msgs_per_subject=history, allow_msg_ttl=config.allow_msg_ttl or entry_ttl
            )
            await self.js.update_stream(changed)
            log.info("bucket %s: TTL %s s, history %d", bucket, ttl or "none", history)
        return kv

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
            max_ack_pending=spec.max_ack_pending,
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

    async def kv_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys that hold a message in `bucket` (deleted ones included: `get` tells them apart).

        Read from the stream's per-subject counts, not with `KeyValue.keys()`: that one starts a watcher whose
        "no more" marker can come before entries already on their way (nats-io/nats.py#842), so a full bucket
        now and then reads as empty. Pages through the server's subject list, which is capped per answer."""
        head = f"$KV.{bucket}."
        keys: list[str] = []
        while True:
            request = {"subjects_filter": f"{head}{prefix}>", "offset": len(keys)}
            answer = await self._api(f"$JS.API.STREAM.INFO.{kv_stream(bucket)}", request)
            page = answer.get("state", {}).get("subjects") or {}
            keys += [subject.removeprefix(head) for subject in page]
            if not page or len(keys) >= answer.get("total", 0):
                return keys

    async def serve(self, subject: str, queue: str, answer: Callable[[bytes], Awaitable[bytes]], askers: str) -> None:
        """Answer requests on `subject` (core NATS, outside every stream), one replica of `queue` each, from the
        account whose inbox is `askers` only (`inbox_prefix(user)`).

        The reply goes where the request says, so a request could name any subject as its reply (a stream's
        purge, a bucket's key): only an inbox of the asking account's is answered, with no header of the
        request's, and the account may publish nothing else for it (`infra.ops.access`, `Role.answers`). A
        request whose answer fails gets none: the asker's wait ends in a timeout, and the failure is logged here."""

        async def on_request(msg: Msg) -> None:
            if not msg.reply.startswith(f"{askers}."):
                log.warning("a request on %s with a reply subject outside %s was refused", subject, askers)
                return
            try:
                reply = await answer(msg.data)
                await self.nc.publish(msg.reply, reply)
            except Exception as exc:
                log.error("a request on %s was not answered (%s)", subject, type(exc).__name__)

        self._served.append(await self.nc.subscribe(subject, queue=queue, cb=on_request))
        await self.nc.flush()  # the server has the subscription: a request from now on finds a responder

    async def ask(self, subject: str, request: msgspec.Struct, timeout: float = 5.0) -> bytes:
        """A request to whoever serves `subject`, and its answer. Nobody serving it for a moment (a replica
        restarting) is waited out within `timeout`, as a slow answer is."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                left = max(0.1, deadline - time.monotonic())
                return (await self.nc.request(subject, encode(request), timeout=left)).data
            except nats.errors.NoRespondersError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)

    async def kv_history(self, bucket: str, key: str) -> list[bytes]:
        """The values `key` has held that the bucket still keeps, oldest first (delete markers left out).

        Read message by message from the stream rather than with `KeyValue.history()`, which has the same
        early-marker race as `keys()` and can answer with part of the history, or none."""
        subject, seq = f"$KV.{bucket}.{key}", 1
        values: list[bytes] = []
        while True:
            try:
                msg = await self.js.get_msg(kv_stream(bucket), seq=seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return values
            if msg.data and not (msg.headers or {}).get("KV-Operation"):
                values.append(msg.data)
            assert msg.seq is not None
            seq = msg.seq + 1

    async def mark(self, subject: str, msg_id: str) -> None:
        """An empty message whose subject is the fact (`inflight.<user>.<cid>`): a stream keeping one per subject
        lets the server count them (`count_subjects`); nobody reads them. `msg_id` makes a repeat a no-op."""
        await self.js.publish(subject, b"", headers={"Nats-Msg-Id": msg_id})

    async def count_subjects(self, stream: str, subjects: str) -> int:
        """How many distinct subjects matching `subjects` hold a message in `stream`."""
        info = await self.js.stream_info(stream, subjects_filter=subjects)
        return len(info.state.subjects or {})

    async def purge(self, stream: str, subject: str) -> None:
        """Remove every message of `stream` on `subject` (wildcards allowed)."""
        await self.js.purge_stream(stream, subject=subject)

    async def delete_message(self, stream: str, seq: int) -> bool:
        """Delete one message by its sequence; False if it is gone already."""
        try:
            await self.js.delete_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            return False
        return True

    async def kv_put(self, bucket: str, key: str, value: bytes, ttl: float) -> None:
        """Write `key` with a lifetime of its own (`ttl` seconds, at least one), shorter than the bucket's: for the
        buckets of `KV_ENTRY_TTL`, whose stream allows it."""
        headers = {"Nats-TTL": f"{max(1, int(ttl))}s"}
        await self.js.publish(f"$KV.{bucket}.{key}", value, stream=kv_stream(bucket), headers=headers)

    async def erase(self, bucket: str, key: str) -> None:
        """Remove a key with every trace of it: its values, its history and the delete marker a KV purge leaves."""
        await self.js.purge_stream(kv_stream(bucket), subject=f"$KV.{bucket}.{key}")

    async def erase_object(self, name: str) -> None:
        """Remove a stored object with every trace of it: its chunks, and the meta record (which names it) that a
        plain delete leaves behind."""
        try:
            await (await self.audio_store()).delete(name)
        except nats.js.errors.NotFoundError:
            pass  # deleted already (after its answer): its meta record is still there
        meta = base64.urlsafe_b64encode(name.encode()).decode()
        await self.js.purge_stream(object_stream(BUCKET_AUDIO), subject=f"$O.{BUCKET_AUDIO}.M.{meta}")

    async def queue(self, durable: str, subject: str, upto: int, cap: int = 100) -> Queue:
        """One look at what waits for the consumer `durable`: its messages on `subject` not delivered yet, before
        sequence `upto` and at most `cap` of them, with how many are being worked on and how many wait in all."""
        info = await self.js.consumer_info(STREAM, durable)
        delivered = _delivered(info)
        waiting: list[int] = []
        at = delivered + 1
        while len(waiting) < cap and at < upto:
            try:
                msg = await self.js.get_msg(STREAM, seq=at, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                break
            if msg.seq is None or msg.seq >= upto:
                break
            waiting.append(msg.seq)
            at = msg.seq + 1
        return Queue(delivered, tuple(waiting), working=info.num_ack_pending or 0, pending=info.num_pending or 0)

    async def storage_used(self) -> int:
        """Bytes JetStream holds for this account on disk (file storage), every replica counted: the account info
        every account may ask for (`$JS.API.INFO`). It names no cap when the server's `max_file_store` is the only
        one, so the cap is a setting (`JETSTREAM_MAX_FILE_STORE`)."""
        return (await self.js.account_info()).storage

    async def kv_size(self, bucket: str) -> int:
        """Live keys in a history-1 bucket: one message per key, expired ones gone."""
        info = await self.js.stream_info(kv_stream(bucket))
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
        ttl: float | None = None,
    ) -> None:
        """Publish to the stream and wait for its ack; `msg_id` makes a repeated publish a no-op. `ttl`: the message
        is removed after this many seconds, sooner than its stream's age (streams that allow it: `FORGET`).

        The producer span's context travels in the message headers (W3C `traceparent`), so whoever consumes
        the message continues the same trace.
        """
        payload = encode(event)
        own = {"Nats-Msg-Id": msg_id, **({"Nats-TTL": f"{int(ttl)}s"} if ttl is not None else {})}
        if not traced:
            await self.js.publish(subject, payload, headers=own, timeout=timeout, stream=stream)
            return
        attributes: Attributes = {**messaging_attributes(subject, "send"), "messaging.message.body.size": len(payload)}
        with tracer().start_as_current_span(f"send {subject}", kind=SpanKind.PRODUCER, attributes=attributes) as span:
            headers: dict[str, str] = dict(own)
            propagate.inject(headers)
            try:
                await self.js.publish(subject, payload, headers=headers, timeout=timeout, stream=stream)
            except Exception as exc:
                record_failure(span, exc)
                raise

    # consuming -----------------------------------------------------------------------------------

    async def start(self, service: object) -> list[ConsumerSpec]:
        """Start every subscriber `service` declares with `@consumes`; their durables exist on return.

        A method another one names in its `then` gets no workers of its own: the other's workers take from its
        durable when theirs is empty (the transcriber's one worker: new notes, then pieces of long ones, then
        the overflow), so a process never works on two things that each want all its cores."""
        declared = {
            name: found
            for name in sorted(dir(type(service)))
            if isinstance(found := getattr(getattr(type(service), name), "__consumes__", None), Declared)
        }
        guests = {item for d in declared.values() for item in d.then}
        started = []
        for name, found in declared.items():
            if name in guests:
                continue
            routes = [self._route(service, name, found.spec)]
            for item in found.then:
                if declared[item].then:
                    raise TypeError(f"{item} is taken from by {name}'s workers; it cannot name lower ones itself")
                routes.append(self._route(service, item, declared[item].spec))
            for route in routes:
                await self.ensure_consumer(route.spec)
            self._run(_Consumer(tuple(routes)))
            started.append(routes[0].spec)
        return started

    @staticmethod
    def _route(service: object, name: str, declared: ConsumerSpec) -> _Route[Any]:
        attributes = _Attributes(service)
        spec = dataclasses.replace(
            declared,
            durable=declared.durable.format_map(attributes),
            filter_subject=declared.filter_subject.format_map(attributes),
            mode=declared.mode.format_map(attributes),
        )
        function = getattr(type(service), name)
        found = declaration(function)
        give_up = getattr(service, found.give_up) if found.give_up else None
        return _Route(spec, decoder(message_type(function)), getattr(service, name), give_up, spec.telemetry())

    def _run(self, consumer: _Consumer) -> None:
        self._consumers.append(consumer)
        for route in consumer.routes:  # exported from the start, at 0: a rate over nothing is no answer at all
            REDELIVERIES.labels(route.spec.durable)
        self._start_backlog()
        for n in range(consumer.spec.concurrency):
            task = asyncio.create_task(self._worker(consumer), name=f"{consumer.spec.durable}-{n}")
            consumer.tasks.append(task)

    def _start_backlog(self) -> None:
        if self._backlog_task is None and not self._stopping.is_set():
            self._backlog_task = asyncio.create_task(self._watch_backlog())

    def watch_backlog(self, durable: str, subject: str, stream: str = STREAM) -> None:
        """Export the backlog of a durable another service consumes, beside this process's own (the same gauges,
        labelled by the durable): with every process of that service gone, nobody else would say what waits for
        it. The account needs to inspect the durable and look messages up in its stream (`inspects` and
        `looks_up` in `infra.ops.access`). Several processes may export the same durable's: aggregate by `max`."""
        self._watched.add((stream, durable, subject))
        self._start_backlog()

    async def _worker(self, consumer: _Consumer) -> None:
        me = asyncio.current_task()
        assert me is not None
        subs: dict[str, Any] = {}
        busy = False
        while not self._stopping.is_set():
            got = False
            for index, route in enumerate(consumer.routes):
                spec = route.spec
                # One consumer: long polls. Several: a long poll on the first only while all are idle, quick
                # looks otherwise, so a message on the first is never kept waiting behind the others.
                if len(consumer.routes) == 1:
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
                    await self._process(route, msg)
                got = bool(msgs)
                break
            busy = got

    async def _process(self, route: _Route[Any], msg: Msg) -> None:
        spec, telemetry = route.spec, route.telemetry
        started = time.perf_counter()
        delivery = Delivery(msg.subject, msg.metadata.num_delivered, spec.max_attempts, msg.metadata.sequence.stream)
        with telemetry.delivery(msg.subject, msg.headers, delivery.attempt) as span:
            try:
                event = route.decoder.decode(msg.data)
            except msgspec.MsgspecError as exc:
                verdict = Verdict("rejected", reason="undecodable")
                log.error("%s: undecodable message on %s: %s", spec.durable, msg.subject, exc)
            else:
                keepalive = asyncio.create_task(self._keep_in_progress(msg, spec.ack_wait))
                try:
                    verdict = await deliver(
                        route.handler,
                        event,
                        delivery,
                        route.give_up,
                        name=spec.durable,
                        max_backoff=spec.max_backoff,
                    )
                finally:
                    keepalive.cancel()
            telemetry.record(span, verdict.outcome, verdict.reason, started)
            if verdict.terminates:
                why = verdict.reason if verdict.outcome == "rejected" else "attempts_exhausted"
                REJECTED.labels(spec.durable, why).inc()
            await self._settle(verdict.settle(msg))

    async def _watch_backlog(self) -> None:
        """Export this process's consumers' backlog, and the watched durables' (`watch_backlog`): what waits and
        since when, what is in flight, what was redelivered."""
        while True:
            for stream, durable, subject in {
                (r.spec.stream, r.spec.durable, r.spec.filter_subject) for c in self._consumers for r in c.routes
            } | self._watched:
                try:
                    info = await self.js.consumer_info(stream, durable)
                    age = await self._backlog_age(stream, subject, info) if info.num_pending else 0.0
                except Exception:
                    continue  # disconnected: the gauges keep their last value until NATS is back
                CONSUMER_PENDING.labels(durable).set(info.num_pending or 0)
                CONSUMER_ACK_PENDING.labels(durable).set(info.num_ack_pending or 0)
                CONSUMER_REDELIVERED.labels(durable).set(info.num_redelivered or 0)
                CONSUMER_BACKLOG_AGE.labels(durable).set(age)
            await asyncio.sleep(self.backlog_every)

    async def oldest_waiting(self, durable: str, subject: str, stream: str = STREAM) -> float | None:
        """When the oldest message on `subject` that the consumer `durable` has not been handed yet was stored
        (a Unix time); None when nothing waits for it (or it does not exist)."""
        try:
            info = await self.js.consumer_info(stream, durable)
            if not info.num_pending:
                return None
            msg = await self.js.get_msg(stream, seq=_delivered(info) + 1, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        return msg.time.timestamp() if msg.time else None

    async def _backlog_age(self, stream: str, subject: str, info: api.ConsumerInfo) -> float:
        """How long the first message the consumer has not been handed yet has been in the stream."""
        try:
            msg = await self.js.get_msg(stream, seq=_delivered(info) + 1, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return 0.0
        return max(0.0, time.time() - msg.time.timestamp()) if msg.time else 0.0

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
        for served in self._served:  # no new requests; those taken are answered
            try:
                await asyncio.wait_for(served.drain(), timeout=5)
            except Exception as exc:
                log.warning("requests not drained (%s); their askers will time out", type(exc).__name__)
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
