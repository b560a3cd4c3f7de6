"""The chat as the user sees it, in a terminal: when the bot's answer is complete, and how it reads.

The bot's first message is a status ("🎧 Listening…") that it edits through progress into the answer; the answer
is complete when that status no longer shows progress (in either language the bot speaks) and nothing has changed
for a moment (a long transcript follows as files).
"""

from __future__ import annotations

from typing import Any

from infra.voice.texts import text

_LANGS = ("en", "ru")
_BLANK = "\0"


def _before_values(key: str, lang: str, **names: str) -> str:
    """A text's fixed beginning, before its first value."""
    return text(key, lang, **dict.fromkeys(names, _BLANK)).split(_BLANK)[0]


LISTENING = frozenset(text("listening", lang) for lang in _LANGS)
PROGRESS = tuple(
    marker
    for lang in _LANGS
    for marker in (
        _before_values("on_its_way", lang, modes=""),
        _before_values("queue_position", lang, ahead="", eta=""),
        _before_values("transcribing", lang, done="", total=""),
    )
)
"""What a status shows while the note is on its way: its place in the queue, the transcription's minutes, the
modes still coming under a partial answer."""


def in_progress(shown: str) -> bool:
    """Listening, progress, or a mode on its way after a button ("⏳ 🎭 Tone…")."""
    return shown in LISTENING or any(m in shown for m in PROGRESS) or (shown.startswith("⏳") and shown.endswith("…"))


def render(messages: list[dict[str, Any]]) -> str:
    """Each message as it reads: a file's name, the text, the buttons under it (`[label]`, a line per row)."""
    blocks = []
    for message in messages:
        lines = [f"📎 {message['document']}"] if message.get("document") else []
        lines += [message["text"]] if message.get("text") else []
        lines += ["  ".join(f"[{button['text']}]" for button in row) for row in message.get("keyboard") or []]
        blocks.append("\n".join(lines))
    return "\n\n────────\n\n".join(blocks) + "\n"
