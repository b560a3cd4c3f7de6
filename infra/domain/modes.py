"""Live analysis modes: analyzers announce themselves, the gateway reads who is there.

The set of modes a voice note waits for is whatever is live when it arrives. A heartbeat keeps each
announcement fresh inside a KV bucket whose entries expire (`MODES_TTL`), so a mode whose analyzers all died
drops out within that TTL and new notes stop waiting for it. Nothing else needs to know a mode exists: this is
what lets a new analyzer join by subscribing, with no change anywhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

import msgspec
import nats.js.errors

from infra.bus import Bus, encode
from infra.bus.names import BUCKET_MODES, CHAT_MODES_ANNOUNCEMENT, MODES_TTL
from infra.domain.contracts import ModeInfo
from infra.domain.definitions import MODE_NAME
from infra.domain.registry import ModeRegistry, UnknownMode
from infra.runtime.metrics import BAD_MODE_ANNOUNCEMENTS, MODE_LIVE

log = logging.getLogger("voice_insight.modes")

_decode = msgspec.json.Decoder(ModeInfo).decode


async def live_modes(bus: Bus) -> list[ModeInfo]:
    """Modes announced within the TTL and not disabled in the registry, sorted by name (DEFAULT first).

    A mode disabled a moment ago may still be announced (its heartbeat has not seen it yet): the registry
    decides at once. An analyzer written elsewhere, with no registered definition, counts by its announcement."""
    try:
        kv = await bus.kv(BUCKET_MODES)
    except nats.js.errors.BucketNotFoundError:
        return []  # no analyzer has announced itself (yet)
    keys = await bus.kv_keys(BUCKET_MODES)
    modes: list[ModeInfo] = []
    for key in keys:
        if key == CHAT_MODES_ANNOUNCEMENT:
            continue  # chats' own modes are there, none of them a mode of every chat's
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
    live = [m for m in modes if not await _disabled(bus, m.mode)]
    return sorted(live, key=lambda m: (m.mode != "DEFAULT", m.mode))


def mode_titles(modes: Iterable[ModeInfo]) -> dict[str, dict[str, str]]:
    """Each mode's titles by language, `en` always (`ModeInfo.title`): what a note carries to name its modes in
    any language it is answered in (`AudioReceived.titles`)."""
    return {m.mode: {"en": m.title, **m.titles} for m in modes}


async def _disabled(bus: Bus, mode: str) -> bool:
    """Whether the registry has switched an announced mode off (one read; no listing of the registry)."""
    try:
        return not (await (await ModeRegistry.open(bus)).get(mode)).definition.enabled
    except UnknownMode:  # an analyzer written elsewhere: its announcement is all there is
        return False
    except Exception as exc:  # registry unreadable: trust the announcement
        log.warning("mode registry not readable (%s)", type(exc).__name__)
        return False


async def announce_forever(
    bus: Bus, mode: str, info_factory: Callable[[], Awaitable[ModeInfo | None]], every: float = MODES_TTL / 3
) -> None:
    """Heartbeat: re-put this mode's announcement well inside the bucket's TTL until cancelled; withdraw it
    while the factory says None (the mode is disabled)."""
    while True:
        try:
            info = await info_factory()
            kv = await bus.kv(BUCKET_MODES)
            if info is not None:
                await kv.put(mode, encode(info))
            else:
                await kv.delete(mode)
        except Exception as exc:  # NATS restarting: the next beat will land; the TTL gives us slack
            log.warning("mode heartbeat for %s failed: %s", mode, type(exc).__name__)
        await asyncio.sleep(every)


async def export_liveness(bus: Bus, every: float = 15.0) -> None:
    """Keep `voice_insight_mode_live{mode}` current: 1 for a live mode, 0 for an enabled mode that no analyzer
    announces (its notes are answered without it: the `ModeWithoutAnalyzer` alert). Run where analyses are on."""
    while True:
        try:
            live = {m.mode for m in await live_modes(bus)}
            enabled = {d.name for d in await (await ModeRegistry.open(bus)).all() if d.enabled}
            for mode in enabled | live:
                MODE_LIVE.labels(mode).set(1 if mode in live else 0)
        except Exception as exc:
            log.debug("mode liveness not refreshed: %s", type(exc).__name__)
        await asyncio.sleep(every)
