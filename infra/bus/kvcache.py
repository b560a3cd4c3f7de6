"""A cache in a KV bucket: typed values under hashed keys, expiring with the bucket's TTL.

A cache is an optimisation, never a dependency: a cache that cannot be read is a miss and one that cannot be
written is skipped, both logged; every look-up counts as a hit or a miss (`voice_insight_cache_requests_total`).
"""

from __future__ import annotations

import logging
from typing import Generic, TypeVar

import msgspec
import nats.js.errors

from infra.bus import Bus
from infra.runtime.metrics import CACHE

log = logging.getLogger("voice_insight.cache")

V = TypeVar("V", bound=msgspec.Struct)


class KVCache(Generic[V]):
    def __init__(self, bus: Bus, bucket: str, kind: type[V], name: str) -> None:
        self.bus = bus
        self.bucket = bucket
        self.name = name
        """The `cache` label of its metric."""
        self._decode = msgspec.json.Decoder(kind).decode
        for result in ("hit", "miss"):  # exported from the start: a hit ratio needs both, even at 0
            CACHE.labels(name, result)

    async def get(self, key: str) -> V | None:
        try:
            entry = await (await self.bus.kv(self.bucket)).get(key)
            found = self._decode(entry.value) if entry.value else None
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            found = None
        except Exception as exc:
            log.warning("%s cache not readable (%s)", self.name, type(exc).__name__)
            found = None
        CACHE.labels(self.name, "hit" if found is not None else "miss").inc()
        return found

    async def put(self, key: str, value: V) -> None:
        try:
            await (await self.bus.kv(self.bucket)).put(key, msgspec.json.encode(value))
        except Exception as exc:
            log.warning("%s not cached (%s)", self.name, type(exc).__name__)
