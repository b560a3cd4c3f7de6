"""Turning a finished join into Telegram HTML messages of at most 4096 characters.

Rendering works on *pieces*: small HTML strings that never open a tag they do not close. Long prose (a ten
minute transcript) is cut into word-bounded pieces *before* escaping, so no cut lands inside an entity like
`&amp;` or a tag. Messages are then packed greedily from whole pieces. Telegram counts a message's length in
UTF-16 code units of its visible text (an emoji outside the BMP counts twice); the UTF-16 length of the HTML
bounds that from above, so a packed message always fits.

Analyses may come from analyzers written elsewhere: empty sections, items and titles are skipped, never
rendered as broken markup and never a crash.
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


def utf16_len(value: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(value.encode("utf-16-le")) // 2


def _prose(value: str, budget: int = _PIECE_BUDGET) -> list[str]:
    """Escaped pieces of `value`, each at most `budget` characters, cut at sentence or word ends."""
    pieces: list[str] = []
    current = ""
    for word in re.findall(r"\S+\s*", value):
        if utf16_len(word) > budget // 2:  # a pathological "word": hard-cut it
            if current.strip():
                pieces.append(esc(current.rstrip()))
                current = ""
            step = budget // 12  # escaping grows a character to at most 5, UTF-16 doubles it at most
            for i in range(0, len(word), step):
                pieces.append(esc(word[i : i + step]))
            continue
        if utf16_len(esc(current + word)) > budget:
            pieces.append(esc(current.rstrip()))
            current = ""
        current += word
    if current.strip():
        pieces.append(esc(current.rstrip()))
    return pieces


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _heading(value: str) -> str:
    value = " ".join(value.split())
    return f"<b>{esc(value)}:</b>" if value else ""


def _analysis_pieces(analysis: Analysis) -> list[str]:
    title = " ".join(analysis.title.split()) or analysis.mode
    pieces = [f"<b>{esc(title)}</b>"]
    for section in analysis.sections:
        heading = _heading(section.heading)
        body = _prose(section.body)
        items = [p for item in section.items if (p := _prose(item))]
        if not body and not items:
            continue  # nothing to say under this heading
        if body:
            pieces.append(f"{heading} {body[0]}".strip())
            pieces.extend(body[1:])
        elif heading:
            pieces.append(heading)
        for item_pieces in items:
            pieces.append(f"• {item_pieces[0]}")
            pieces.extend(item_pieces[1:])
    if len(pieces) == 1 and analysis.text:
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
    shown = [state.analyses[m] for m in state.modes if m in state.analyses]
    # A mode that answered although the note did not wait for it (it joined late) is still worth showing.
    shown += [a for m, a in sorted(state.analyses.items()) if m not in state.modes]
    for analysis in shown:
        if analysis.error is None and len(pieces := _analysis_pieces(analysis)) > 1:
            blocks.append(pieces)
    missing = state.missing_modes()
    over_budget = [m for m in missing if m in state.analyses and state.analyses[m].error == "budget_exhausted"]
    if over_budget:
        blocks.append([text("budget_exhausted", lang)])
    if missing := [m for m in missing if m not in over_budget]:
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
            if current and utf16_len(current) + len(separator) + utf16_len(piece) > limit:
                messages.append(current)
                current, separator = "", ""
            current += separator + piece
    if current:
        messages.append(current)
    return messages
