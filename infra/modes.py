"""Live analysis modes: analyzers announce themselves, the gateway reads who is there.

The set of modes a voice note waits for is whatever is live when it arrives. A heartbeat keeps each
announcement fresh inside a KV bucket whose entries expire (`MODES_TTL`), so a mode whose analyzers all died
drops out within that TTL and new notes stop waiting for it. Nothing else needs to know a mode exists: this is
what lets a new analyzer join by subscribing, with no change anywhere else.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import msgspec
import nats.js.errors

from infra.bus import BUCKET_MODES, MODES_TTL, Bus
from infra.contracts import ModeInfo, encode

log = logging.getLogger("voice_insight.modes")

_decode = msgspec.json.Decoder(ModeInfo).decode


async def live_modes(bus: Bus) -> list[ModeInfo]:
    """Modes announced within the TTL, sorted by name (DEFAULT first by convention)."""
    try:
        kv = await bus.kv(BUCKET_MODES)
        keys = await kv.keys()
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.NoKeysError):
        return []  # no analyzer has announced itself (yet)
    modes: list[ModeInfo] = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            continue
        if entry.value:
            modes.append(_decode(entry.value))
    return sorted(modes, key=lambda m: (m.mode != "DEFAULT", m.mode))


async def announce_forever(bus: Bus, info_factory: Callable[[], ModeInfo], every: float = MODES_TTL / 3) -> None:
    """Heartbeat: re-put this mode's announcement well inside the bucket's TTL until cancelled."""
    while True:
        info = info_factory()
        try:
            kv = await bus.kv(BUCKET_MODES)
            await kv.put(info.mode, encode(info))
        except Exception as exc:  # NATS restarting: the next beat will land; the TTL gives us slack
            log.warning("mode heartbeat for %s failed: %s", info.mode, type(exc).__name__)
        await asyncio.sleep(every)

