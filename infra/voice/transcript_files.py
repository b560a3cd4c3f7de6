"""A transcript as files people open elsewhere: `.txt` with `[mm:ss]` per segment, and `.srt` subtitles; and
whether the answer attached the `.txt` already (so the button under it does not send it a second time)."""

from __future__ import annotations

import html

from infra.domain.contracts import Origin, Transcript

IN_MESSAGE = 3500
"""A transcript longer than this (Telegram's UTF-16 units, as its HTML) comes as a `.txt` beside the answer's
opening lines: the answer's heading and analyses need the rest of a message's 4096."""


def fits_in_message(value: str) -> bool:
    return len(html.escape(value.strip(), quote=False).encode("utf-16-le")) // 2 <= IN_MESSAGE


def attached_to_answer(origin: Origin, transcript: Transcript) -> bool:
    """Whether the answer carries the transcript as `transcript.txt`: the chat wants it as a file, or it wants it
    in the message and it does not fit one."""
    return origin.transcript_view == "file" or (
        origin.transcript_view == "message" and not fits_in_message(transcript.text)
    )


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def _srt_time(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def as_text(transcript: Transcript) -> str:
    """One line per segment, `[mm:ss] words` (`[h:mm:ss]` past an hour); the plain text if there are none."""
    if not transcript.segments:
        return transcript.text.strip() + "\n"
    return "".join(f"[{_clock(s.start)}] {s.text.strip()}\n" for s in transcript.segments if s.text.strip())


def as_srt(transcript: Transcript) -> str:
    """SubRip: numbered cues with `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    segments = [s for s in transcript.segments if s.text.strip()]
    if not segments:
        return f"1\n{_srt_time(0)} --> {_srt_time(transcript.duration)}\n{transcript.text.strip()}\n\n"
    return "".join(
        f"{n}\n{_srt_time(s.start)} --> {_srt_time(max(s.end, s.start + 0.001))}\n{s.text.strip()}\n\n"
        for n, s in enumerate(segments, 1)
    )
