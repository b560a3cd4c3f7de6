"""Who may use the bot, how much, and in what order.

* **Access**: an allow-list of user and chat ids (`ALLOWED_USERS`), or explicitly `open`. Unset means closed:
  a bot someone found by name must not make us pay for `o3` on every note they send. A stranger is told their
  own id, so the owner can add it.
* **Per user**: notes in flight (`USER_MAX_PENDING`), notes per minute (`USER_NOTES_PER_MINUTE`) and minutes of
  speech per day (`USER_DAILY_MINUTES`). Defaults a person never reaches by hand; a flood gets a clear,
  localized message instead of making everyone wait.
* **For the whole bot**: LLM tokens per day (`DAILY_TOKEN_BUDGET`). Past it, analyses stop and answers carry the
  transcript with a note saying why.
* **Fair order**: a user's first `FAIR_SHARE` notes in flight go to `voice.audio`; any more go to
  `voice.audio.queued`, which transcribers take only when `voice.audio` is empty. Someone with one note is
  never queued behind someone else's fifty.

Counting needs no counters that could drift after a crash: a note in flight is one message on the subject
`inflight.<user>.<cid>` of the `INFLIGHT` stream (one hour at most, purged when the note is answered), a note
taken in is one message on `recent.<user>.<cid>` of the `RECENT` stream (kept one minute), and the server
counts subjects for us. Users appear only as keyed hashes; minutes and tokens per day are compare-and-set
counters in KV buckets that expire within a day.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging

import nats.js.errors
from nats.js.kv import KeyValue

from infra.bus import Bus, change_key
from infra.bus.names import STREAM_INFLIGHT, STREAM_RECENT

log = logging.getLogger("voice_insight.limits")

FAIR_SHARE = 2
"""Notes per user at the front of the transcribers' queue; the rest wait in the overflow queue."""


def user_key(key: bytes, user_id: int) -> str:
    """A user as the bus may know them: a keyed hash, countable, never reversible."""
    return hmac.new(key, f"user:{user_id}".encode(), hashlib.sha256).hexdigest()[:32]


def today() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")


class UserLedger:
    """The gateway's view of one user's recent and pending notes."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def pending(self, user: str) -> int:
        return await self.bus.count_subjects(STREAM_INFLIGHT, f"inflight.{user}.*")

    async def recent(self, user: str) -> int:
        return await self.bus.count_subjects(STREAM_RECENT, f"recent.{user}.*")

    async def taken_in(self, user: str, cid: str) -> None:
        await self.bus.mark(f"recent.{user}.{cid}", msg_id=f"recent.{cid}")

    async def in_flight(self, user: str, cid: str) -> None:
        await self.bus.mark(f"inflight.{user}.{cid}", msg_id=f"inflight.{cid}")


async def note_finished(bus: Bus, cid: str) -> None:
    """The note is answered: it no longer counts against its user's notes in flight."""
    await bus.purge(STREAM_INFLIGHT, f"inflight.*.{cid}")


class DailyCounter:
    """A number per key per UTC day in a KV bucket, added to with compare-and-set (no lost updates)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def get(self, name: str) -> float:
        try:
            entry = await self.kv.get(f"{name}.{today()}")
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return 0.0
        return float(entry.value or b"0")

    async def add(self, name: str, amount: float) -> float:
        value = await change_key(
            self.kv, f"{name}.{today()}", lambda old: f"{float(old or b'0') + amount:.3f}".encode()
        )
        return float(value)
