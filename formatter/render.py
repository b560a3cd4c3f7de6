"""Turning a finished join into Telegram HTML messages of at most 4096 characters.

Rendering works on *pieces*: small HTML strings that never open a tag they do not close. Long prose (a ten
minute transcript) is cut into word-bounded pieces *before* escaping, so no cut lands inside an entity like
`&amp;` or a tag. Messages are then packed greedily from whole pieces; the HTML length bounds the visible
length Telegram counts, so a packed message always fits.
"""

from __future__ import annotations

import html
import re

from formatter.join import JoinState
from infra.contracts import Analysis
from infra.telegram import MESSAGE_LIMIT
from infra.texts import duration_limit, text

_LANGUAGE_NAMES = {"ru": {"ru": "русский", "en": "английский"}, "en": {"ru": "Russian", "en": "English"}}
_PIECE_BUDGET = 3500  # leaves room for a heading in the same message


def esc(value: str) -> str:
    return html.escape(value, quote=False)


def _prose(value: str, budget: int = _PIECE_BUDGET) -> list[str]:
    """Escaped pieces of `value`, each at most `budget` characters, cut at sentence or word ends."""
    pieces: list[str] = []
    current = ""
    for word in re.findall(r"\S+\s*", value):
        if len(word) > budget:  # a pathological "word": hard-cut it
            for i in range(0, len(word), budget // 6):
                pieces.append(esc(word[i : i + budget // 6]))
            continue
        if len(esc(current + word)) > budget:
            pieces.append(esc(current.rstrip()))
            current = ""
        current += word
    if current.strip():
        pieces.append(esc(current.rstrip()))
    return pieces


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _analysis_pieces(analysis: Analysis) -> list[str]:
    pieces = [f"<b>{esc(analysis.title)}</b>"]
    for section in analysis.sections:
        if section.body:
            body = _prose(section.body)
            pieces.append(f"<b>{esc(section.heading)}:</b> {body[0]}")
            pieces.extend(body[1:])
        else:
            pieces.append(f"<b>{esc(section.heading)}:</b>")
        for item in section.items:
            item_pieces = _prose(item)
            pieces.append(f"• {item_pieces[0]}")
            pieces.extend(item_pieces[1:])
    if not analysis.sections and analysis.text:
        pieces.extend(_prose(analysis.text))
    return pieces


def render_answer(state: JoinState) -> list[str]:
    """The full answer: transcript, then each mode in the order the note expected them, then any note."""
    assert state.origin is not None and state.transcript is not None
    lang = state.origin.ui_language
    t = state.transcript
    language = _LANGUAGE_NAMES.get(lang, _LANGUAGE_NAMES["en"]).get(t.language, t.language)
    blocks: list[list[str]] = [
        [f"📝 <b>{text('transcript', lang)}</b> · {esc(language)} · {_clock(t.duration)}", *_prose(t.text)]
    ]
    for mode in state.modes:
        analysis = state.analyses.get(mode)
        if analysis is not None and analysis.error is None:
            blocks.append(_analysis_pieces(analysis))
    # A mode that answered although the note did not wait for it (it joined late) is still worth showing.
    for mode, analysis in sorted(state.analyses.items()):
        if mode not in state.modes and analysis.error is None:
            blocks.append(_analysis_pieces(analysis))
    missing = state.missing_modes()
    if missing:
        blocks.append([text("missing_modes", lang, modes=esc(", ".join(missing)))])
    return pack(blocks)


def render_failure(reason: str, lang: str, max_audio_seconds: float) -> str:
    return text(reason, lang, limit=duration_limit(max_audio_seconds, lang))


def pack(blocks: list[list[str]], limit: int = MESSAGE_LIMIT) -> list[str]:
    """Join blocks (blank line between) and pieces (newline between) into as few messages as fit."""
    messages: list[str] = []
    current = ""
    for block in blocks:
        for index, piece in enumerate(block):
            separator = "" if not current else ("\n\n" if index == 0 else "\n")
            if current and len(current) + len(separator) + len(piece) > limit:
                messages.append(current)
                current, separator = "", ""
            current += separator + piece
    if current:
        messages.append(current)
    return messages
