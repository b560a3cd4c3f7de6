"""The buttons under an answer, and the note kept for them.

A button must never promise what cannot be done: the transcript as files and every live mode the answer does not
show are offered only once the answered note is kept (a day, `infra.domain.notes`), since they need its
transcript. Without the note kept, no buttons; the answer matters more than its buttons. A mode the chat switched
off is never offered (in a group its admins decided for everyone), and a button's re-run of a mode, answered
below the note's answer, gets no buttons of its own: the note's are those above.
"""

from __future__ import annotations

import logging

from aiogram.types import InlineKeyboardMarkup

from formatter.join import JoinState
from formatter.render import shown_modes
from infra.bus import Bus
from infra.domain.modes import live_modes
from infra.domain.notes import NoteStore, StoredNote, button_proof
from infra.voice.buttons import answer_keyboard

log = logging.getLogger("voice_insight.formatter")

MAX_MODE_BUTTONS = 8
"""Buttons for modes the note did not get, at most (Telegram shows a keyboard of 100, people read far fewer)."""


async def keep_for_buttons(bus: Bus, cid: str, state: JoinState) -> InlineKeyboardMarkup | None:
    """Keep the answered note for a day and build the buttons that need it."""
    assert state.origin is not None and state.transcript is not None
    lang = state.origin.ui_language
    try:
        ran = shown_modes(state)
        chat = state.origin.chat_key
        if chat is None:
            return None
        unwanted = {*ran, *state.origin.modes_off}
        offered = [] if state.of_note else [m for m in await live_modes(bus) if m.mode not in unwanted]
        del offered[MAX_MODE_BUTTONS:]
        note = StoredNote(
            origin=state.origin,
            transcript=state.transcript,
            modes_run=ran,
            offered=tuple(m.mode for m in offered),
            fingerprint=state.fingerprint,
            user_key=state.user_key,
            seqs=state.seqs,
        )
        await NoteStore(bus).put(chat, cid, note)
    except Exception as exc:
        log.warning("%s: note not kept for its buttons (%s)", cid, type(exc).__name__)
        return None
    if state.of_note:
        return None
    titles = [(m.mode, m.titles.get(lang) or m.title) for m in offered]
    return answer_keyboard(cid, button_proof(cid, state.transcript.text), titles, lang)
