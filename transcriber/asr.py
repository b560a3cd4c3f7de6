"""Speech to text: bytes in, a checked transcript or a precise reason out.

Everything that can go wrong with user audio is decided here and named with a `FailureReason`, because the
user deserves "this is not audio" or "I heard no speech" rather than a generic error, and because invented
text for silence is worse than no text.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio

from infra.contracts import FailureReason, Segment

log = logging.getLogger("voice_insight.asr")

SAMPLE_RATE = 16_000
PRIMARY_LANGUAGES = ("ru", "en")
CONFIDENT = 0.7
"""Above this, the detector's choice stands even if it is not a primary language."""
PLAUSIBLE = 0.05
"""A primary language (or the user's hint) needs at least this much probability to be chosen instead."""
SILENCE_RMS = 1e-4
"""Digital silence or a dead microphone: skip the model entirely."""


class AudioProblem(Exception):
    def __init__(self, reason: FailureReason, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason: FailureReason = reason


@dataclass(frozen=True)
class SpeechResult:
    text: str
    language: str
    language_probability: float
    duration: float
    segments: tuple[Segment, ...]
    seconds: float


def choose_language(probs: list[tuple[str, float]], hint: str | None) -> tuple[str, float]:
    """Pick the transcription language from detector probabilities (sorted, best first).

    Whisper's detector is confidently right on natural speech in most languages, but on short or synthetic
    Russian it often prefers a neighbour (Polish, Ukrainian, Bulgarian) while Russian is close behind. So: a
    confident detection stands; otherwise the user's own language, then the best primary language, win when
    they are plausible.
    """
    best_lang, best_p = probs[0]
    if best_p >= CONFIDENT:
        return best_lang, best_p
    table = dict(probs)
    hint = (hint or "").lower().split("-")[0]
    if hint and table.get(hint, 0.0) >= PLAUSIBLE:
        return hint, table[hint]
    primary = max(PRIMARY_LANGUAGES, key=lambda lang: table.get(lang, 0.0))
    if table.get(primary, 0.0) >= PLAUSIBLE:
        return primary, table[primary]
    return best_lang, best_p


def decode(data: bytes, max_seconds: float) -> np.ndarray:
    """Decode any container/codec PyAV knows to 16 kHz mono float32, in memory."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioProblem("not_audio", "no audio stream")
            if container.duration is not None and container.duration / av.time_base > max_seconds + 1:
                raise AudioProblem("too_long", f"container says {container.duration / av.time_base:.0f}s")
        audio = decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    except AudioProblem:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError, EOFError) as exc:
        raise AudioProblem("not_audio", type(exc).__name__) from exc
    if audio.size == 0:
        raise AudioProblem("not_audio", "no samples decoded")
    if audio.size / SAMPLE_RATE > max_seconds + 1:
        raise AudioProblem("too_long", f"{audio.size / SAMPLE_RATE:.0f}s decoded")
    return audio


class SpeechRecognizer:
    """One loaded Whisper model; `transcribe` is blocking and meant for a worker thread."""

    def __init__(self, model: str, device: str = "auto", compute_type: str = "default", max_seconds: float = 600.0) -> None:
        self.model_name = Path(model).name if os.path.isdir(model) else model
        self.max_seconds = max_seconds
        if compute_type == "default":
            compute_type = "int8" if device == "cpu" else "default"
        self.model = WhisperModel(model, device=device, compute_type=compute_type, cpu_threads=os.cpu_count() or 0)

    def transcribe(self, data: bytes, language_hint: str | None = None) -> SpeechResult:
        started = time.perf_counter()
        audio = decode(data, self.max_seconds)
        duration = audio.size / SAMPLE_RATE
        if float(np.sqrt(np.mean(np.square(audio)))) < SILENCE_RMS:
            raise AudioProblem("no_speech", "silent signal")
        language, probability = self._language(audio, language_hint)
        segments_iter, _info = self.model.transcribe(
            audio,
            language=language,
            beam_size=5,
            vad_filter=True,
            condition_on_previous_text=False,
        )
        segments = tuple(
            Segment(round(s.start, 2), round(s.end, 2), s.text.strip())
            for s in segments_iter
            if s.text.strip() and not (s.no_speech_prob > 0.6 and s.avg_logprob < -1.0)
        )
        text = " ".join(s.text for s in segments).strip()
        if not text:
            raise AudioProblem("no_speech", "no segments")
        return SpeechResult(text, language, probability, duration, segments, time.perf_counter() - started)

    def _language(self, audio: np.ndarray, hint: str | None) -> tuple[str, float]:
        if not self.model.model.is_multilingual:
            return "en", 1.0
        _lang, _p, probs = self.model.detect_language(audio, vad_filter=True)
        return choose_language(probs, hint)
