"""Room in the JetStream store: what it holds against its cap, exported for JetStreamStorageNearlyFull and asked
before a big file is stored.

Everything shares one store with one cap (`max_file_store`, 4 GB in infra/config/nats, `JETSTREAM_MAX_FILE_STORE`):
the notes' events, the buckets, the audio of every note of the last day (files up to 2 GB through a local Bot API
server) and the 16 kHz PCM pieces of long recordings (115 MB an hour of audio). At the cap NATS refuses every
write and no note gets in, however small. So a file that would take the store past `FULL_AT` of its cap is refused
at intake with a clear message, and the last tenth is left to ordinary voice notes (up to `ALWAYS_ROOM_FOR`),
which always go through.

The store's use comes from the account info every account may ask for (`Bus.storage_used`); it counts every
replica, and each server holds one of them (`JETSTREAM_REPLICAS` of every stream), so one server's disk holds that
divided by the replicas.
"""

from __future__ import annotations

import asyncio
import logging

from infra.bus import Bus
from infra.runtime.metrics import JETSTREAM_STORAGE, JETSTREAM_STORAGE_LIMIT

log = logging.getLogger("voice_insight.gateway")

FULL_AT = 0.9
"""Past this share of the cap a big file is refused (JetStreamStorageNearlyFull pages here too)."""
ALWAYS_ROOM_FOR = 2 * 1024 * 1024
"""A file this small is never refused for room: a voice note of several minutes (Opus at 16–32 kbit/s)."""
PCM_BYTES_PER_SECOND = 32_000
"""What a long recording's pieces take in the store while it is transcribed: 16 kHz mono 16-bit samples."""
SPLIT_FROM = 360.0
"""Recordings longer than this are cut into pieces (one and a half of the transcriber's four-minute pieces)."""
EXPORT_EVERY = 15.0


class StoreRoom:
    """The room left in the store, for one process: measured when asked, and exported every `EXPORT_EVERY`."""

    def __init__(self, bus: Bus, cap: int, replicas: int = 1) -> None:
        self.bus = bus
        self.cap = cap
        self.replicas = max(1, replicas)
        JETSTREAM_STORAGE_LIMIT.set(cap)

    async def used(self) -> int:
        """Bytes one server's store holds now; the gauge follows."""
        used = await self.bus.storage_used() // self.replicas
        JETSTREAM_STORAGE.set(used)
        return used

    @staticmethod
    def needs(size: int, seconds: float | None) -> int:
        """What a note takes in the store: its file, and the pieces of a long one while it is transcribed."""
        pieces = PCM_BYTES_PER_SECOND * seconds if seconds and seconds > SPLIT_FROM else 0
        return size + int(pieces)

    async def admits(self, size: int, seconds: float | None = None) -> bool:
        """Whether a file of `size` bytes (and `seconds` of audio, if known) may be stored: a small one always; a
        big one if the store stays under `FULL_AT` of its cap with it. When the store cannot be asked (NATS away a
        moment), it is taken in: storing it fails then too, and is retried like any write."""
        if size <= ALWAYS_ROOM_FOR:
            return True
        try:
            used = await self.used()
        except Exception as exc:
            log.warning("JetStream storage not known (%s); taking the file in", type(exc).__name__)
            return True
        return used + self.needs(size, seconds) <= FULL_AT * self.cap

    async def export_forever(self, every: float = EXPORT_EVERY) -> None:
        while True:
            try:
                await self.used()
            except Exception as exc:
                log.debug("JetStream storage not refreshed: %s", type(exc).__name__)
            await asyncio.sleep(every)
