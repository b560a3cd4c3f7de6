"""Hostile or odd audio: decoding is a bounded stream, whatever the file claims or fails to claim."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import av
import pytest

from tests.support import live_stream, synth
from transcriber.asr import SAMPLE_RATE, AudioProblem, decode

pytestmark = pytest.mark.slow  # encodes ten minutes of audio with ffmpeg


def test_a_stream_that_declares_no_duration_stops_at_the_limit_in_bounded_memory(tmp_path: Path) -> None:
    # Ten minutes of 6 kbps Opus as a live WebM stream: half a megabyte, no duration in its metadata.
    live = live_stream(tmp_path / "live.webm", 600)
    with av.open(str(live)) as container:
        assert container.duration is None
    data = live.read_bytes()
    tracemalloc.start()
    try:
        with pytest.raises(AudioProblem) as problem:
            decode(data, max_seconds=30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problem.value.reason == "too_long"
    # 31 s of 16 kHz samples is about 1 MB as int16; decoding all ten minutes would take tens of megabytes.
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_a_file_within_the_limit_decodes_whole(tmp_path: Path) -> None:
    clip = synth(tmp_path / "clip.ogg", 12, "-c:a", "libopus", "-b:a", "24k")
    with clip.open("rb") as source:  # a file object, as the transcriber reads a spooled note
        audio = decode(source, max_seconds=30)  # type: ignore[arg-type]
    assert abs(audio.size / SAMPLE_RATE - 12) < 0.1
    assert audio.dtype.name == "float32" and float(abs(audio).max()) > 0.1


def test_bytes_that_are_not_audio_are_named_so() -> None:
    with pytest.raises(AudioProblem) as problem:
        decode(b"%PDF-1.4\n" + bytes(range(256)) * 40, max_seconds=30)
    assert problem.value.reason == "not_audio"


@pytest.mark.parametrize(
    ("name", "encoding"),
    [("clip.mp3", ("-c:a", "libmp3lame")), ("clip.ogg", ("-c:a", "libopus", "-b:a", "24k"))],
)
def test_a_file_damaged_in_the_middle_decodes_on_both_sides_of_the_damage(
    tmp_path: Path, name: str, encoding: tuple[str, ...]
) -> None:
    """Issue 21 (8): bytes cut out of the middle of a real recording made the decoder stop at the first frame it
    could not read: the transcript ended there, as if the speaker had stopped. What can be decoded is: the user
    gets the speech before and after the damage (a frame or so of it lost), not half a note."""
    whole = synth(tmp_path / name, 20, *encoding).read_bytes()
    middle = len(whole) // 2
    damaged = whole[:middle] + whole[middle + 400 :]  # a torn download, a bad sector: 400 bytes gone
    audio = decode(damaged, max_seconds=30)
    seconds = audio.size / SAMPLE_RATE
    assert seconds > 18, f"only {seconds:.1f} s of 20 decoded: decoding stopped at the damage"
    assert float(abs(audio[-SAMPLE_RATE * 3 :]).max()) > 0.1, "the sound after the damage is there"
