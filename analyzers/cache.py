"""The analysis cache: the same transcript, analysed by the same mode version and model within an hour, is
answered from here with no LLM call (a note forwarded to several people, a note sent twice).

Keyed by a hash of what decides the answer (mode, version, model, the answer's language, the transcript), so a
key reveals nothing; entries expire after an hour (`ANALYSIS_CACHE_TTL`).
"""

from __future__ import annotations

import hashlib
import logging

import msgspec
import nats.js.errors

from infra.bus import BUCKET_ANALYSIS_CACHE, Bus
from infra.contracts import Section
from infra.definitions import ModeDefinition
from infra.metrics import CACHE

log = logging.getLogger("voice_insight.analyzer")


class CachedAnalysis(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    sections: tuple[Section, ...] = ()
    text: str | None = None


_decode = msgspec.json.Decoder(CachedAnalysis).decode


def cache_key(d: ModeDefinition, lang: str, text: str) -> str:
    material = msgspec.json.encode([d.name, d.version, d.model, lang, text])
    return hashlib.sha256(material).hexdigest()


class AnalysisCache:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def get(self, key: str) -> CachedAnalysis | None:
        """The stored analysis, if any; a cache that cannot be read is a miss, never a failure."""
        try:
            entry = await (await self.bus.kv(BUCKET_ANALYSIS_CACHE)).get(key)
            found = _decode(entry.value) if entry.value else None
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            found = None
        except Exception as exc:
            log.warning("analysis cache not readable (%s)", type(exc).__name__)
            found = None
        CACHE.labels("analysis", "hit" if found else "miss").inc()
        return found

    async def put(self, key: str, analysis: CachedAnalysis) -> None:
        try:
            await (await self.bus.kv(BUCKET_ANALYSIS_CACHE)).put(key, msgspec.json.encode(analysis))
        except Exception as exc:
            log.warning("analysis not cached (%s)", type(exc).__name__)
