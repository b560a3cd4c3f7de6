"""The bus's delivery rules, straight against a real nats-server: retry, reject, give up, workers that die."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import msgspec
import pytest
from nats.js import api
from prometheus_client import REGISTRY

from infra.bus import Bus, ConsumerSpec, Delivery, EarlierAttemptsDied, Fail, Reject, Retry, consumes, deliver
from infra.bus.names import (
    BUCKET_AUDIO,
    BUCKET_PIECES,
    KV_BUCKETS,
    STREAM,
    USER_DATA_TTL,
    kv_stream,
    object_stream,
)
from infra.domain.contracts import Failure
from infra.runtime.metrics import REJECTED
from infra.runtime.settings import load_settings
from tests.support import NatsServer, eventually, free_port, subscriber

_n = itertools.count(1)


def a_subject() -> str:
    return f"voice.test.bus{next(_n)}"


async def publish(bus: Bus, subject: str, detail: str = "x") -> None:
    event = Failure(correlation_id=f"cid-{subject}", stage="gateway", reason="internal", detail=detail)
    await bus.publish(subject, event, msg_id=f"{subject}-{detail}")


def server_url(bus: Bus) -> str:
    return f"nats://{bus.nc.connected_url.netloc}"  # type: ignore[union-attr]


async def test_retry_redelivers_after_the_delay_and_then_acks(private_bus: Bus) -> None:
    subject = a_subject()
    seen: list[tuple[int, float]] = []

    async def handler(event: Failure, delivery: Delivery) -> None:
        seen.append((delivery.attempt, time.monotonic()))
        if delivery.attempt < 3:
            raise Retry(0.4, "not yet")

    spec = ConsumerSpec(f"retry{next(_n)}", subject, ack_wait=5.0)
    await private_bus.start(subscriber(spec, Failure, handler))
    await publish(private_bus, subject)
    await eventually(lambda: len(seen) == 3)
    assert [a for a, _ in seen] == [1, 2, 3]
    assert all(later - earlier >= 0.35 for (_, earlier), (_, later) in zip(seen, seen[1:]))


async def test_reject_terminates_the_message_and_counts_it(private_bus: Bus) -> None:
    subject = a_subject()
    calls = 0

    async def handler(event: Failure, delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        raise Reject("poison_for_test")

    spec = ConsumerSpec(f"reject{next(_n)}", subject, ack_wait=1.0)
    await private_bus.start(subscriber(spec, Failure, handler))
    await publish(private_bus, subject)
    await eventually(lambda: REJECTED.labels(spec.durable, "poison_for_test")._value.get() == 1)
    await asyncio.sleep(2.5)  # two ack waits: a terminated message is never delivered again
    assert calls == 1
    info = await private_bus.js.consumer_info(STREAM, spec.durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_failures_back_off_and_the_last_attempt_gives_up_with_a_message(private_bus: Bus) -> None:
    subject = a_subject()
    attempts: list[int] = []
    given_up: list[BaseException] = []

    async def handler(event: Failure, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise RuntimeError("always")

    async def give_up(event: Failure, exc: BaseException) -> None:
        given_up.append(exc)

    spec = ConsumerSpec(f"giveup{next(_n)}", subject, ack_wait=5.0, max_attempts=3)
    await private_bus.start(subscriber(spec, Failure, handler, give_up=give_up))
    await publish(private_bus, subject)
    await eventually(lambda: bool(given_up))
    assert attempts == [1, 2, 3] and isinstance(given_up[0], RuntimeError)


async def test_a_message_whose_worker_dies_every_time_still_reaches_give_up(private_bus: Bus) -> None:
    """Killed workers raise nothing: the attempt count alone decides, and the user still hears back."""
    subject = a_subject()
    spec = ConsumerSpec(f"dies{next(_n)}", subject, ack_wait=1.0, max_attempts=2)
    started = asyncio.Event()
    handled: list[int] = []
    given_up: list[BaseException] = []

    async def dies(event: Failure, delivery: Delivery) -> None:
        handled.append(delivery.attempt)
        started.set()
        await asyncio.Event().wait()  # out of memory, any moment now

    async def give_up(event: Failure, exc: BaseException) -> None:
        given_up.append(exc)

    await private_bus.ensure_consumer(spec)
    await publish(private_bus, subject)
    for _ in range(spec.max_attempts):
        worker = await Bus.connect([server_url(private_bus)], name="doomed")
        started.clear()
        await worker.start(subscriber(spec, Failure, dies, give_up=give_up))
        await asyncio.wait_for(started.wait(), 20)
        await worker.nc.close()  # kill -9: no ack, no nak, no give-up
        for task in [t for c in worker._consumers for t in c.tasks]:
            task.cancel()
    survivor = await Bus.connect([server_url(private_bus)], name="survivor")
    await survivor.start(subscriber(spec, Failure, dies, give_up=give_up))
    try:
        await eventually(lambda: bool(given_up))
    finally:
        await survivor.close(grace=1)
    assert handled == [1, 2], "the third delivery went straight to give_up"
    assert isinstance(given_up[0], EarlierAttemptsDied)


async def test_a_failing_term_does_not_kill_the_worker(private_bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    from nats.aio.msg import Msg

    subject = a_subject()
    handled: list[str] = []
    real_term = Msg.term

    async def broken_term(self: Msg, delay: float = 0) -> None:  # type: ignore[override]
        raise ConnectionError("gone")

    async def handler(event: Failure, delivery: Delivery) -> None:
        handled.append(event.detail or "")
        if event.detail == "poison":
            raise Reject("poison_for_test")

    monkeypatch.setattr(Msg, "term", broken_term)
    spec = ConsumerSpec(f"term{next(_n)}", subject, ack_wait=5.0)
    await private_bus.start(subscriber(spec, Failure, handler))
    await publish(private_bus, subject, "poison")
    await eventually(lambda: "poison" in handled)
    monkeypatch.setattr(Msg, "term", real_term)
    await publish(private_bus, subject, "next")
    await eventually(lambda: "next" in handled)


async def test_undecodable_messages_are_rejected(private_bus: Bus) -> None:
    subject = a_subject()
    spec = ConsumerSpec(f"undecodable{next(_n)}", subject, ack_wait=1.0)
    await private_bus.start(subscriber(spec, Failure, lambda e, d: asyncio.sleep(0)))
    await private_bus.js.publish(subject, msgspec.json.encode({"schema": "nonsense/9"}))
    await eventually(lambda: REJECTED.labels(spec.durable, "undecodable")._value.get() == 1)


async def test_consumer_settings_changed_in_code_reach_an_existing_durable(private_bus: Bus) -> None:
    subject = a_subject()
    durable = f"settings{next(_n)}"
    await private_bus.ensure_consumer(ConsumerSpec(durable, subject, ack_wait=30.0))
    await private_bus.ensure_consumer(ConsumerSpec(durable, subject, ack_wait=7.0))
    info = await private_bus.js.consumer_info(STREAM, durable)
    assert info.config.ack_wait == 7.0 and info.config.max_deliver == -1


async def test_a_service_declares_its_consumers_beside_its_handlers(private_bus: Bus) -> None:
    subject = a_subject()
    seen: list[Failure] = []

    class Service:
        name = f"declared{next(_n)}"

        @consumes(subject, "{name}-consumer", ack_wait=5.0, max_attempts=2)
        async def on_failure(self, event: Failure, delivery: Delivery) -> None:
            seen.append(event)  # typed by the annotation: the bus decoded a Failure

    service = Service()
    started = await private_bus.start(service)
    assert [spec.durable for spec in started] == [f"{Service.name}-consumer"]
    info = await private_bus.js.consumer_info(STREAM, f"{Service.name}-consumer")
    assert info.config.ack_wait == 5.0 and info.config.filter_subject == subject
    await publish(private_bus, subject, "declared")
    await eventually(lambda: bool(seen))
    assert isinstance(seen[0], Failure) and seen[0].detail == "declared"


def sample(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, labels)
    return found or 0.0


async def test_telemetry_wraps_every_handler_under_its_consumer_stage_and_mode(private_bus: Bus) -> None:
    """Handlers count nothing themselves: the bus records each outcome under the labels the consumer declared."""
    subject = a_subject()
    told: list[str] = []

    class Service:
        mode = f"M{next(_n)}"

        @consumes(subject, "{mode}-consumer", stage="analyze", mode="{mode}", ack_wait=5.0, give_up="tell")
        async def handle(self, event: Failure, delivery: Delivery) -> None:
            if event.detail == "early" and delivery.attempt == 1:
                raise Retry(0.2, error="upstream_busy")
            if event.detail == "broken":
                raise Fail("cannot_do", "this one never works")

        async def tell(self, event: Failure, exc: BaseException) -> None:
            told.append(f"{event.detail}:{getattr(exc, 'reason', '?')}")

    service = Service()
    consumer, labels = f"{Service.mode}-consumer", {"stage": "analyze", "mode": Service.mode}
    await private_bus.start(service)
    for detail in ("fine", "early", "broken"):
        await publish(private_bus, subject, detail)
    await eventually(lambda: sample("voice_insight_processed_total", **labels) == 3)

    assert told == ["broken:cannot_do"], "a Fail reaches give_up, so the user hears back"
    assert sample("voice_insight_handled_total", consumer=consumer, outcome="done") == 2
    assert sample("voice_insight_handled_total", consumer=consumer, outcome="retry") == 1
    assert sample("voice_insight_handled_total", consumer=consumer, outcome="failed") == 1
    assert sample("voice_insight_errors_total", **labels, reason="upstream_busy") == 1
    assert sample("voice_insight_errors_total", **labels, reason="cannot_do") == 1
    assert sample("voice_insight_stage_seconds_count", **labels) == 3, "done and failed work is timed, retries not"
    info = await private_bus.js.consumer_info(STREAM, consumer)
    assert info.num_ack_pending == 0 and info.num_pending == 0, "a Fail is settled, not redelivered"


async def test_deliver_settles_like_the_bus_without_a_server() -> None:
    """The outcome table in memory: what a unit test of a handler sees is what the bus would do."""
    given: list[BaseException] = []

    async def give_up(event: str, exc: BaseException) -> None:
        given.append(exc)

    async def handler(event: str, delivery: Delivery) -> None:
        match event:
            case "retry":
                raise Retry(3.0)
            case "fail":
                raise Fail("no_speech")
            case "reject":
                raise Reject("poison")
            case "crash":
                raise RuntimeError("boom")

    def on(attempt: int) -> Delivery:
        return Delivery(subject="voice.test", attempt=attempt, max_attempts=3)

    assert (await deliver(handler, "ok", on(1), give_up)).outcome == "done"
    retry = await deliver(handler, "retry", on(1), give_up)
    assert (retry.outcome, retry.delay, retry.reason) == ("retry", 3.0, None)
    failed = await deliver(handler, "fail", on(1), give_up)
    assert (failed.outcome, failed.reason, failed.told) == ("failed", "no_speech", True)
    assert (await deliver(handler, "reject", on(1), give_up)).terminates
    error = await deliver(handler, "crash", on(2), give_up)
    assert (error.outcome, error.reason, error.delay) == ("error", "RuntimeError", 1.0)
    gave_up = await deliver(handler, "crash", on(3), give_up)
    assert (gave_up.outcome, gave_up.told, gave_up.terminates) == ("gave_up", True, False)
    dead = await deliver(handler, "ok", on(4), give_up)
    assert dead.outcome == "gave_up" and isinstance(dead.cause, EarlierAttemptsDied)
    assert [type(e).__name__ for e in given] == ["Fail", "RuntimeError", "EarlierAttemptsDied"]
    assert (await deliver(handler, "crash", on(3))).terminates, "nobody to tell: terminated, not acked"


async def test_one_worker_takes_from_another_handlers_durable_only_when_its_own_is_empty(private_bus: Bus) -> None:
    """The transcriber's shape: new notes first, then pieces of long ones, on one worker: never two at once."""
    first, second = a_subject(), a_subject()
    order: list[str] = []
    busy = 0
    most = 0

    class Service:
        name = f"shared{next(_n)}"

        @consumes(first, "{name}-first", ack_wait=5.0, then=("on_second",))
        async def on_first(self, event: Failure, delivery: Delivery) -> None:
            await self.work(f"first {event.detail}")

        @consumes(second, "{name}-second", ack_wait=5.0)
        async def on_second(self, event: Failure, delivery: Delivery) -> None:
            await self.work(f"second {event.detail}")

        async def work(self, what: str) -> None:
            nonlocal busy, most
            busy += 1
            most = max(most, busy)
            order.append(what)
            await asyncio.sleep(0.3)
            busy -= 1

    for n in range(3):
        await publish(private_bus, second, str(n))
    started = await private_bus.start(Service())
    assert [spec.filter_subject for spec in started] == [first]  # on_second has no workers of its own
    await eventually(lambda: len(order) == 1)
    await publish(private_bus, first, "a")  # arrives while the worker is on a second-priority message
    await eventually(lambda: len(order) == 4)
    assert most == 1
    assert order[0] == "second 0" and order[1] == "first a", order


