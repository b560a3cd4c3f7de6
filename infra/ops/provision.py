"""`voice-insight provision`: create the streams and buckets, and seed the mode registry, once, as the admin user.

The services' own accounts (`infra.ops.access`) may use the topology but not create or change it, so this runs first:
a one-shot compose service the others wait for (`service_completed_successfully`), a step of `voice-insight up`,
or by hand before an upgrade that changes a stream. Safe to run again: what exists is brought up to date, and
the registry is seeded only with modes it does not have (those it has only gain titles and headings in
languages added since).
"""

from __future__ import annotations

import asyncio

from infra.bus import Bus
from infra.domain.definitions import shipped
from infra.domain.registry import ModeRegistry
from infra.runtime.settings import Settings
from infra.service.run import load_or_exit


async def provision(bus: Bus) -> list[str]:
    """Create or update every stream and bucket; seed the registry with the shipped modes it lacks (their names),
    and give the shipped modes it has the words of languages added since (`ModeRegistry.add_languages`)."""
    await bus.ensure_topology()
    registry = await ModeRegistry.open(bus)
    seeded = await registry.seed(shipped())
    await registry.add_languages(shipped())
    return seeded


async def provision_with(settings: Settings) -> str:
    """Provision the NATS the settings name; what was done, in a line."""
    bus = await Bus.connect(
        settings.nats_servers, name="provision", replicas=settings.jetstream_replicas, **settings.nats_credentials
    )
    try:
        seeded = await provision(bus)
        return f"{len(bus.topology())} streams and buckets ready" + (
            f"; modes seeded: {', '.join(seeded)}" * bool(seeded)
        )
    finally:
        await bus.close(grace=1)


def run() -> int:
    settings = load_or_exit("provision", ())
    print(f"voice-insight provision: {asyncio.run(provision_with(settings))}", flush=True)
    return 0
