"""An hour of speech split across transcribers (issue 12): a long note is cut at pauses into pieces that any
transcriber takes, and stitched back in order. Real Whisper, real nats-server, the Telegram double."""

from __future__ import annotations

import asyncio
import io
import random
import re
from pathlib import Path

import nats.js.errors
import numpy as np
import pytest
from faster_whisper.vad import get_speech_timestamps

from bench.speech import sentences, spaced
from formatter.join import JoinStore
from formatter.marks import AnswerMarks
from formatter.service import FormatterService
from infra.bus import Bus, decoder
from infra.bus.names import BUCKET_ANSWERED, BUCKET_JOINS, BUCKET_PIECES, STREAM, STREAM_PIECES, SUBJECT_TRANSCRIPT
from infra.domain.contracts import Transcript
from infra.domain.notes import forget_transcripts
from infra.runtime.settings import Limits, Settings
from infra.voice.telegram import make_bot
from tests.support import (
    TOKEN,
    Gateway,
    aligned,
    answer_of,
    counted,
    lost_sentences,
    settled,
    telegram_of_its_own,  # noqa: F401  (the `telegram` fixture here: a double of the test's own)
    words,
)
from transcriber.asr import SAMPLE_RATE, SpeechRecognizer, decode
from transcriber.service import TranscriberService
from transcriber.split import PAUSE_VAD, pieces, quiet_point
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
USER = 74_200_001


def a_meeting(folder: Path, minutes: float) -> tuple[bytes, list[str], list[float], float]:
    """Sentences in clusters (short pauses between them), clusters apart by long silences, `minutes` in all."""
    said = sentences("en", 190, seed=12)
    rng = random.Random(5)
    pauses: list[float | None] = [rng.uniform(0.35, 0.9) if n % 4 != 3 else None for n in range(len(said))]
    ogg, starts, duration = spaced(said, pauses, "en", folder, total=minutes * 60)
    return ogg, said, starts, duration


