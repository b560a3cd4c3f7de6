"""Rates shared by every process of a deployment: one budget of calls a second, however many replicas spend it.

A process that paces itself alone spends the whole budget by itself: two formatters and a gateway, each keeping
to the Bot API's thirty messages a second, send ninety, and Telegram answers the difference with 429s. Here
each call first takes the next slot of its key in a KV bucket (`voice-pace`, each key kept five minutes after
its last call), by compare-and-set, so all of them together keep to the rate.

The scheme is GCRA (the generic cell rate algorithm): a key holds the theoretical time its next call is due; a
call may go `burst - 1` intervals before that, and moves it one interval on. One read and one conditional write
a call; within a process a key's slots are taken one at a time, so only other processes make a write retry.
Each host uses its own clock (kept by NTP: a skew of milliseconds shifts a slot by as much); a due time more
than `MAX_AHEAD` away is not believed (a host's clock far ahead, a value written by something else) and the
key starts again from now, so no skew holds every writer back for longer than that.
"""

from __future__ import annotations

import asyncio
import random
import time

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

MAX_AHEAD = 60.0
"""Seconds ahead a key's next slot may plausibly be: with the backlog waiting in JetStream, not in pacing, a
queue of reservations never grows near this."""


class PaceUnavailable(ConnectionError):
    """The shared slots cannot be reached now (NATS away, too much contention): pace locally meanwhile. A
    `ConnectionError`, so a caller that may not import the bus (`infra.voice.telegram`) can tell it apart."""


class SharedPace:
    def __init__(self, kv: KeyValue, timeout: float = 2.0, tries: int = 50) -> None:
        self.kv = kv
        self.timeout = timeout
        self.tries = tries
        self._locks = [asyncio.Lock() for _ in range(64)]

    async def reserve(self, key: str, interval: float, burst: int = 1, at: float | None = None) -> float:
        """Take the next slot of `key` (a call every `interval` seconds, up to `burst` at once) no earlier than
        `at` (a wall-clock time; now by default); returns how many seconds from now to wait before making the
        call. Raises `PaceUnavailable` rather than wait for NATS."""
        try:
            return await asyncio.wait_for(self._reserve(key, interval, burst, at), self.timeout)
        except (TimeoutError, nats.errors.Error) as exc:
            raise PaceUnavailable(type(exc).__name__) from None

    async def ahead(self, key: str, interval: float, burst: int = 1) -> float:
        """How long a call of `key` would wait if it took a slot now; takes none. For a call that is not worth
        a wait (a progress edit): asked first, it leaves the slots to calls that are."""
        try:
            entry = await asyncio.wait_for(self.kv.get(key), self.timeout)
        except nats.js.errors.KeyNotFoundError:
            return 0.0
        except (TimeoutError, nats.errors.Error) as exc:
            raise PaceUnavailable(type(exc).__name__) from None
        now = time.time()
        return max(0.0, self._due(entry.value, now) - interval * (max(1, burst) - 1) - now)

    async def _reserve(self, key: str, interval: float, burst: int, at: float | None) -> float:
        async with self._locks[hash(key) % len(self._locks)]:
            return await self._take(key, interval, burst, at)

    async def _take(self, key: str, interval: float, burst: int, at: float | None) -> float:
        tolerance = interval * (max(1, burst) - 1)
        for _ in range(self.tries):
            now = time.time()
            start = max(now, at or now)
            try:
                entry = await self.kv.get(key)
                due, revision = self._due(entry.value, now), entry.revision
            except nats.js.errors.KeyNotFoundError:
                due, revision = now, None
            slot = max(start, due - tolerance)
            following = repr(max(start, due) + interval).encode()
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

    @staticmethod
    def _due(value: bytes | None, now: float) -> float:
        """The key's next due time, unless it is not to be believed: then now."""
        try:
            due = float(value or b"0")
        except ValueError:
            return now
        return due if due <= now + MAX_AHEAD else now
