"""The join: everything known about one voice note, merged in a KV entry with compare-and-set.

Events arrive in any order, more than once, and possibly at two formatters at the same time. Each merge reads
the entry, applies the event, and writes back only if nobody wrote in between (`update(last=revision)`), so
concurrent merges never lose one another's pieces. Merging the same event twice changes nothing.

The answered mark is a separate key created atomically: whoever creates it owns the reply. A mark whose owner
died before finishing goes stale after the consumer's ack wait, when the redelivered event can take it over.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from infra.contracts import Analysis, AudioReceived, Event, Failure, Origin, Transcript


class JoinState(msgspec.Struct, kw_only=True):
    origin: Origin | None = None
    object_name: str | None = None
    modes: tuple[str, ...] = ()
    received_at: float | None = None
    transcript: Transcript | None = None
    analyses: dict[str, Analysis] = {}
    failure: Failure | None = None

    def apply(self, event: Event) -> "JoinState":
        if isinstance(event, AudioReceived):
            self.origin = event.origin
            self.object_name = event.audio.object_name
            self.modes = event.modes
            self.received_at = event.received_at
        elif isinstance(event, Transcript):
            self.transcript = event
        elif isinstance(event, Analysis):
            previous = self.analyses.get(event.mode)
            if previous is None or previous.error is not None:  # a success beats an earlier failure
                self.analyses[event.mode] = event
        elif isinstance(event, Failure):
            self.failure = event
        return self

    @property
    def failed(self) -> bool:
        """A stage gave up and there is no transcript to show instead."""
        return self.failure is not None and self.transcript is None

    @property
    def complete(self) -> bool:
        if self.origin is None:
            return False
        if self.failed:
            return True
        return self.transcript is not None and all(m in self.analyses for m in self.modes)

    def missing_modes(self) -> list[str]:
        return [m for m in self.modes if m not in self.analyses or self.analyses[m].error is not None]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(JoinState).decode


class JoinStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def get(self, cid: str) -> JoinState | None:
        try:
            entry = await self.kv.get(cid)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        return _decode(entry.value) if entry.value else None

    async def merge(self, cid: str, event: Event) -> JoinState:
        while True:
            try:
                entry = await self.kv.get(cid)
                state, revision = _decode(entry.value), entry.revision
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                state, revision = JoinState(), None
            state.apply(event)
            try:
                if revision is None:
                    await self.kv.create(cid, _encode(state))
                else:
                    await self.kv.update(cid, _encode(state), last=revision)
                return state
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone merged in between: read again and re-apply

    async def forget(self, cid: str) -> None:
        await self.kv.purge(cid)


class AnswerMarks:
    """`claimed <unix time>` while a formatter is replying; `sent` once the user has the answer."""

    def __init__(self, kv: KeyValue, stale_after: float) -> None:
        self.kv = kv
        self.stale_after = stale_after

    async def is_sent(self, cid: str) -> bool:
        try:
            entry = await self.kv.get(cid)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return False
        return bool(entry.value) and entry.value.startswith(b"sent")

    async def claim(self, cid: str) -> bool:
        """True if we now own the reply for `cid`."""
        mark = f"claimed {time.time():.3f}".encode()
        try:
            await self.kv.create(cid, mark)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await self.kv.get(cid)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return await self.claim(cid)
        value = entry.value or b""
        if value.startswith(b"sent"):
            return False
        claimed_at = float(value.split()[1]) if value.startswith(b"claimed ") else 0.0
        if time.time() - claimed_at < self.stale_after:
            return False  # another formatter is replying right now
        try:
            await self.kv.update(cid, mark, last=entry.revision)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False

    async def release(self, cid: str) -> None:
        """Give the claim back after a failed reply, so the retry does not wait for staleness."""
        await self.kv.purge(cid)

    async def mark_sent(self, cid: str, attempts: int = 5) -> None:
        """The user has the answer: this mark must land, even across a leader election."""
        for attempt in range(attempts):
            try:
                await self.kv.put(cid, b"sent")
                return
            except Exception:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