async def test_cuts_fall_in_pauses_and_lose_no_sample(tmp_path: Path) -> None:
    """The pieces are the recording, sample for sample, and each cut is in a pause of continuous speech."""
    said = sentences("en", 70, seed=3)
    ogg, _, _ = spaced(said, [0.25] * len(said), "en", tmp_path)
    cut = list(pieces(io.BytesIO(ogg), 600, piece_seconds=20))
    whole = decode(ogg, 600)
    assert len(cut) >= 3
    assert np.array_equal(np.concatenate(cut).astype(np.float32) / 32768.0, whole)
    at = 0
    loud = float(np.sqrt(np.mean(np.square(whole))))
    for piece in cut[:-1]:
        at += piece.size
        around = whole[at - SAMPLE_RATE // 20 : at + SAMPLE_RATE // 20]
        assert float(np.sqrt(np.mean(np.square(around)))) < loud / 20, f"cut at {at / SAMPLE_RATE:.2f}s in speech"


def test_a_cut_without_any_pause_goes_at_the_quietest_moment(tmp_path: Path) -> None:
    """Two people talking at once leave no pause at all: the cut goes at the quietest 50 ms, not just anywhere."""
    voices = []
    for seed in (1, 2):
        said = sentences("en", 15, seed=seed)
        voices.append(decode(spaced(said, [0.0] * len(said), "en", tmp_path)[0], 600)[: SAMPLE_RATE * 10])
    both = ((voices[0] + np.roll(voices[1], SAMPLE_RATE // 8)) * 0.5 * 32767).astype(np.int16)
    assert get_speech_timestamps(both.astype(np.float32) / 32768, PAUSE_VAD) == [{"start": 0, "end": both.size}]
    both[SAMPLE_RATE * 7 : SAMPLE_RATE * 7 + 800] //= 50  # shorter than any pause VAD would hear
    assert quiet_point(both) == SAMPLE_RATE * 7 + 400


async def test_a_half_hour_note_is_shared_by_two_transcribers_and_stitched_in_order(
    private_bus: Bus, telegram: TelegramDouble, model_dir: Path, tmp_path: Path
) -> None:
    ogg, said, starts, duration = await asyncio.to_thread(a_meeting, tmp_path, 30)
    assert 1750 < duration < 1850
    first, second = [
        await asyncio.to_thread(SpeechRecognizer, str(model_dir), "cpu", max_seconds=3 * 3600) for _ in range(2)
    ]
    taken = counted(first), counted(second)
    other = await Bus.connect([f"nats://{private_bus.nc.connected_url.netloc}"], name="second-transcriber")  # type: ignore[union-attr]
    await private_bus.start(TranscriberService(private_bus, first))
    await other.start(TranscriberService(other, second))
    bot = make_bot(Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url))
    joins, marks = JoinStore(await private_bus.kv(BUCKET_JOINS)), AnswerMarks(await private_bus.kv(BUCKET_ANSWERED))
    await private_bus.start(FormatterService(private_bus, bot, joins, marks, 60, 3 * 3600, progress_interval=0.1))
    try:
        async with Gateway(private_bus, telegram, Limits(allowed=frozenset({USER})), max_audio_seconds=3 * 3600):
            await telegram.send_media(USER, ogg, duration=round(duration))
            answer = await answer_of(telegram, USER, timeout=500)
    finally:
        await bot.session.close()
        await other.close(grace=5)

    assert taken[0] and taken[1], f"pieces taken: {taken}"  # both transcribers worked on the note
    assert sorted(taken[0] + taken[1]) == sorted(set(taken[0] + taken[1]))  # no piece transcribed twice
    status = telegram.all_messages(USER)[0]  # the answer itself, or (past NOTIFY_AFTER) deleted for a new one
    assert any(re.fullmatch(r"⏳ Transcribing: \d+ of (29|30|31) min", t) for t in status.history), status.history
    assert [m.text for m in telegram.messages(USER)].count(answer.text) == 1

    raw = await private_bus.js.get_last_msg(STREAM, SUBJECT_TRANSCRIPT)
    transcript = decoder(Transcript).decode(raw.data)
    assert transcript.duration == pytest.approx(duration, abs=0.5)
    spans = [(s.start, s.end) for s in transcript.segments]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "timestamps go back or overlap"

    # Every sentence once, in order: the script aligned with the transcript, word by word.
    heard = [(segment, w) for segment in transcript.segments for w in words(segment.text)]
    found, excess = aligned(said, [w for _, w in heard])
    assert lost_sentences(said, [w for _, w in heard]) == []
    for n in range(len(said)):
        segment = heard[found[n][0]][0]
        assert segment.start - 1.0 <= starts[n] <= segment.end, f"sentence {n} at {starts[n]:.1f}s, heard at {segment}"
    # A sentence heard twice (a cut that doubled words) would be a run of extra words as long as a sentence.
    assert excess < min(6, min(len(words(s)) for s in said) // 2), "words heard that nobody said: doubled at a cut?"

    await settled(private_bus, "transcriber-pieces", stream=STREAM_PIECES)
    store = await private_bus.audio_store()
    for n in range(len(taken[0] + taken[1])):  # stitched: the pieces' samples are gone
        with pytest.raises(nats.js.errors.NotFoundError):
            await store.get_info(f"{transcript.correlation_id}.piece.{n}", show_deleted=True)
    # The transcribed pieces wait out their hour, unless the chat says /forget.
    kept = await private_bus.kv_keys(BUCKET_PIECES)
    assert len(kept) == len(taken[0] + taken[1]) and all(transcript.correlation_id in key for key in kept)
    await forget_transcripts(private_bus, kept[0].split(".")[0], ())  # the transcriber's part of /forget
    assert await private_bus.kv_keys(BUCKET_PIECES) == []
