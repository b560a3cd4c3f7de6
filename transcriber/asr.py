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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import av
import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
from faster_whisper.vad import VadOptions, get_speech_timestamps

from infra.domain.contracts import FailureReason, Segment
from infra.runtime.cpus import available_cpus
from infra.voice.languages import LANGUAGES

log = logging.getLogger("voice_insight.asr")

SAMPLE_RATE = 16_000
BOT_LANGUAGES = LANGUAGES
"""The languages the bot speaks: those its users speak."""
CONFIDENT = 0.7
"""Above this, the detector's choice stands, whatever the language and the user's Telegram language."""
EXPECTED = 10.0
"""Below `CONFIDENT`, a language the bot speaks (or the user's own) counts this many times its probability."""
HINT = 3.0
"""...and the user's Telegram language three times that, unless it is English: it breaks a near tie, never a clear
lead."""
SILENCE_RMS = 1e-4
"""Digital silence or a dead microphone: skip the model entirely."""
CHUNK_SECONDS = 15
"""Longest speech chunk. Shorter chunks mean smaller encoder windows and more chunks decoded in parallel;
below ~15 s the word error rate starts to rise (bench/asr.py)."""
FULL_WINDOW = 3000
WINDOW_MARGIN = 100
"""Frames (10 ms each) of padding after the longest chunk in a batch."""
MIN_WINDOW = 1000
"""Whisper was trained on 30 s windows; below ~10 s its first words go wrong on short clips, so a window is
never smaller than this (still a third of the full window's encoder cost)."""
SHORT_NOTE_BEAM = 5
"""A note that fits one chunk (the common 5-20 s case) gets beam search: a few hundred milliseconds more,
and fewer lost words than greedy decoding. Longer notes are decoded greedily, all chunks in one batch."""
BATCH_CHUNKS = 8
"""Chunks encoded and decoded together: enough to keep the decoder busy, few enough that a ten-minute note
stays within a small server's memory."""
TOKENS_PER_SECOND = 10
NO_SPEECH = 0.6
LOW_LOGPROB = -1.0
MAX_COMPRESSION = 2.4
"""Whisper's own thresholds: a text that gzip compresses this well is a repetition loop."""


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

    Whisper's detector is confidently right on clear speech in most languages; a confident detection stands. On
    short or unclear speech it spreads its probability over its 99 languages, and Latin, Lithuanian, Albanian or
    Georgian come first by chance. The detector's prior is its training data; this bot's is its users, who speak
    its languages: below `CONFIDENT` those count `EXPECTED` times, and the user's Telegram language `HINT` times
    more. Not English, though: it is Telegram's lingua franca (a Ukrainian or a Russian with an English Telegram
    is common), and English speech needs no help (detected at 0.81-0.99 below), while giving it some turned
    Russian notes into English transcripts of nothing.

    Measured on the base model with espeak-ng speech (126 clips: 14 Ukrainian and 10 Russian sentences, 2 in each
    of the other nine languages, each at 140, 160 and 175 words a minute), chosen right with the Telegram set to
    English: Ukrainian 6 of 42 (the rule before, "the hint, else Russian or English, if 5 % likely", chose it
    once: otherwise Latin, Lithuanian, Georgian...), Russian 12 of 30 (8); set to the speaker's own language:
    Ukrainian 9 (5), Russian 17 (16), Turkish 5 of 6 (1), Kazakh 4 (2); English, German, French and Italian 6 of
    6 with any hint (detected at 0.81-0.99, 0.96-0.99, 0.52-0.97, 0.55-1.0), Spanish 5-6, Polish 3-5. That is as
    far as the model's evidence goes: it hears espeak-ng's Ukrainian as Ukrainian at a median of 0.004 (Russian
    likelier in 29 of 42 clips), its Portuguese, Turkish and Kazakh at 0.16, 0.06 and 0.08 at most. Deciding
    between relatives by decoding with both was measured and rejected: the Ukrainian decoding scored better (mean
    log-probability) on 15 of 18 Ukrainian clips, but also on 9 of 18 Russian ones. Nor can the letters (і ї є ґ,
    ы э ъ ё) decide: a decoding is spelled in the language it was told. So no second decoding: the choice costs
    nothing beyond the detector.
    """
    best_lang, best_p = probs[0]
    if best_p >= CONFIDENT:
        return best_lang, best_p
    own = (hint or "").lower().replace("_", "-").split("-")[0]

    def weight(lang: str) -> float:
        if lang == own:
            return EXPECTED if own == "en" else EXPECTED * HINT
        return EXPECTED if lang in BOT_LANGUAGES else 1.0

    return max(probs, key=lambda candidate: candidate[1] * weight(candidate[0]))


def decode(source: bytes | IO[bytes], max_seconds: float) -> np.ndarray:
    """Decode any container/codec PyAV knows to 16 kHz mono float32, stopping at the limit (`pcm_blocks`)."""
    limit = int((max_seconds + 1) * SAMPLE_RATE)
    samples = np.empty(min(limit, SAMPLE_RATE * 60), dtype=np.int16)
    filled = 0
    for block in pcm_blocks(source, max_seconds):
        if filled + block.size > samples.size:  # grow geometrically, never past the limit
            samples = np.resize(samples, min(limit, max(samples.size * 2, filled + block.size)))
        samples[filled : filled + block.size] = block
        filled += block.size
    return to_float(samples[:filled])


def to_float(pcm: np.ndarray) -> np.ndarray:
    """16-bit PCM samples as Whisper and Silero take them: float32 in [-1, 1)."""
    return pcm.astype(np.float32) / 32768.0


def pcm_blocks(source: bytes | IO[bytes], max_seconds: float) -> Iterator[np.ndarray]:
    """The recording as 16 kHz mono int16 blocks (a decoded frame each), as a stream, stopping at the limit.

    Nothing trusts the container's word: a live WebM or a crafted MP3 may declare no duration (or a false
    one), and 20 MB of 6 kbps Opus is seven hours of sound. Frames are decoded and resampled one at a time,
    and the first sample beyond `max_seconds` (+1 s of slack) ends the decoding with `too_long`, so whoever
    keeps the samples keeps a bounded amount, whatever the input.
    """
    limit = int((max_seconds + 1) * SAMPLE_RATE)
    filled = 0
    try:
        with av.open(
            io.BytesIO(source) if isinstance(source, bytes) else source, mode="r", metadata_errors="ignore"
        ) as container:
            if not container.streams.audio:
                raise AudioProblem("not_audio", "no audio stream")
            if container.duration is not None and container.duration / av.time_base > max_seconds + 1:
                raise AudioProblem("too_long", f"container says {container.duration / av.time_base:.0f}s")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in _frames(container):
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1)
                    if filled + block.size > limit:
                        raise AudioProblem("too_long", f"over {max_seconds:.0f}s while decoding")
                    filled += block.size
                    yield block
    except AudioProblem:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError, EOFError) as exc:
        raise AudioProblem("not_audio", type(exc).__name__) from exc
    if filled == 0:
        raise AudioProblem("not_audio", "no samples decoded")


def _frames(container: av.container.InputContainer) -> Iterator[av.AudioFrame | None]:
    """The first audio stream's frames, then None to flush.

    A damaged file (a torn download, a bad sector) still gives what can be heard in it. Packets are decoded one
    by one, so one that cannot be decoded is skipped and decoding goes on after it (`container.decode` ends for
    good at the first such error: the speech after it was lost, as if the speaker had stopped)."""
    skipped = 0
    for packet in container.demux(container.streams.audio[0]):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            skipped += 1
            continue
        for frame in frames:
            frame.pts = None  # resample by samples, not by (possibly crafted) timestamps
            yield frame
    if skipped:
        log.info("%d undecodable packets skipped", skipped)
    yield None


@dataclass(frozen=True)
class _Chunk:
    offset: float
    """Where its first speech starts in the recording, in seconds."""
    duration: float
    """Seconds of speech in it (the pauses between its spans are left out of `samples`)."""
    samples: np.ndarray
    end: float = 0.0
    """Where its last speech ends in the recording."""


@dataclass(frozen=True)
class _Decoded:
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float

    @property
    def looks_like_silence(self) -> bool:
        return self.no_speech_prob > NO_SPEECH and self.avg_logprob < LOW_LOGPROB

    @property
    def looks_like_a_loop(self) -> bool:
        return self.compression_ratio > MAX_COMPRESSION


def _group(audio: np.ndarray, spans: list[dict[str, int]], max_seconds: float) -> list[_Chunk]:
    """Consecutive speech spans joined into chunks of at most `max_seconds` of speech, with where each chunk
    starts and ends in the recording. (faster-whisper's `collect_chunks` gives offsets in speech time, with the
    pauses taken out, so a transcript's timestamps would drift earlier with every pause.)"""
    chunks: list[_Chunk] = []
    group: list[dict[str, int]] = []
    limit = max_seconds * SAMPLE_RATE

    def close() -> None:
        if group:
            samples = np.concatenate([audio[s["start"] : s["end"]] for s in group])
            start, end = group[0]["start"] / SAMPLE_RATE, group[-1]["end"] / SAMPLE_RATE
            chunks.append(_Chunk(start, samples.size / SAMPLE_RATE, samples, end))

    for span in spans:
        if group and sum(s["end"] - s["start"] for s in group) + span["end"] - span["start"] > limit:
            close()
            group = []
        group.append(span)
    close()
    return chunks


class SpeechRecognizer:
    """One loaded, warmed Whisper model; `transcribe` is blocking and meant for a worker thread.

    The path, measured in bench/asr.py: Silero VAD (inside faster-whisper) cuts speech into chunks of at most
    `CHUNK_SECONDS`; chunks are encoded in batches of up to `BATCH_CHUNKS`, in a window sized to the longest
    chunk (at least `MIN_WINDOW`) instead of Whisper's fixed 30 s (the encoder's cost grows with its window, and
    CTranslate2 accepts shorter ones); the language comes from the first chunk's encoder output, so nothing is
    encoded twice; a batch's chunks are decoded together, greedily. Chunks that look like a repetition loop
    are decoded again with beam search; chunks that look like
    silence are dropped. A 10 s note is one small chunk: a short encoder window and beam search, no batching.
    """

    def __init__(
        self,
        model: str,
        device: str = "auto",
        compute_type: str = "default",
        max_seconds: float = 600.0,
        threads: int = 0,
    ) -> None:
        """`threads`: CPU threads for the model; 0: every core this process may use."""
        self.model_name = Path(model).name if os.path.isdir(model) else model
        self.max_seconds = max_seconds
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if compute_type == "default":
            compute_type = "int8" if device == "cpu" else "float16"
        self.device, self.compute_type = device, compute_type
        threads = threads or available_cpus()
        self.model = WhisperModel(model, device=device, compute_type=compute_type, cpu_threads=threads)
        self.multilingual = self.model.model.is_multilingual
        self._warm_up()

    def _warm_up(self) -> None:
        """Pay one-time kernel and allocator set-up at start, not on the first user's note."""
        noise = np.random.default_rng(0).normal(0, 0.05, SAMPLE_RATE * 2).astype(np.float32)
        self._decode([_Chunk(0.0, 2.0, noise, 2.0)], "en", beam_size=1)

    def transcribe(
        self,
        data: bytes | IO[bytes],
        language_hint: str | None = None,
        vocabulary: str | None = None,
        progress: Callable[[float, float], None] | None = None,
    ) -> SpeechResult:
        """`vocabulary`: names and jargon to spell right, given to Whisper as hotwords (its previous-text
        prompt), which biases the decoder towards them without forcing them in. `progress(done, total)` hears
        after each batch how many seconds of the recording are transcribed (it runs on this thread)."""
        started = time.perf_counter()
        audio = decode(data, self.max_seconds)
        return self.recognize(
            audio, language_hint=language_hint, vocabulary=vocabulary, progress=progress, started=started
        )

    def language_of(self, audio: np.ndarray, hint: str | None = None) -> tuple[str, float] | None:
        """The language of the first speech in `audio` (float32 samples), as `transcribe` would choose it; None
        if there is no speech to tell it by. For a recording transcribed in pieces: all of them in one language."""
        chunks = self._speech_chunks(audio)[:1]
        if not chunks:
            return None
        return self._language(self.model.encode(self._features(chunks)), chunks, hint)

    def recognize(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        language_hint: str | None = None,
        vocabulary: str | None = None,
        progress: Callable[[float, float], None] | None = None,
        offset: float = 0.0,
        started: float | None = None,
    ) -> SpeechResult:
        """Decoded samples (16 kHz mono float32) to text. `language`: already known (a piece of a long note),
        else detected. `offset`: where these samples start in the recording, added to every timestamp."""
        started = time.perf_counter() if started is None else started
        duration = audio.size / SAMPLE_RATE
        if float(np.sqrt(np.mean(np.square(audio)))) < SILENCE_RMS:
            raise AudioProblem("no_speech", "silent signal")
        chunks = self._speech_chunks(audio)
        if not chunks:
            raise AudioProblem("no_speech", "no voice activity")
        short = len(chunks) == 1
        decoded: list[_Decoded] = []
        probability = 1.0 if language else 0.0
        language = language or ""
        for first in range(0, len(chunks), BATCH_CHUNKS):
            batch = chunks[first : first + BATCH_CHUNKS]
            encoded = self.model.encode(self._features(batch))
            if not language:  # from the first chunk's encoder output: nothing is encoded twice
                language, probability = self._language(self._first_row(encoded, len(batch)), batch[:1], language_hint)
            decoded += self._decode(
                batch,
                language,
                beam_size=SHORT_NOTE_BEAM if short else 1,
                encoded=encoded,
                timestamps=short,
                hotwords=vocabulary,
            )
            if progress is not None and not short:
                progress(batch[-1].end, duration)
        suspicious = [i for i, d in enumerate(decoded) if d.looks_like_a_loop]
        if suspicious:
            again = self._decode(
                [chunks[i] for i in suspicious], language, beam_size=SHORT_NOTE_BEAM, hotwords=vocabulary
            )
            for i, retry in zip(suspicious, again):
                if retry.compression_ratio < decoded[i].compression_ratio:
                    decoded[i] = retry
        segments = tuple(
            Segment(round(offset + c.offset, 2), round(offset + c.end, 2), d.text)
            for c, d in zip(chunks, decoded)
            if d.text and not d.looks_like_silence and not d.looks_like_a_loop
        )
        text = " ".join(s.text for s in segments).strip()
        if not text:
            raise AudioProblem("no_speech", "nothing but silence or hallucination")
        return SpeechResult(text, language, probability, duration, segments, time.perf_counter() - started)

    def _speech_chunks(self, audio: np.ndarray) -> list[_Chunk]:
        options = VadOptions(max_speech_duration_s=CHUNK_SECONDS, min_silence_duration_ms=160)
        spans = get_speech_timestamps(audio, options)
        if not spans:
            return []
        return [chunk for chunk in _group(audio, spans, CHUNK_SECONDS) if chunk.samples.size >= SAMPLE_RATE // 10]

    def _features(self, chunks: list[_Chunk]) -> np.ndarray:
        """Log-mel features, one row per chunk, in a window just longer than the longest chunk."""
        features = [self.model.feature_extractor(c.samples)[..., :-1] for c in chunks]
        frames = min(FULL_WINDOW, max(MIN_WINDOW, max(f.shape[-1] for f in features) + WINDOW_MARGIN))
        frames += frames % 2  # the encoder's convolution halves the frame count
        batch = np.zeros((len(features), features[0].shape[0], frames), dtype=np.float32)
        for row, f in zip(batch, features):
            row[:, : min(frames, f.shape[-1])] = f[:, :frames]
        return batch

    def _first_row(self, encoded: ctranslate2.StorageView, rows: int) -> ctranslate2.StorageView:
        """The first chunk's encoder output: up to 15 s of speech is plenty to tell the language, and detecting
        on every chunk of a long note costs a tenth of its transcription time on a CPU."""
        if rows == 1 or self.device != "cpu":
            return encoded
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.array(encoded)[:1]))

    def _language(self, encoded: ctranslate2.StorageView, chunks: list[_Chunk], hint: str | None) -> tuple[str, float]:
        if not self.multilingual:
            return "en", 1.0
        totals: dict[str, float] = {}
        weight = 0.0
        for chunk, ranked in zip(chunks, self.model.model.detect_language(encoded)):
            for token, p in ranked:
                totals[token[2:-2]] = totals.get(token[2:-2], 0.0) + p * chunk.duration
            weight += chunk.duration
        probs = sorted(((lang, p / weight) for lang, p in totals.items()), key=lambda x: -x[1])
        return choose_language(probs, hint)

    def _decode(
        self,
        chunks: list[_Chunk],
        language: str,
        beam_size: int,
        encoded: ctranslate2.StorageView | None = None,
        timestamps: bool = True,
        hotwords: str | None = None,
    ) -> list[_Decoded]:
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
        # Timestamp tokens cost decoding steps; on a short note they keep its first words from being skipped,
        # on long batched notes they bought nothing measurable (bench/asr.py), so those go without.
        prompt = self.model.get_prompt(
            tokenizer, previous_tokens=[], without_timestamps=not timestamps, hotwords=hotwords or None
        )
        # Speech is at most ~10 tokens a second in any language; a longer output is a loop, cut it short.
        budget = int(max(c.duration for c in chunks) * TOKENS_PER_SECOND) + 16
        results = self.model.model.generate(
            encoded if encoded is not None else self.model.encode(self._features(chunks)),
            [list(prompt) for _ in chunks],
            beam_size=beam_size,
            max_length=min(self.model.max_length, len(prompt) + budget),
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            return_scores=True,
            return_no_speech_prob=True,
        )
        decoded = []
        for result in results:
            tokens = result.sequences_ids[0]
            text = tokenizer.decode(tokens).strip()
            decoded.append(
                _Decoded(
                    text=text,
                    # CTranslate2's score is the length-normalised log probability (length_penalty 1).
                    avg_logprob=result.scores[0] * len(tokens) / (len(tokens) + 1),
                    no_speech_prob=result.no_speech_prob,
                    compression_ratio=get_compression_ratio(text) if text else 0.0,
                )
            )
        return decoded
