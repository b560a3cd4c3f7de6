"""A local audio file as Telegram delivers a voice note: OGG/Opus, 48 kHz mono, with its duration.

Whatever ffmpeg reads (WAV, MP3, M4A, a video's sound) is encoded the way Telegram's apps record voice notes, so
the stack downloads and transcribes what it would get from a phone; a file that already is OGG/Opus goes as it is.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class AudioError(Exception):
    """Why the file cannot be sent, in one line."""


@dataclass(frozen=True)
class VoiceNote:
    data: bytes
    seconds: int
    """Whole seconds, at least 1, as Telegram reports a voice note's `duration`."""


def voice_note(path: Path) -> VoiceNote:
    for tool in ("ffprobe", "ffmpeg"):
        if shutil.which(tool) is None:
            raise AudioError(f"{tool} is needed to read {path} (install ffmpeg)")
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    probe = _probe(path)
    streams = [s for s in probe.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise AudioError(f"{path}: ffmpeg finds no sound in it")
    seconds = max(1, math.ceil(float(probe.get("format", {}).get("duration") or 1)))
    if streams[0].get("codec_name") == "opus" and "ogg" in probe.get("format", {}).get("format_name", ""):
        return VoiceNote(path.read_bytes(), seconds)
    with tempfile.TemporaryDirectory(prefix="voice-insight-dev-") as scratch:
        ogg = Path(scratch) / "voice.ogg"
        encoded = subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", str(path), "-vn", "-c:a", "libopus", "-b:a", "32k",
             "-ar", "48000", "-ac", "1", "-application", "voip", str(ogg)],
            capture_output=True, text=True,
        )  # fmt: skip
        if encoded.returncode != 0:
            raise AudioError(f"{path}: ffmpeg could not encode it as OGG/Opus ({encoded.stderr.strip()[-300:]})")
        return VoiceNote(ogg.read_bytes(), seconds)


def _probe(path: Path) -> dict:  # type: ignore[type-arg]
    found = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration,format_name:stream=codec_name,codec_type",
         "-of", "json", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if found.returncode != 0:
        raise AudioError(f"{path}: not a sound file ffmpeg reads ({found.stderr.strip()[-300:]})")
    return json.loads(found.stdout or "{}")  # type: ignore[no-any-return]
