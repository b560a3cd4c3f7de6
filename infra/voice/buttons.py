"""The buttons under an answer, and their callback data (at most 64 bytes, as Telegram allows).

`t:<note>:<proof>` sends the transcript as files; `m:<note>:<proof>:<n>` runs the n-th mode offered under that
note on its stored transcript. The note is its correlation ID (a keyed hash), the proof a hash of the note's
transcript (`infra.domain.notes.button_proof`): the data reveals nothing, and only a press under the answer can
name the note to the formatter, which keeps it (the gateway, which could derive any note's ID, cannot the proof).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiogram.filters import Filter
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup

from infra.voice.texts import text

CALLBACK_LIMIT = 64


@dataclass(frozen=True)
class TranscriptPress:
    note: str
    proof: str


@dataclass(frozen=True)
class ModePress:
    note: str
    proof: str
    index: int


def answer_keyboard(note: str, proof: str, offered: list[tuple[str, str]], lang: str) -> InlineKeyboardMarkup:
    """ "📄 Transcript", then one "▶ <title>" per mode offered (`(mode, title)`, two to a row)."""
    rows = [[InlineKeyboardButton(text=text("button_transcript", lang), callback_data=f"t:{note}:{proof}")]]
    buttons = [
        InlineKeyboardButton(text=f"▶ {title}", callback_data=f"m:{note}:{proof}:{index}")
        for index, (_, title) in enumerate(offered)
    ]
    rows += [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    return InlineKeyboardMarkup(inline_keyboard=rows)


def parse_press(data: str | None) -> TranscriptPress | ModePress | None:
    parts = (data or "").split(":")
    if parts[0] == "t" and len(parts) in (2, 3) and parts[1]:
        return TranscriptPress(parts[1], parts[2] if len(parts) == 3 else "")
    if parts[0] == "m" and len(parts) in (3, 4) and parts[1] and parts[-1].isdigit():
        return ModePress(parts[1], parts[2] if len(parts) == 4 else "", int(parts[-1]))
    return None  # a button under an answer from before the proof has none: the note is not given for it


class Pressed(Filter):
    """A press of one kind of button under an answer, passed on to the handler as `press`."""

    def __init__(self, kind: type[TranscriptPress] | type[ModePress]) -> None:
        self.kind = kind

    async def __call__(self, query: CallbackQuery) -> bool | dict[str, Any]:
        press = parse_press(query.data)
        return {"press": press} if isinstance(press, self.kind) else False
