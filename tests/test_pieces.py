"""A long note's pieces, one delivery at a time (`deliver`, as the bus runs them): what is offered, what a
redelivery does, silence in a piece, a recording found too long only by decoding it. Real Whisper, a real
nats-server of the module's own, no services running on it."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import msgspec
import nats.js.errors
import pytest

from bench.speech import sentences, spaced, speak, voice_note
from infra.bus import Bus, Delivery, declaration, decoder, deliver
from infra.bus.names import BUCKET_PIECES, STREAM, STREAM_PIECES, SUBJECT_FAILED, SUBJECT_PIECE, SUBJECT_TRANSCRIPT
from infra.domain.contracts import AudioReceived, AudioRef, Failure, Origin, PieceRequested, Transcript
from tests.support import aligned, counted, live_stream, lost_sentences, words
from transcriber.asr import SpeechRecognizer
from transcriber.pieces import PieceTranscribed
from transcriber.service import TranscriberService

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recognizer(model_dir: Path) -> SpeechRecognizer:
    return SpeechRecognizer(str(model_dir), device="cpu", max_seconds=120)


async def a_note(bus: Bus, cid: str, audio: bytes) -> AudioReceived:
    await (await bus.audio_store()).put(cid, audio)
    return AudioReceived(
        correlation_id=cid,
        origin=Origin(chat_id=1, message_id=1, status_message_id=2, ui_language="en", chat_key="c0ffee"),
        audio=AudioRef(object_name=cid, kind="voice", size=len(audio)),
        modes=(),
    )


async def offered(bus: Bus, cid: str) -> list[PieceRequested]:
    """The pieces waiting on `piece.transcribe` for this note, in order."""
    pieces, seq = [], 1
    while True:
        try:
            msg = await bus.js.get_msg(STREAM_PIECES, seq=seq, subject=SUBJECT_PIECE, next=True)
        except nats.js.errors.NotFoundError:
            break
        assert msg.seq is not None and msg.data is not None
        piece = decoder(PieceRequested).decode(msg.data)
        if piece.correlation_id == cid:
            pieces.append(piece)
        seq = msg.seq + 1
    return sorted(pieces, key=lambda p: p.index)


async def last(bus: Bus, subject: str, kind: type[msgspec.Struct]) -> msgspec.Struct | None:
    try:
        msg = await bus.js.get_last_msg(STREAM, subject)
    except nats.js.errors.NotFoundError:
        return None
    assert msg.data is not None
    return decoder(kind).decode(msg.data)


def delivery(subject: str, attempt: int = 1) -> Delivery:
    """A delivery with the attempts the transcriber's consumer of `subject` declares."""
    handler = TranscriberService.transcribe_piece if subject == SUBJECT_PIECE else TranscriberService.handle
    return Delivery(subject, attempt, max_attempts=declaration(handler).spec.max_attempts)


