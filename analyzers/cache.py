"""The analysis cache: the same transcript, analysed by the same mode version and model within an hour, is
answered from here with no LLM call (a note forwarded to several people, a note sent twice).

Keyed by a hash of what decides the answer (mode, version, model, the answer's language, the transcript), so a
key reveals nothing; entries expire after an hour (`ANALYSIS_CACHE_TTL`).
"""

from __future__ import annotations

import hashlib

import msgspec

from infra.bus import BUCKET_ANALYSIS_CACHE, Bus
from infra.contracts import Section
from infra.definitions import ModeDefinition
from infra.kvcache import KVCache


class CachedAnalysis(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    sections: tuple[Section, ...] = ()
    text: str | None = None


def cache_key(d: ModeDefinition, lang: str, text: str) -> str:
    material = msgspec.json.encode([d.name, d.version, d.model, lang, text])
    return hashlib.sha256(material).hexdigest()


def analysis_cache(bus: Bus) -> KVCache[CachedAnalysis]:
    return KVCache(bus, BUCKET_ANALYSIS_CACHE, CachedAnalysis, "analysis")
