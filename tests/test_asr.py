"""The transcriber's engine on the real Whisper base model and real (synthetic) speech."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Speech
from transcriber.asr import AudioProblem, SpeechRecognizer


@pytest.fixture(scope="module")
def recognizer(model_dir: Path) -> SpeechRecognizer:
    return SpeechRecognizer(str(model_dir), device="cpu", max_seconds=30)


def test_english_speech(recognizer: SpeechRecognizer, speech: Speech) -> None:
    result = recognizer.transcribe(speech.say("Please call me back tomorrow about the new contract."), "en")
    assert result.language == "en"
    assert "contract" in result.text.lower() and "tomorrow" in result.text.lower()
    assert 2 < result.duration < 6 and result.segments and result.segments[0].start < result.segments[-1].end


def test_russian_speech_is_recognised_as_russian_without_a_hint(recognizer: SpeechRecognizer, speech: Speech) -> None:
    audio = speech.say(
        "Привет! Позвони мне завтра утром, пожалуйста. Нужно обсудить новый проект и бюджет.", voice="ru", speed=130
    )
    result = recognizer.transcribe(audio, None)
    assert result.language == "ru"
    assert "привет" in result.text.lower() and "проект" in result.text.lower()


def test_not_audio(recognizer: SpeechRecognizer) -> None:
    for junk in (b"", b"hello, this is plain text", bytes(range(256)) * 100):
        with pytest.raises(AudioProblem) as problem:
            recognizer.transcribe(junk)
        assert problem.value.reason == "not_audio"


def test_silence_and_quiet_noise_are_no_speech(recognizer: SpeechRecognizer, speech: Speech) -> None:
    for source in ("anullsrc=r=16000:cl=mono", "anoisesrc=color=pink:amplitude=0.01:seed=3"):
        with pytest.raises(AudioProblem) as problem:
            recognizer.transcribe(speech.lavfi(source, 5))
        assert problem.value.reason == "no_speech", source


def test_over_long_audio(recognizer: SpeechRecognizer, speech: Speech) -> None:
    with pytest.raises(AudioProblem) as problem:
        recognizer.transcribe(speech.lavfi("sine=frequency=300:sample_rate=16000", 40))
    assert problem.value.reason == "too_long"


def test_a_long_note_goes_through_batched_chunks_without_losing_sentences(recognizer: SpeechRecognizer) -> None:
    from bench.asr import word_error_rate
    from bench.speech import script, speak

    text = script("en", 25, seed=21)
    data, seconds = speak(text, "en")
    assert seconds > 15, "long enough for more than one chunk"
    result = recognizer.transcribe(data, "en")
    assert len(result.segments) >= 2
    assert all(a.start < b.start for a, b in zip(result.segments, result.segments[1:]))
    assert result.segments[-1].end <= seconds + 0.5
    assert word_error_rate(text, result.text) < 0.2


def test_a_chats_vocabulary_gets_names_spelled_right(recognizer: SpeechRecognizer, speech: Speech) -> None:
    """Issue 11: names and jargon from `/vocabulary` reach Whisper as hotwords."""
    audio = speech.say("Our client Zhvania from Kvareli will call about the Rkatsiteli order.")
    names = ("Zhvania", "Kvareli", "Rkatsiteli")
    plain = recognizer.transcribe(audio, "en").text
    assert not all(name in plain for name in names), plain
    told = recognizer.transcribe(audio, "en", "Zhvania, Kvareli, Rkatsiteli").text
    assert all(name in told for name in names), told


def test_timestamps_say_where_speech_is_in_the_recording_pauses_included(
    recognizer: SpeechRecognizer, tmp_path: Path
) -> None:
    """Speech after a pause is timed where it is said, not as if the pause had been cut out: the `.srt` file
    and the stitched pieces of a long note rely on it."""
    from bench.speech import sentences, spaced

    said = sentences("en", 12, seed=4)[:2]
    data, starts, duration = spaced(said, [9.0, 0.5], "en", tmp_path)
    result = recognizer.transcribe(data, "en")
    assert result.segments[0].start == pytest.approx(starts[0], abs=0.6)
    assert result.segments[-1].end == pytest.approx(duration - 0.5, abs=0.8)
    assert result.segments[-1].end > starts[1]
