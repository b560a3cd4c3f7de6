"""A service's life as one async context manager: side door, connect, wait for the topology that provisioning
(`voice-insight provision`) creates; then drain and close in order.

    async with lifespan("formatter", settings, port, log, stop) as life:
        bot = make_bot(settings)
        life.closing(bot.session.close)  # closed after the bus has drained
        await life.until("Telegram", lambda: bot.set_my_commands(COMMANDS))
        await life.bus.start(FormatterService(life.bus, ...))
        life.ready()
        await stop.wait()

A dependency that is not there yet (NATS, provisioning, Telegram, a model that does not load) is waited for, with
a growing pause between tries, and `/health` answers 503 "waiting for …" meanwhile: a service that exited instead
would be restarted at once by its supervisor, in a tight loop (podman restarts with no backoff), and say nothing
useful. What no wait can fix (a refused login, a refused token) still ends the service with a clear line. A stop
asked for while waiting ends the wait.

On the way out the order is always the same: background work (`Life.background`) is stopped first, then the bus
stops fetching and lets handlers in flight finish (their acks go out), then whatever was registered with
`closing` is closed, newest first (the Bot API session, the LLM client), and the health endpoint goes last,
answering 503 "not connected" meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from infra.bus import Bus, LoginRefused
from infra.runtime.health import HealthServer
from infra.runtime.settings import Settings

log = logging.getLogger("voice_insight.service")

T = TypeVar("T")

FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0


class Stopped(Exception):
    """A stop was asked for while the service waited for a dependency."""


class Refused(Exception):
    """A dependency answered with what no wait fixes (a refused login or token): the service ends, with this line
    and the settings error's exit code, so a supervisor that knows that code does not restart it in a loop."""


async def until(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    health: HealthServer,
    stop: asyncio.Event | None,
    fatal: tuple[type[BaseException], ...] = (),
    first: float = FIRST_PAUSE,
    longest: float = LONGEST_PAUSE,
) -> T:
    """`attempt()` until it succeeds, pausing `first`, then twice as long each time up to `longest`; `/health`
    says what is waited for meanwhile. An exception in `fatal` is not waited out: it ends the service (`Refused`)."""
    pause = first
    while True:
        try:
            result = await attempt()
        except fatal as exc:
            raise Refused(f"{what} refused: {exc}") from exc
        except Exception as exc:
            health.waiting_for = what
            said = str(exc)[:300]  # logs are redacted of secrets; the reason is what an operator needs
            log.warning("waiting for %s (%s%s); trying again in %.0f s", what, type(exc).__name__,
                        f": {said}" if said else "", pause)  # fmt: skip
            if stop is None:
                await asyncio.sleep(pause)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), pause)
                except TimeoutError:
                    pass
                else:
                    raise Stopped(what) from exc
            pause = min(pause * 2, longest)
        else:
            if health.waiting_for == what:
                health.waiting_for = None
                log.info("%s reached", what)
            return result


@dataclass
class Life:
    bus: Bus
    health: HealthServer
    log: logging.Logger
    stop: asyncio.Event | None = None
    _closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    async def until(
        self, what: str, attempt: Callable[[], Awaitable[T]], fatal: tuple[type[BaseException], ...] = ()
    ) -> T:
        """Wait for a dependency this service cannot work without (see `until`)."""
        return await until(what, attempt, self.health, self.stop, fatal)

    def background(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` for as long as the service lives (a heartbeat, a gauge refreshed now and then). It is
        stopped first on the way out, before the bus drains, and if it ends on its own by an error, the error is
        logged rather than lost with the task."""

        async def guarded() -> None:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.error("%s stopped: %s", name, type(exc).__name__)

        self._background.append(asyncio.create_task(guarded(), name=name))

    def closing(self, close: Callable[[], Awaitable[object]]) -> None:
        """Close this when the service stops, after the bus has drained (handlers may still need it until then)."""
        self._closers.append(close)

    def ready(self, message: str = "ready", *args: object) -> None:
        """`/health` turns 200, and the service says so in its own log."""
        self.health.ready = True
        self.log.info(message, *args)


@asynccontextmanager
async def lifespan(
    name: str,
    settings: Settings,
    port: int,
    logger: logging.Logger,
    stop: asyncio.Event | None = None,
    topology: bool = True,
) -> AsyncIterator[Life]:
    connection: list[Bus] = []
    health = HealthServer(name, port, lambda: bool(connection) and connection[0].connected, settings.metrics_host)
    await health.start()  # first: an orchestrator sees "waiting for NATS" rather than nothing
    try:
        bus = await until(
            "NATS",
            lambda: Bus.connect(
                settings.nats_servers,
                name=name,
                replicas=settings.jetstream_replicas,
                wait=10,
                **settings.nats_credentials,
            ),
            health,
            stop,
            fatal=(LoginRefused,),
        )
    except BaseException:
        await health.stop()
        raise
    connection.append(bus)
    life = Life(bus, health, logger, stop)
    try:
        if topology:  # a service creates no stream or bucket: its account may not
            await life.until("provisioning (`voice-insight provision`)", lambda: bus.await_topology(wait=10))
        yield life
    finally:
        for task in life._background:
            task.cancel()
        await asyncio.gather(*life._background, return_exceptions=True)
        await bus.close()
        for close in reversed(life._closers):
            try:
                await close()
            except Exception as exc:
                log.warning("closing failed (%s)", type(exc).__name__)
        await health.stop()
