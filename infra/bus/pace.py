"""Rates shared by every process of a deployment: one budget of calls a second, however many replicas spend it.

A process that paces itself alone spends the whole budget by itself: two formatters and a gateway, each keeping
to the Bot API's thirty messages a second, send ninety, and Telegram answers the difference with 429s. Here
each call first takes the next slot of its key in a KV bucket (`voice-pace`, each key kept five minutes after
its last call), by compare-and-set, so all of them together keep to the rate.

The scheme is GCRA (the generic cell rate algorithm): a key holds the theoretical time its next call is due; a
call may go `burst - 1` intervals before that, and moves it one interval on. One read and one conditional write
a call, no lock, no clock but each host's own (kept by NTP: a skew of milliseconds shifts a slot by as much).
"""

from __future__ import annotations

import asyncio
import logging
import time

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

log = logging.getLogger("voice_insight.bus")


class PaceUnavailable(Exception):
    """The shared slots cannot be reached now (NATS away, too much contention): pace locally meanwhile."""


class SharedPace:
    def __init__(self, kv: KeyValue, timeout: float = 1.0, tries: int = 20) -> None:
        self.kv = kv
        self.timeout = timeout
        self.tries = tries

    async def reserve(self, key: str, interval: float, burst: int = 1) -> float:
        """Take the next slot of `key` (a call every `interval` seconds, up to `burst` at once); returns how many
        seconds to wait before making the call. Raises `PaceUnavailable` rather than wait for NATS."""
        try:
            return await asyncio.wait_for(self._reserve(key, interval, burst), self.timeout)
        except (TimeoutError, nats.errors.Error) as exc:
            raise PaceUnavailable(type(exc).__name__) from None

    async def _reserve(self, key: str, interval: float, burst: int) -> float:
        tolerance = interval * (max(1, burst) - 1)
        for _ in range(self.tries):
            now = time.time()
            try:
                entry = await self.kv.get(key)
                due, revision = float(entry.value or b"0"), entry.revision
            except nats.js.errors.KeyNotFoundError:
                due, revision = now, None
            slot = max(now, due - tolerance)
            following = repr(max(now, due) + interval).encode()
            try:
                if revision is None:
                    await self.kv.create(key, following)
                else:
                    await self.kv.update(key, following, last=revision)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                continue  # another process took a slot meanwhile: read again
            return slot - now
        raise PaceUnavailable("contention")