async def test_a_service_logs_in_with_the_password_from_its_secret_file(tmp_path: Path) -> None:
    """Compose's way: NATS_URL without credentials, NATS_USER, and the password in a mounted secret file."""
    server = NatsServer(free_port(), tmp_path / "nats", login=("voice", "pw-from-a-file-42"))
    server.start()
    try:
        (tmp_path / "nats_password").write_text("pw-from-a-file-42\n")
        settings = load_settings(
            environ={
                "NATS_URL": server.url,
                "NATS_USER": "voice",
                "NATS_PASSWORD_FILE": str(tmp_path / "nats_password"),
            },
            dotenv=None,
        )
        assert "pw-from-a-file" not in ",".join(settings.nats_servers)
        bus = await Bus.connect(settings.nats_servers, name="secret-file", wait=5, **settings.nats_credentials)
        await bus.ensure_topology()
        await bus.close(grace=1)
        # Without the password: refused at once and said so, not retried for ever behind a wall of warnings.
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="refused the login: check NATS_USER and NATS_PASSWORD_FILE"):
            await Bus.connect(settings.nats_servers, name="no-password", wait=30)
        assert time.monotonic() - started < 10
    finally:
        server.stop()


async def test_provisioning_brings_a_buckets_ttl_up_to_date(tmp_path: Path) -> None:
    """Issue 21 (2): transcribed pieces of a long note were kept an hour; pieces that waited longer behind new
    notes found the early ones gone, the note was never stitched and its status hung. They are kept as long as the
    note's audio now, and provisioning an existing deployment changes the bucket it created with the old TTL."""
    server = NatsServer(free_port(), tmp_path / "nats")
    server.start()
    try:
        bus = await Bus.connect([server.url], name="provision-ttl", wait=5)
        await bus.js.create_key_value(config=api.KeyValueConfig(bucket=BUCKET_PIECES, ttl=3600.0))  # as before
        await bus.ensure_topology()
        for bucket, ttl, _ in KV_BUCKETS:
            info = await bus.js.stream_info(kv_stream(bucket))
            assert info.config.max_age == (ttl or 0), bucket
        pieces = await bus.js.stream_info(kv_stream(BUCKET_PIECES))
        audio = await bus.js.stream_info(object_stream(BUCKET_AUDIO))
        assert pieces.config.max_age == audio.config.max_age == USER_DATA_TTL, "pieces live as long as the audio"
        await bus.close(grace=1)
    finally:
        server.stop()
