"""The "answered" marks in `voice-answered`: who is answering a voice note, how far they got, whether it is done.

One key per note (its correlation ID), one typed value:

* `Claimed(owner, parts_sent, brief)`: a formatter is sending the answer (or, `brief`, showing progress in the
  status message: the same exclusive hold, so a progress edit can never land after the answer);
  `parts_sent` of its messages are out. The
  owner rewrites the mark (compare-and-set) after every part and as a heartbeat while it waits, so a mark whose
  revision stops changing for a whole lease belongs to a dead formatter.
* `Released(parts_sent, shown)`: the owner hit a transient error and stepped back; whoever comes next resumes
  from `parts_sent` of the answer as rendered with the analyses `shown`, so no part is ever sent twice or skipped.
  Both carry `pinged`: the answer began as a new message rather than in the status, which must then go.
* `Sent(outcome)`: done. Nothing about this note is sent again: not by the formatter, not by the gateway when
  Telegram repeats the update, not by an analyzer replaying its backlog.

The gateway writes `Sent(outcome="refused")` for notes it refused at intake; analyzers only read. `/forget` leaves
`FORGOTTEN` in place of each erased note's mark, for the mark's day: it says nothing of the note but that it was
answered and forgotten, and it keeps the note answered, so that neither an event of it that comes late nor its
update sent again by Telegram brings any of it back.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue


class Claimed(msgspec.Struct, frozen=True, kw_only=True, tag="claimed"):
    owner: str
    parts_sent: int = 0
    brief: bool = False
    """Held for one progress edit of the status message (a second at most): worth a short wait, not a lease."""
    shown: tuple[str, ...] | None = None
    """The modes whose analyses the answer was rendered with when its first part went out: a resumed answer is
    rendered with these again, whatever landed since, so its parts are the ones already begun."""
    progress: float | None = None
    """How far the status message shows the note (`formatter.progress`): no formatter shows less after it."""
    progress_at: float = 0.0
    """When that was shown (Unix time): the next progress edit, by any formatter, waits its turn after it."""
    pinged: bool = False
    """The answer's first part went out as a message of its own, not as an edit of the status (the note had
    waited long): whoever resumes it sends the rest the same way and makes sure the status is gone."""


class Released(msgspec.Struct, frozen=True, kw_only=True, tag="released"):
    parts_sent: int = 0
    shown: tuple[str, ...] | None = None
    progress: float | None = None
    progress_at: float = 0.0
    pinged: bool = False


class Sent(msgspec.Struct, frozen=True, kw_only=True, tag="sent"):
    outcome: Literal["answered", "refused", "undeliverable", "forgotten"] = "answered"
    parts: int = 1


Mark = Claimed | Released | Sent

FORGOTTEN = Sent(outcome="forgotten", parts=0)
"""What is left of a note its chat's `/forget` erased: its mark, saying only that."""

encode_mark = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Mark).decode


def decode_mark(value: bytes) -> Mark:
    """A stored mark; values written before the marks were typed (`sent`, `claimed <time>`) still read."""
    if value.startswith(b"sent"):
        return Sent()
    if value.startswith(b"claimed"):
        return Claimed(owner="unknown")
    return _decode(value)


async def read_mark(kv: KeyValue, cid: str) -> tuple[Mark | None, int | None]:
    """The note's mark and its revision, or (None, None) when nobody has claimed it."""
    try:
        entry = await kv.get(cid)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None, None
    if not entry.value:
        return None, entry.revision
    return decode_mark(entry.value), entry.revision


async def is_answered(kv: KeyValue, cid: str) -> bool:
    mark, _ = await read_mark(kv, cid)
    return isinstance(mark, Sent)


async def leave_forgotten(kv: KeyValue, cid: str) -> None:
    """The note's mark becomes `FORGOTTEN`, whatever it said (a bucket of one revision per key keeps no other)."""
    await kv.put(cid, encode_mark(FORGOTTEN))
