"""`voice-insight up`'s supervisor on its own: restarts, stops, and a stop that races a restart."""

from __future__ import annotations

import asyncio
import sys

import pytest

from infra.ops import launcher
from infra.ops.launcher import Child, Supervisor, plan, transcriber_env
from infra.runtime.health import HealthServer
from infra.service.lifespan import Refused, Stopped, until
from tests.support import free_port


async def test_a_child_respawned_while_stopping_is_told_to_stop_too() -> None:
    supervisor = Supervisor({})
    real_spawn = supervisor.spawn

    async def spawn_then_stop(*args, **kwargs):  # type: ignore[no-untyped-def]
        proc = await real_spawn(*args, **kwargs)
        supervisor.stopping.set()  # the stop arrives while this child is being (re)started
        return proc

    supervisor.spawn = spawn_then_stop  # type: ignore[method-assign]
    sleeper = Child("sleeper", (sys.executable, "-c", "import time; time.sleep(600)"), 0)
    keeper = asyncio.create_task(supervisor.keep(sleeper, "37"))
    await supervisor.stop(["sleeper"])  # what `up` does: it may run before the new process is known
    await asyncio.wait_for(keeper, 20)
    assert supervisor.procs["sleeper"].returncode is not None


async def test_a_crashing_child_is_restarted() -> None:
    supervisor = Supervisor({})
    crasher = Child("crasher", (sys.executable, "-c", "raise SystemExit(3)"), 0)
    keeper = asyncio.create_task(supervisor.keep(crasher, "37"))
    first = None
    while first is None or supervisor.procs["crasher"] is first:
        first = first or supervisor.procs.get("crasher")
        await asyncio.sleep(0.1)
    supervisor.stopping.set()
    await asyncio.wait_for(keeper, 20)


def test_metrics_port_zero_turns_every_side_door_off() -> None:
    assert {c.metrics_port for c in plan(2, ["DEFAULT", "TONE"], 0)} == {0}
    assert [c.metrics_port for c in plan(1, ["DEFAULT"], 9100)] == [9102, 9103, 9104, 9105, 9106, 9101]
    replicas = plan(1, ["DEFAULT"], 9100, formatters=2)  # `up --formatters 2`: the same command twice
    assert [c.name for c in replicas if "formatter" in c.name] == ["formatter-1", "formatter-2"]
    assert len({c.metrics_port for c in replicas}) == len(replicas)


async def test_the_side_door_listens_on_loopback_unless_told_otherwise() -> None:
    server = HealthServer("test", free_port(), lambda: True)
    await server.start()
    try:
        assert server._runner is not None
        assert [host for host, *_ in server._runner.addresses] == ["127.0.0.1"]
    finally:
        await server.stop()


def test_transcribers_on_one_machine_share_its_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two models each on every core are slower together than each on half (bench/long.py): `up` shares them out,
    unless the operator chose."""
    monkeypatch.setattr(launcher, "available_cpus", lambda: 8)
    assert transcriber_env(1, {}) == {}
    assert transcriber_env(2, {}) == {"WHISPER_THREADS": "4"}
    assert transcriber_env(3, {}) == {"WHISPER_THREADS": "2"}
    assert transcriber_env(16, {}) == {"WHISPER_THREADS": "1"}
    assert transcriber_env(2, {"WHISPER_THREADS": "6"}) == {}


async def test_a_dependency_not_there_yet_is_waited_for_and_said_on_health() -> None:
    """Issue 19: a service that cannot reach NATS, provisioning, Telegram or its model waits with a growing pause,
    and /health says what for, instead of exiting into its supervisor's tight restart loop."""
    health = HealthServer("test", 0, lambda: True)
    health.ready = True
    seen: list[tuple[int, dict[str, str]]] = []
    tries = 0

    async def telegram() -> str:
        nonlocal tries
        tries += 1
        seen.append(health.status())
        if tries < 3:
            raise ConnectionError("unreachable")
        return "answered"

    assert await until("Telegram", telegram, health, None, first=0.01) == "answered"
    assert seen[1] == (503, {"status": "waiting", "reason": "waiting for Telegram"})
    assert health.status()[0] == 200 and health.waiting_for is None

    async def refused() -> None:
        raise PermissionError("a setting to fix")

    with pytest.raises(Refused, match="NATS refused: a setting to fix"):  # what no wait fixes ends the service
        await until("NATS", refused, health, None, fatal=(PermissionError,))

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)

    async def never() -> None:
        raise ConnectionError("still down")

    with pytest.raises(Stopped):  # a stop asked for while waiting ends the wait
        await asyncio.wait_for(until("NATS", never, health, stop, first=10), 5)
