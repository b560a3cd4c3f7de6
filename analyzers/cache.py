"""The analysis cache: the same transcript, analysed by the same mode version and model within an hour, is
answered from here with no LLM call (a note forwarded to several people, a note sent twice).

Keyed by the mode and hashes of what decides the answer: `<MODE>.<transcript digest>.<version, model, answer
language>`, so a key reveals nothing of the note; a mode's entries lie under its name, the one prefix its analyzer
may write (an analyzer of another mode cannot plant an entry this one would publish as its own); and a chat's
`/forget` finds every analysis of its transcripts by the digest. Entries expire after an hour
(`ANALYSIS_CACHE_TTL`).
"""

from __future__ import annotations

import hashlib

import msgspec

from infra.bus import Bus
from infra.bus.kvcache import KVCache
from infra.bus.names import BUCKET_ANALYSIS_CACHE
from infra.domain.contracts import Section
from infra.domain.definitions import ModeDefinition
from infra.domain.notes import text_digest


class CachedAnalysis(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    sections: tuple[Section, ...] = ()
    text: str | None = None


def cache_key(d: ModeDefinition, lang: str, text: str) -> str:
    material = msgspec.json.encode([d.name, d.version, d.model, lang])
    return f"{d.name}.{text_digest(text)}.{hashlib.sha256(material).hexdigest()[:32]}"


def analysis_cache(bus: Bus) -> KVCache[CachedAnalysis]:
    return KVCache(bus, BUCKET_ANALYSIS_CACHE, CachedAnalysis, "analysis")
