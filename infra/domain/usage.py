"""Usage per mode and version, kept by the hour for a day: what `/stats` shows the admins.

Prometheus has the same figures as metrics (`voice_insight_mode_calls_total`, `..._mode_latency_seconds`,
`voice_insight_llm_tokens_total`, `voice_insight_errors_total`); this is the copy a person can ask the bot for
without a monitoring stack. Each analysis adds to its hour's counter in `voice-usage` (compare-and-set, so
replicas never lose each other's counts); hours expire after 25 h. Nothing in it is about a user.
"""

from __future__ import annotations

import bisect
import datetime
import time
from dataclasses import dataclass

import msgspec
import nats.js.errors

from infra.bus import Bus, change_key
from infra.bus.names import BUCKET_USAGE

LATENCY_BOUNDS = (0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 10, 15, 20, 30)
"""Upper bounds of the latency buckets (seconds); one more bucket holds everything slower."""


class HourOfUse(msgspec.Struct, kw_only=True):
    calls: int = 0
    errors: dict[str, int] = {}
    input_tokens: int = 0
    output_tokens: int = 0
    cache_hits: int = 0
    latency: list[int] = msgspec.field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))

    def add(self, other: HourOfUse) -> None:
        self.calls += other.calls
        for reason, count in other.errors.items():
            self.errors[reason] = self.errors.get(reason, 0) + count
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_hits += other.cache_hits
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]

    def percentile(self, q: float) -> float | None:
        """The latency under which `q` of the timed calls finished (a bucket's upper bound); None if none."""
        total = sum(self.latency)
        if not total:
            return None
        running = 0
        for index, count in enumerate(self.latency):
            running += count
            if running >= q * total:
                return float(LATENCY_BOUNDS[index]) if index < len(LATENCY_BOUNDS) else float("inf")
        return float("inf")


_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(HourOfUse).decode


def _hour(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y%m%d%H")


async def record(
    bus: Bus,
    mode: str,
    version: int,
    *,
    error: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    latency: float | None = None,
    cache_hit: bool = False,
) -> None:
    """Add one analysis to its mode's and version's hour."""
    one = HourOfUse(calls=1, input_tokens=input_tokens, output_tokens=output_tokens, cache_hits=int(cache_hit))
    if error:
        one.errors = {error: 1}
    if latency is not None:
        one.latency[bisect.bisect_left(LATENCY_BOUNDS, latency)] += 1

    def add(current: bytes | None) -> bytes:
        hour = _decode(current) if current else HourOfUse()
        hour.add(one)
        return _encode(hour)

    await change_key(await bus.kv(BUCKET_USAGE), f"{mode}.v{version}.{_hour(time.time())}", add)


@dataclass(frozen=True)
class Usage:
    mode: str
    version: int
    day: HourOfUse


async def last_day(bus: Bus, now: float | None = None) -> list[Usage]:
    """Every mode and version used in the last 24 hours, summed, by mode then version."""
    kv = await bus.kv(BUCKET_USAGE)
    keys = await bus.kv_keys(BUCKET_USAGE)
    now = now or time.time()
    hours = {_hour(now - 3600 * h) for h in range(24)}
    totals: dict[tuple[str, int], HourOfUse] = {}
    for key in keys:
        mode, version, hour = key.rsplit(".", 2)
        if hour not in hours:
            continue
        try:
            entry = await kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            continue
        if entry.value:
            totals.setdefault((mode, int(version.removeprefix("v"))), HourOfUse()).add(_decode(entry.value))
    return [Usage(mode, version, day) for (mode, version), day in sorted(totals.items())]
