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
import random
import time

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue


class PaceUnavailable(Exception):
    """The shared slots cannot be reached now (NATS away, too much contention): pace locally meanwhile."""


class SharedPace:
    def __init__(self, kv: KeyValue, timeout: float = 2.0, tries: int = 50) -> None:
        self.kv = kv
        self.timeout = timeout
        self.tries = tries
        # Within a process a key's slots are taken one at a time (a burst of sixty sends would otherwise race
        # sixty compare-and-sets on one key): only other processes can make a write retry.
        self._locks = [asyncio.Lock() for _ in range(64)]

    async def reserve(self, key: str, interval: float, burst: int = 1) -> float:
        """Take the next slot of `key` (a call every `interval` seconds, up to `burst` at once); returns how many
        seconds to wait before making the call. Raises `PaceUnavailable` rather than wait for NATS."""
        try:
            return await asyncio.wait_for(self._reserve(key, interval, burst), self.timeout)
        except (TimeoutError, nats.errors.Error) as exc:
            raise PaceUnavailable(type(exc).__name__) from None

    async def ahead(self, key: str, interval: float, burst: int = 1) -> float:
        """How long a call of `key` would wait if it took a slot now; takes none. For a call that is not worth
        a long wait (a progress edit): asked first, it leaves the slots to calls that are."""
        try:
            entry = await asyncio.wait_for(self.kv.get(key), self.timeout)
        except nats.js.errors.KeyNotFoundError:
            return 0.0
        except (TimeoutError, nats.errors.Error) as exc:
            raise PaceUnavailable(type(exc).__name__) from None
        due = float(entry.value or b"0")
        return max(0.0, due - interval * (max(1, burst) - 1) - time.time())

    async def _reserve(self, key: str, interval: float, burst: int) -> float:
        async with self._locks[hash(key) % len(self._locks)]:
            return await self._take(key, interval, burst)

    async def _take(self, key: str, interval: float, burst: int) -> float:
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
                await asyncio.sleep(random.uniform(0, 0.002))  # another process took a slot meanwhile: again
                continue
            return slot - now
        raise PaceUnavailable("contention")