async def test_pieces_are_offered_transcribed_once_and_stitched_through_silence(
    private_bus: Bus, recognizer: SpeechRecognizer, tmp_path: Path
) -> None:
    said = sentences("en", 40, seed=8)
    # A minute of silence in the middle: one piece holds nothing but that.
    pauses: list[float | None] = [0.4] * len(said)
    pauses[len(said) // 2 - 1] = 60.0
    audio, starts, duration = await asyncio.to_thread(spaced, said, pauses, "en", tmp_path)
    service = TranscriberService(private_bus, recognizer, piece_seconds=20)
    calls = counted(recognizer)
    note = await a_note(private_bus, "cafe01", audio)

    verdict = await deliver(service.handle, note, delivery("voice.audio"))
    assert verdict.outcome == "done" and calls == [], "the taker splits; it transcribes nothing itself"
    pieces = await offered(private_bus, "cafe01")
    assert len(pieces) >= 4 and [p.index for p in pieces] == list(range(len(pieces)))
    assert pieces[0].bounds[0] == 0.0 and pieces[0].bounds[-1] == pytest.approx(duration, abs=0.1)
    assert {p.language for p in pieces} == {"en"}

    *first, final = pieces
    for piece in first:
        assert (await deliver(service.transcribe_piece, piece, delivery(SUBJECT_PIECE))).outcome == "done"
    assert await last(private_bus, SUBJECT_TRANSCRIPT, Transcript) is None, "not before the last piece"
    # A crash after storing a piece and before its ack: the redelivery does not transcribe it again.
    before = len(calls)
    assert (await deliver(service.transcribe_piece, first[0], delivery(SUBJECT_PIECE, 2))).outcome == "done"
    assert len(calls) == before
    assert (await deliver(service.transcribe_piece, final, delivery(SUBJECT_PIECE))).outcome == "done"
    assert sorted(calls) == [p.start for p in pieces], "every piece transcribed once"

    transcript = await last(private_bus, SUBJECT_TRANSCRIPT, Transcript)
    assert isinstance(transcript, Transcript) and transcript.correlation_id == "cafe01"
    assert transcript.duration == pytest.approx(duration, abs=0.1)
    found, excess = aligned(said, words(transcript.text))
    assert lost_sentences(said, words(transcript.text)) == [] and excess < 6
    assert all(a.end <= b.start for a, b in zip(transcript.segments, transcript.segments[1:]))
    assert await private_bus.kv_keys(BUCKET_PIECES, "c0ffee.cafe01.") != []


async def test_a_recording_found_too_long_by_decoding_offers_no_piece(
    private_bus: Bus, recognizer: SpeechRecognizer, tmp_path: Path
) -> None:
    """A live stream declares no duration: it is cut into pieces while decoding, until the limit says no. The
    pieces stored so far are erased and the user is told; no transcriber spends a second on it."""
    audio = live_stream(tmp_path / "live.webm", 150).read_bytes()
    service = TranscriberService(private_bus, recognizer, piece_seconds=20)
    note = await a_note(private_bus, "cafe02", audio)
    verdict = await deliver(service.handle, note, delivery("voice.audio"))
    assert verdict.outcome == "failed" and verdict.reason == "too_long" and verdict.told
    assert await offered(private_bus, "cafe02") == []
    store = await private_bus.audio_store()
    for n in range(8):
        with pytest.raises(nats.js.errors.NotFoundError):
            await store.get_info(f"cafe02.piece.{n}", show_deleted=True)
    failure = await last(private_bus, SUBJECT_FAILED, Failure)
    assert isinstance(failure, Failure) and failure.correlation_id == "cafe02" and failure.reason == "too_long"


async def test_a_piece_that_cannot_be_read_fails_its_note_with_a_message(
    private_bus: Bus, recognizer: SpeechRecognizer
) -> None:
    note = await a_note(private_bus, "cafe03", b"")
    piece = PieceRequested(
        correlation_id="cafe03", note=note, index=0, bounds=(0.0, 300.0, 600.0), object_name="cafe03.piece.0"
    )
    service = TranscriberService(private_bus, recognizer)
    verdict = await deliver(service.transcribe_piece, piece, delivery(SUBJECT_PIECE))
    assert verdict.outcome == "failed" and verdict.told
    failure = await last(private_bus, SUBJECT_FAILED, Failure)
    assert isinstance(failure, Failure) and failure.correlation_id == "cafe03" and failure.stage == "transcriber"


async def test_a_recording_that_starts_silent_still_gets_its_language(
    private_bus: Bus, recognizer: SpeechRecognizer, tmp_path: Path
) -> None:
    """Nothing is said in the first piece, so no language is told for all: each piece finds its own, and the
    transcript takes the one of the piece with the most speech."""
    said = sentences("en", 12, seed=9)
    talk, _, _ = await asyncio.to_thread(spaced, said, [0.4] * len(said), "en", tmp_path)
    (tmp_path / "talk.ogg").write_bytes(talk)
    late = tmp_path / "late.wav"  # 45 s of nothing, then the talk
    delay = ["ffmpeg", "-loglevel", "error", "-y", "-i", str(tmp_path / "talk.ogg"), "-af", "adelay=45000"]
    subprocess.run([*delay, "-ac", "1", str(late)], check=True)
    service = TranscriberService(private_bus, recognizer, piece_seconds=20)
    note = await a_note(private_bus, "cafe04", voice_note(late))
    assert (await deliver(service.handle, note, delivery("voice.audio"))).outcome == "done"
    pieces = await offered(private_bus, "cafe04")
    assert len(pieces) >= 2 and {p.language for p in pieces} == {None}
    for piece in pieces:
        assert (await deliver(service.transcribe_piece, piece, delivery(SUBJECT_PIECE))).outcome == "done"
    transcript = await last(private_bus, SUBJECT_TRANSCRIPT, Transcript)
    assert isinstance(transcript, Transcript) and transcript.correlation_id == "cafe04"
    assert transcript.language == "en"


async def test_a_note_past_its_transcription_deadline_is_left_and_its_pieces_too(
    private_bus: Bus, recognizer: SpeechRecognizer, tmp_path: Path
) -> None:
    """Issue 21 (2): past the deadline the formatter's watchdog tells the user the note could not be transcribed in
    time; a transcriber reaching it afterwards spent its cores on a transcript nobody would read, in the very
    backlog that made it late. It leaves the note, and a piece of it (every piece's samples and text erased), and
    says why: one `overdue` failure per note, which the answered mark keeps to one answer."""
    audio, _ = await asyncio.to_thread(speak, "We ship on Monday.", "en", tmp_path)
    service = TranscriberService(private_bus, recognizer, transcription_deadline=60)
    calls = counted(recognizer)
    note = msgspec.structs.replace(await a_note(private_bus, "cafe05", audio), received_at=time.time() - 61)
    verdict = await deliver(service.handle, note, delivery("voice.audio"))
    assert verdict.outcome == "failed" and verdict.reason == "overdue" and verdict.told and calls == []
    transcript = await last(private_bus, SUBJECT_TRANSCRIPT, Transcript)  # the module's stream: earlier notes'
    assert not isinstance(transcript, Transcript) or transcript.correlation_id != "cafe05"
    failure = await last(private_bus, SUBJECT_FAILED, Failure)
    assert isinstance(failure, Failure) and failure.correlation_id == "cafe05" and failure.reason == "overdue"
    store = await private_bus.audio_store()
    await store.put("cafe05.piece.0", b"\0" * 32_000)
    await store.put("cafe05.piece.1", b"\0" * 32_000)
    done = PieceTranscribed(segments=(), seconds=0.1, model="m")
    await (await private_bus.kv(BUCKET_PIECES)).put("c0ffee.cafe05.1", msgspec.json.encode(done))
    piece = PieceRequested(
        correlation_id="cafe05", note=note, index=0, bounds=(0.0, 1.0, 2.0), object_name="cafe05.piece.0"
    )
    assert (await deliver(service.transcribe_piece, piece, delivery(SUBJECT_PIECE))).reason == "overdue"
    # Nothing of the note is kept for a day after its user was told: not a piece's samples, not a piece's text.
    assert calls == [] and await private_bus.kv_keys(BUCKET_PIECES, "c0ffee.cafe05.") == []
    for name in ("cafe05.piece.0", "cafe05.piece.1"):
        with pytest.raises(nats.js.errors.NotFoundError):
            await store.get(name)
