"""The join: everything known about one voice note, merged in a KV entry with compare-and-set.

Events arrive in any order, more than once, and possibly at two formatters at the same time. Each merge reads
the entry, applies the event, and writes back only if nobody wrote in between (`update(last=revision)`), so
concurrent merges never lose one another's pieces. Merging the same event twice changes nothing.

Whether the note was answered is not the join's business: that is the answered mark (`formatter.marks`).
"""

from __future__ import annotations

import logging

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from infra.bus import change_key
from infra.domain.contracts import AnalysesRequested, Analysis, AudioReceived, Event, Failure, Origin, Transcript

log = logging.getLogger("voice_insight.formatter")

NOT_WANTED = ("dropped", "disabled")
"""Errors that say the mode was not wanted any more when its analysis came, rather than that it failed."""


class JoinState(msgspec.Struct, kw_only=True):
    origin: Origin | None = None
    object_name: str | None = None
    modes: tuple[str, ...] = ()
    received_at: float | None = None
    user_key: str | None = None
    fingerprint: str | None = None
    transcript: Transcript | None = None
    analyses: dict[str, Analysis] = {}
    failure: Failure | None = None
    seqs: tuple[int, ...] = ()
    """Where the note's events lie in the stream: `/forget` deletes them."""
    titles: dict[str, dict[str, str]] = {}
    """The expected modes' titles by language (`AudioReceived.titles`): the answer names modes by them."""
    of_note: str | None = None
    """A button's re-run of a mode on this note (`AnalysesRequested.of_note`): its answer follows the note's."""

    def apply(self, event: Event, seq: int = 0) -> JoinState:
        if seq and seq not in self.seqs:
            self.seqs = (*self.seqs, seq)
        match event:
            case AudioReceived():
                self.origin = event.origin
                self.object_name = event.audio.object_name
                self.modes = event.modes
                self.received_at = event.received_at
                self.user_key = event.user_key
                self.fingerprint = event.audio.fingerprint
                self.titles = event.titles
            case AnalysesRequested():
                self.origin = event.origin
                self.modes = event.modes
                self.received_at = event.received_at
                self.user_key = event.user_key
                self.titles = event.titles
                self.of_note = event.of_note
            case Transcript():
                self.transcript = event
            case Analysis(mode=mode):
                previous = self.analyses.get(mode)
                if previous is None or previous.error is not None:  # a success beats an earlier failure
                    self.analyses[mode] = event
            case Failure():
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
        """The modes the answer lacks: no analysis, or a failed one; not one its chat no longer wanted (a chat mode
        dropped, a mode switched off while the note was on its way), which is no fault to report."""
        return [m for m in self.modes if m not in self.analyses or (self.analyses[m].error not in (None, *NOT_WANTED))]


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

    async def merge(self, cid: str, event: Event, seq: int = 0) -> JoinState:
        def apply(value: bytes | None) -> bytes:
            return _encode((_decode(value) if value else JoinState()).apply(event, seq))

        return _decode(await change_key(self.kv, cid, apply))

    async def forget(self, cid: str) -> None:
        await self.kv.purge(cid)
