"""The public contract as files: a JSON Schema and an example message per subject, for analyzers written elsewhere.

Generated from the msgspec types in `infra/domain/contracts.py`, so they cannot drift: a test regenerates them and
compares with what is committed in `docs/contracts/`. Regenerate after changing a contract:

    .venv/bin/python -m infra.domain.schemas docs/contracts
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from infra.domain.contracts import (
    AnalysesRequested,
    Analysis,
    AudioReceived,
    AudioRef,
    Failure,
    ModeInfo,
    Origin,
    Section,
    Segment,
    Transcript,
    TranscriptionProgress,
    Usage,
)

CID = "3f1c2a9e8b7d4c6fa1e2d3c4b5a69788"
AT = 1795000000.0

CONTRACT: dict[str, tuple[str, Any, msgspec.Struct]] = {
    "voice.audio": (
        "Published by the gateway: a voice note's bytes are in the Object Store `voice-audio` under `object_name`.",
        AudioReceived,
        AudioReceived(
            correlation_id=CID,
            origin=Origin(chat_id=0, message_id=0, status_message_id=0, ui_language="en", language_hint="en"),
            audio=AudioRef(object_name=CID, kind="voice", mime_type="audio/ogg", size=48213, duration_hint=9.0),
            modes=("DEFAULT", "TONE"),
            received_at=AT,
        ),
    ),
    "voice.transcript": (
        "What an analyzer consumes: the text, its language, segments with timestamps, the user's UI language.",
        Transcript,
        Transcript(
            correlation_id=CID,
            text="Hello team. The quarterly budget review is moved to Thursday morning.",
            language="en",
            language_probability=0.98,
            duration=9.1,
            segments=(Segment(0.0, 4.2, "Hello team."), Segment(4.2, 9.1, "The budget review is moved to Thursday.")),
            ui_language="en",
            model="base",
            transcribe_seconds=1.4,
            published_at=AT,
            modes=("DEFAULT", "TONE"),
        ),
    ),
    "voice.rerun": (
        "Published by the gateway when a button asks for more modes on an answered note; its stored transcript "
        "follows on `voice.transcript` under the same correlation ID, with `modes` naming what was asked.",
        AnalysesRequested,
        AnalysesRequested(
            correlation_id=CID,
            origin=Origin(chat_id=0, message_id=0, status_message_id=0, ui_language="en", transcript_view="off"),
            modes=("TONE",),
            of_note="9b2e4f6a8c1d3e5f7a9b0c2d4e6f8a1b",
            received_at=AT,
        ),
    ),
    "voice.progress": (
        "Published by the transcriber while it works through a long recording (2 min or more), every few seconds: "
        "for the status message; nothing waits for it.",
        TranscriptionProgress,
        TranscriptionProgress(correlation_id=CID, done_seconds=1380.0, total_seconds=3660.0),
    ),
    "voice.analysis.MODE": (
        "What an analyzer publishes, on `voice.analysis.<its mode>`, "
        "with `Nats-Msg-Id: <correlation_id>.analysis.<mode>`.",
        Analysis,
        Analysis(
            correlation_id=CID,
            mode="WORDS",
            title="🔢 Words",
            model="",
            sections=(Section(heading="Length", body="12 words"), Section(heading="Longest", items=("quarterly",))),
        ),
    ),
    "voice.failed": (
        "Published by whichever stage gave up on a note; the formatter answers with a clear message.",
        Failure,
        Failure(correlation_id=CID, stage="transcriber", reason="no_speech", detail="no speech found"),
    ),
    "voice-modes": (
        "Not a subject: the announcement an analyzer keeps fresh under key `<mode>` in the KV bucket `voice-modes`.",
        ModeInfo,
        ModeInfo(mode="WORDS", title="🔢 Words", titles={"ru": "🔢 Слова", "en": "🔢 Words"}, announced_at=AT),
    ),
}
"""Subject (or bucket) → what it is for, its type, one example."""

_ = Usage  # part of Analysis' schema


def _clean_descriptions(node: Any) -> Any:
    """Descriptions come from docstrings, which Python 3.13 dedents at compile time and 3.11 and 3.12 keep as
    written: `inspect.cleandoc` gives every interpreter the same text, so the published files do not depend on
    which one generated them."""
    if isinstance(node, dict):
        return {key: _clean_descriptions(value) for key, value in node.items()} | (
            {"description": inspect.cleandoc(node["description"])} if isinstance(node.get("description"), str) else {}
        )
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def documents() -> dict[str, str]:
    """File name → content, for every schema and example."""
    files = {}
    for subject, (about, kind, example) in CONTRACT.items():
        schema = _clean_descriptions(msgspec.json.schema(kind))
        schema["$comment"] = about
        files[f"{subject}.schema.json"] = json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        files[f"{subject}.example.json"] = (
            json.dumps(msgspec.to_builtins(example), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        )
    return files


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in documents().items():
        (folder / name).write_text(content, encoding="utf-8")
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/contracts")):
        print(path)
