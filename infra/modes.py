"""Live analysis modes: analyzers announce themselves, the gateway reads who is there.

The set of modes a voice note waits for is whatever is live when it arrives. A heartbeat keeps each
announcement fresh inside a KV bucket whose entries expire (`MODES_TTL`), so a mode whose analyzers all died
drops out within that TTL and new notes stop waiting for it. Nothing else needs to know a mode exists: this is
what lets a new analyzer join by subscribing, with no change anywhere else.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

import msgspec
import nats.js.errors

from infra.bus import BUCKET_MODES, MODES_TTL, Bus
from infra.contracts import ModeInfo, encode
from infra.metrics import BAD_MODE_ANNOUNCEMENTS

log = logging.getLogger("voice_insight.modes")

_decode = msgspec.json.Decoder(ModeInfo).decode

MODE_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
"""A mode's name: it becomes a subject token and a KV key, and users see it."""


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
        if not entry.value:
            continue
        try:
            info = _decode(entry.value)
        except msgspec.MsgspecError:
            info = None
        if info is None or info.mode != key or not MODE_NAME.fullmatch(info.mode):
            # An analyzer written elsewhere announced itself wrongly: skip it, never refuse notes over it.
            BAD_MODE_ANNOUNCEMENTS.inc()
            log.warning("skipping an unreadable announcement in %s", BUCKET_MODES)
            continue
        modes.append(info)
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
