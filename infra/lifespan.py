"""A service's life as one async context manager: connect, side door, wait for the topology that provisioning
(`voice-insight provision`) creates; then drain and close in order.

    async with lifespan("formatter", settings, port, log) as life:
        bot = make_bot(settings)
        life.closing(bot.session.close)  # closed after the bus has drained
        await life.bus.start(FormatterService(life.bus, ...))
        life.ready()
        await stop.wait()

On the way out the order is always the same: the bus stops fetching and lets handlers in flight finish (their
acks go out), then whatever was registered with `closing` is closed, newest first (the Bot API session, the LLM
client), and the health endpoint goes last, answering 503 "not connected" meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from infra.bus import Bus
from infra.health import HealthServer
from infra.settings import Settings

log = logging.getLogger("voice_insight.service")


@dataclass
class Life:
    bus: Bus
    health: HealthServer
    log: logging.Logger
    _closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)

    def closing(self, close: Callable[[], Awaitable[object]]) -> None:
        """Close this when the service stops, after the bus has drained (handlers may still need it until then)."""
        self._closers.append(close)

    def ready(self, message: str = "ready", *args: object) -> None:
        """`/health` turns 200, and the service says so in its own log."""
        self.health.ready = True
        self.log.info(message, *args)


@asynccontextmanager
async def lifespan(
    name: str, settings: Settings, port: int, logger: logging.Logger, topology: bool = True
) -> AsyncIterator[Life]:
    bus = await Bus.connect(
        settings.nats_servers, name=name, replicas=settings.jetstream_replicas, **settings.nats_credentials
    )
    health = HealthServer(name, port, lambda: bus.connected, settings.metrics_host)
    await health.start()
    life = Life(bus, health, logger)
    try:
        if topology:
            await bus.await_topology()  # a service creates no stream or bucket: its account may not
        yield life
    finally:
        await bus.close()
        for close in reversed(life._closers):
            try:
                await close()
            except Exception as exc:
                log.warning("closing failed (%s)", type(exc).__name__)
        await health.stop()
