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
from dataclasses import dataclass

from formatter.join import JoinState
from infra.domain.contracts import Analysis, TranscriptionProgress
from infra.voice.languages import language_name, ui_language
from infra.voice.telegram import MESSAGE_LIMIT
from infra.voice.texts import duration_limit, text
from infra.voice.transcript_files import IN_MESSAGE, as_text, fits_in_message

_PIECE_BUDGET = IN_MESSAGE  # leaves room for a heading in the same message
_LABEL_BUDGET = 300
"""A title or a heading, escaped, in UTF-16 units at most: beside a piece of prose it still fits a message."""


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


def _label(value: str, budget: int = _LABEL_BUDGET) -> str:
    """A title or heading on one line and escaped, cut at a word's end with "…" when it would pass `budget`:
    analyzers written elsewhere may send any length, and the answer must still fit its messages."""
    value = " ".join(value.split())
    if utf16_len(esc(value)) <= budget:
        return esc(value)
    words, kept = value.split(" "), ""
    for word in words:
        longer = f"{kept} {word}" if kept else word
        if utf16_len(esc(longer)) + 1 > budget:
            break
        kept = longer
    if not kept:  # one "word" longer than the budget: cut it by characters
        kept = value
        while kept and utf16_len(esc(kept)) + 1 > budget:
            kept = kept[: len(kept) * 3 // 4]
    return esc(kept.rstrip(" ,.;:")) + "…"


_TITLE_BUDGET = 64
"""A mode's title in a list of modes ("⏳ Still working on: …"), in UTF-16 units at most."""


def mode_title(state: JoinState, mode: str, lang: str) -> str:
    """A mode as people know it, escaped: its title in `lang` as the note carried it, else the one its analysis
    came with, else its English one; its internal name only for a note that carried no titles (from before)."""
    carried = state.titles.get(mode) or {}
    analysis = state.analyses.get(mode)
    title = carried.get(lang) or (analysis.title if analysis is not None else "") or carried.get("en") or ""
    return _label(title, _TITLE_BUDGET) or esc(mode)


def _titles(state: JoinState, modes: list[str] | tuple[str, ...], lang: str) -> str:
    return ", ".join(mode_title(state, m, lang) for m in modes)


def _heading(value: str) -> str:
    label = _label(value)
    return f"<b>{label}:</b>" if label else ""


def _analysis_pieces(analysis: Analysis) -> list[str]:
    title = _label(analysis.title) or esc(analysis.mode)
    pieces = [f"<b>{title}</b>"]
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


@dataclass(frozen=True)
class Attachment:
    """A file sent with the answer (a transcript too long for a message, or asked for as a file)."""

    name: str
    content: bytes
    caption: str = ""


Part = str | Attachment

OPENING = 600
"""Characters of a long transcript shown in the message, above its file."""


def _opening(value: str) -> str:
    """The first `OPENING` characters of `value`, cut at a word's end."""
    if len(value) <= OPENING:
        return value
    cut = value[:OPENING]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,.;:") + " …"


def _transcript(state: JoinState, lang: str) -> tuple[list[str], list[Attachment]]:
    """The transcript's block and files, as the chat wants it: in the message while it fits one, else the
    opening lines and a `.txt`; as a file; or not at all."""
    assert state.origin is not None and state.transcript is not None
    view = state.origin.transcript_view
    if view == "off":
        return [], []
    t = state.transcript
    language = language_name(t.language, lang)
    header = f"📝 <b>{text('transcript', lang)}</b> · {esc(language)} · {_clock(t.duration)}"
    pieces = _prose(t.text)
    if view == "message" and fits_in_message(t.text):  # as the button under it judges (a file sent once)
        return [header, *pieces], []
    files = [Attachment("transcript.txt", as_text(t).encode(), text("transcript_file_caption", lang))]
    opening = [esc(_opening(t.text))] if view == "message" else []
    return [header, *opening, text("transcript_in_file", lang)], files


def _shown(state: JoinState) -> list[tuple[str, list[str]]]:
    """The analyses the answer shows, each with its pieces."""
    shown = [state.analyses[m] for m in state.modes if m in state.analyses]
    # A mode that answered although the note did not wait for it (it joined late) is still worth showing,
    # unless the chat did not ask for it.
    asked = state.transcript.modes if state.transcript is not None else None
    shown += [a for m, a in sorted(state.analyses.items()) if m not in state.modes and (asked is None or m in asked)]
    return [(a.mode, pieces) for a in shown if a.error is None and len(pieces := _analysis_pieces(a)) > 1]


def _analyses(state: JoinState) -> list[list[str]]:
    return [pieces for _, pieces in _shown(state)]


def shown_modes(state: JoinState) -> tuple[str, ...]:
    """The modes whose analysis the answer shows (a late one included, an empty or failed one not): what the
    buttons under it do not offer again."""
    return tuple(mode for mode, _ in _shown(state))


def words_language(state: JoinState) -> str:
    """The language of the bot's own words in the answer: the reader's, or (a chat that follows the speech) the
    one spoken when the bot speaks it, else English, so a frame and the names in it never mix two languages."""
    assert state.origin is not None and state.transcript is not None
    return ui_language(state.transcript.ui_language) if state.origin.follow_speech else state.origin.ui_language


def render_answer(state: JoinState) -> list[Part]:
    """The full answer: transcript (or its opening and a file), then each mode in the order the note expected
    them, then any note about what is missing. Messages first; a file follows the first message."""
    assert state.origin is not None and state.transcript is not None
    lang = words_language(state)
    transcript, files = _transcript(state, lang)
    blocks = [transcript] if transcript else []
    blocks += _analyses(state)
    missing = state.missing_modes()
    over_budget = [m for m in missing if m in state.analyses and state.analyses[m].error == "budget_exhausted"]
    if over_budget:
        blocks.append([text("budget_exhausted", lang)])
    if missing := [m for m in missing if m not in over_budget]:
        blocks.append([text("missing_modes", lang, modes=_titles(state, missing, lang))])
    messages: list[Part] = list(pack(blocks)) or [text("missing_modes", lang, modes=_titles(state, state.modes, lang))]
    return [messages[0], *files, *messages[1:]]


def render_progress(state: JoinState) -> str | None:
    """The status message while analyses are still coming: what is there so far (the first message's worth),
    and which modes are on their way. None when there is nothing new to show yet."""
    if state.origin is None or state.transcript is None or state.failed:
        return None
    lang = words_language(state)
    transcript, _ = _transcript(state, lang)
    blocks = ([transcript] if transcript else []) + _analyses(state)
    waiting = [m for m in state.modes if m not in state.analyses]
    if not blocks or not waiting:
        return None
    shown = pack(blocks, limit=MESSAGE_LIMIT - 300)[0]
    return f"{shown}\n\n{text('on_its_way', lang, modes=_titles(state, waiting, lang))}"


def transcribing(progress: TranscriptionProgress, lang: str) -> str:
    """ "⏳ Transcribing: 23 of 61 min" (seconds below a minute)."""

    def amount(seconds: float) -> str:
        return f"{seconds / 60:.0f}" if progress.total_seconds >= 600 else f"{seconds / 60:.1f}"

    return text("transcribing", lang, done=amount(progress.done_seconds), total=amount(progress.total_seconds))


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
