"""The notes' desk: the formatter answers `notes.get`, a stored note asked for by its exact key.

The gateway shows the buttons under an answer, and a press needs the note (its transcript, the modes it offered).
It may not read the notes' bucket itself: any read grant on it would also answer a key with a wildcard in it, and
so every chat's notes. The formatter, which keeps the notes, answers for one key at a time instead.
"""

from __future__ import annotations

from infra.bus import Bus
from infra.bus.names import SUBJECT_NOTE_GET, inbox_prefix
from infra.domain.notes import answer_note_request

ASKER = "gateway"
"""The one account that asks: its inbox is the only reply subject answered."""


async def serve_notes(bus: Bus) -> None:
    """Every formatter replica answers; one of them each request."""
    await bus.serve(
        SUBJECT_NOTE_GET, "formatter", lambda request: answer_note_request(bus, request), inbox_prefix(ASKER)
    )
