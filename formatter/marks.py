"""The answered mark: exactly one answer per note, even with two formatters and crashes in between.

The mark is a key of its own (see `infra.domain.answers`) created atomically: whoever creates it owns the reply,
and records each message of the answer as it goes out. A claim whose owner died is taken over once it has
stopped changing for a whole lease; the new owner resumes after the last part that was sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from infra.domain.answers import Claimed, Mark, Released, Sent, encode_mark, is_answered, read_mark

log = logging.getLogger("voice_insight.formatter")


BRIEF_WAIT = 0.5
"""How soon the answer looks again when a progress edit holds the note."""


class ClaimLost(Exception):
    """Someone else owns the note's answer now (we were taken for dead): stop sending."""


@dataclass(frozen=True)
class AlreadySent:
    pass


@dataclass(frozen=True)
class HeldElsewhere:
    retry_in: float


class Owned:
    """Our claim on a note's answer: we send parts from `parts_sent` on, and every step is a compare-and-set on
    the mark's revision, so the moment someone else has taken the note over we learn it and stop."""

    def __init__(
        self,
        kv: KeyValue,
        cid: str,
        owner: str,
        revision: int,
        parts_sent: int,
        shown: tuple[str, ...] | None = None,
        progress: float | None = None,
        progress_at: float = 0.0,
        pinged: bool = False,
    ) -> None:
        self.kv = kv
        self.cid = cid
        self.owner = owner
        self.revision = revision
        self.parts_sent = parts_sent
        self.shown = shown
        """The modes the answer begun was rendered with (None: nothing of it is out yet)."""
        self.progress = progress
        self.progress_at = progress_at
        """How far the status message shows the note, and since when (see `Claimed`)."""
        self.pinged = pinged
        """The answer began as a message of its own (see `Claimed.pinged`)."""
        self._lock = asyncio.Lock()

    async def _write(self, mark: Mark) -> None:
        async with self._lock:
            try:
                self.revision = await self.kv.update(self.cid, encode_mark(mark), last=self.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                raise ClaimLost(self.cid) from None

    async def advance(self, parts_sent: int, shown: tuple[str, ...] | None = None, pinged: bool = False) -> None:
        """Another part is out; this must land before the next part goes (else a takeover repeats it). `shown`:
        the modes the answer was rendered with, and `pinged`, how its first part went out: both kept from the
        first part on."""
        shown = self.shown if self.shown is not None else shown
        pinged = self.pinged if self.parts_sent else pinged
        await _persist(lambda: self._write(self._claimed(parts_sent, shown, pinged)))
        self.parts_sent, self.shown, self.pinged = parts_sent, shown, pinged

    async def heartbeat(self) -> None:
        await self._write(self._claimed(self.parts_sent, self.shown, self.pinged))

    def _claimed(self, parts_sent: int, shown: tuple[str, ...] | None, pinged: bool) -> Claimed:
        return Claimed(
            owner=self.owner,
            parts_sent=parts_sent,
            shown=shown,
            progress=self.progress,
            progress_at=self.progress_at,
            pinged=pinged,
        )

    async def release(self) -> None:
        """Step back after a transient failure: the next attempt, anyone's, resumes where we stopped."""
        try:
            released = Released(
                parts_sent=self.parts_sent,
                shown=self.shown,
                progress=self.progress,
                progress_at=self.progress_at,
                pinged=self.pinged,
            )
            await self._write(released)
        except Exception as exc:  # unreachable NATS: the claim goes stale after a lease instead
            log.warning("%s: could not release the claim (%s)", self.cid, type(exc).__name__)

    async def done(self, outcome: str = "answered") -> None:
        """The user has the answer. Must land, even across a leader election."""
        await _persist(lambda: self._write(Sent(outcome=outcome, parts=self.parts_sent)))  # type: ignore[arg-type]

    async def keep_alive(self, every: float) -> None:
        """Rewrite the claim while we work, so nobody mistakes a slow answer (flood control) for a dead one."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.heartbeat()
            except ClaimLost:
                return  # the next part's `advance` raises it where the sending stops
            except Exception as exc:
                log.warning("%s: claim heartbeat failed (%s)", self.cid, type(exc).__name__)


async def _persist(write: Callable[[], Awaitable[None]], attempts: int = 6) -> None:
    """Retry a mark's write through a brief NATS outage (leader election); a lost claim is final."""
    for attempt in range(attempts):
        try:
            await write()
            return
        except ClaimLost:
            raise
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25 * 2**attempt)


class AnswerMarks:
    """Claims on answers, with leases that need no synchronised clocks.

    A claim is stale when its revision has not changed for a whole `lease` *as seen by us*: the owner rewrites
    it at least every `lease / 3` while alive. A foreign claim that is still fresh means "try again later"
    (the caller naks with a delay), never "done". Staleness is judged on our own monotonic clock from the first
    time we saw that revision, so it cannot race with JetStream's redelivery timer.
    """

    def __init__(self, kv: KeyValue, lease: float = 15.0) -> None:
        self.kv = kv
        self.lease = lease
        self._seen: dict[str, tuple[int, float]] = {}

    async def is_sent(self, cid: str) -> bool:
        return await is_answered(self.kv, cid)

    async def peek(self, cid: str) -> Mark | None:
        """The note's mark as it is now, claiming nothing."""
        mark, _ = await read_mark(self.kv, cid)
        return mark

    async def claim(self, cid: str, brief: bool = False) -> Owned | AlreadySent | HeldElsewhere:
        """`brief`: only to edit the status message once (progress), which the answer waits for only briefly."""
        owner = uuid.uuid4().hex
        while True:
            mark, revision = await read_mark(self.kv, cid)
            try:
                match mark:
                    case None:
                        created = await self.kv.create(cid, encode_mark(Claimed(owner=owner, brief=brief)))
                        return Owned(self.kv, cid, owner, created, 0)
                    case Sent():
                        self._seen.pop(cid, None)
                        return AlreadySent()
                    case Released(parts_sent=parts, shown=shown, progress=progress, progress_at=progress_at):
                        claimed = Claimed(
                            owner=owner,
                            parts_sent=parts,
                            brief=brief,
                            shown=shown,
                            progress=progress,
                            progress_at=progress_at,
                            pinged=mark.pinged,
                        )
                        updated = await self.kv.update(cid, encode_mark(claimed), last=revision)
                        return Owned(self.kv, cid, owner, updated, parts, shown, progress, progress_at, mark.pinged)
                    case Claimed(parts_sent=parts, brief=held_briefly) as held:
                        assert revision is not None
                        wait = self._stale_in(cid, revision)
                        if wait > 0:
                            return HeldElsewhere(min(wait, BRIEF_WAIT) if held_briefly else wait)
                        log.warning("%s: taking over a claim whose owner stopped answering", cid)
                        taken = msgspec.structs.replace(held, owner=owner, brief=False)
                        updated = await self.kv.update(cid, encode_mark(taken), last=revision)
                        self._seen.pop(cid, None)
                        return Owned(
                            self.kv,
                            cid,
                            owner,
                            updated,
                            parts,
                            held.shown,
                            held.progress,
                            held.progress_at,
                            held.pinged,
                        )
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # the mark moved under us: look again

    def _stale_in(self, cid: str, revision: int) -> float:
        """Seconds until this revision of a foreign claim counts as abandoned (0: it does now)."""
        now = time.monotonic()
        seen = self._seen.get(cid)
        if seen is None or seen[0] != revision:
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[cid] = (revision, now)
            return self.lease
        return max(0.0, seen[1] + self.lease - now)
