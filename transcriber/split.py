"""Cutting a long recording into pieces at silences, while it is decoded.

A long note is transcribed as pieces that any transcriber may take (`transcriber.service`), so the cuts must
not fall inside a word: each cut is made in the middle of the longest pause Silero VAD hears near the target
length, and a word is then in exactly one piece. The recording is never whole in memory: samples are decoded
into a buffer that is cut as soon as it holds one and a half pieces, so a three-hour lecture costs what six
minutes do.

The cuts are a function of the audio alone (decoding and VAD are deterministic), so a split that is repeated
after a crash cuts at the same places and its pieces replace the first attempt's one for one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from transcriber.asr import SAMPLE_RATE, pcm_blocks, to_float

PIECE_SECONDS = 240.0
"""Target length of a piece: long enough that a piece keeps the batching the recognizer is fast with (16
chunks), short enough that two transcribers share a half-hour note evenly."""
SEARCH_SECONDS = 30.0
"""A cut is looked for in this much audio before the target length."""
PAUSE_VAD = VadOptions(min_silence_duration_ms=100, speech_pad_ms=0)
"""Speech without padding, so a pause is the whole of the silence between two words."""
FRAME = SAMPLE_RATE // 20
"""50 ms: where VAD hears no pause at all, the quietest such frame is the cut."""


def pieces(source: bytes | IO[bytes], max_seconds: float, piece_seconds: float = PIECE_SECONDS) -> Iterator[np.ndarray]:
    """The recording as 16 kHz mono int16 pieces, in order, that together are every sample of it.

    A recording shorter than one and a half pieces comes out as one piece: only then is it known to be short.
    The last piece is between half a piece and one and a half long. Raises `AudioProblem` as `decode` does,
    possibly after some pieces were yielded (a recording over `max_seconds` is found out by decoding it)."""
    target = int(piece_seconds * SAMPLE_RATE)
    search = min(int(SEARCH_SECONDS * SAMPLE_RATE), target // 2)
    buffer = np.empty(target + target // 2 + SAMPLE_RATE, dtype=np.int16)
    filled = 0
    for block in pcm_blocks(source, max_seconds):
        while block.size:
            room = min(block.size, buffer.size - filled)
            buffer[filled : filled + room] = block[:room]
            filled += room
            block = block[room:]
            if filled >= target + target // 2:
                cut = target - search + quiet_point(buffer[target - search : target])
                yield buffer[:cut].copy()
                buffer[: filled - cut] = buffer[cut:filled]
                filled -= cut
    if filled:
        yield buffer[:filled].copy()


def quiet_point(window: np.ndarray) -> int:
    """Where in `window` (int16 samples) to cut: the middle of its longest pause between words."""
    audio = to_float(window)
    spans = get_speech_timestamps(audio, PAUSE_VAD)
    edges = [0, *(x for span in spans for x in (span["start"], span["end"])), audio.size]
    gaps = [(edges[i + 1] - edges[i], edges[i]) for i in range(0, len(edges), 2) if edges[i + 1] > edges[i]]
    if spans and gaps:
        length, start = max(gaps)
        return start + length // 2
    if not spans:
        return audio.size // 2  # all pause
    frames = audio[: audio.size - audio.size % FRAME].reshape(-1, FRAME)
    return int(np.argmin(np.square(frames).mean(axis=1))) * FRAME + FRAME // 2
