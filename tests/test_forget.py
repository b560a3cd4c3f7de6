"""`/forget`: the formatter's part, delivered as JetStream delivers it, against a real NATS and the Telegram
double; then, through the whole stack, the notes that were never answered with a transcript.

For an answered note the whole flow (nothing of the chat left in any stream or bucket) is `tests/test_chat.py`'s;
here, what a redelivery must not change (a chat told "0 notes" after its notes were deleted, a chat that is gone
keeping its data, the other keepers asked twice), and the notes `/forget` once did not find: a failed note's
events, a refused note's records, a note still in flight (answered, then left for a day), a note refused while
`/forget` was being carried out.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import msgspec
import nats.js.errors
import pytest
from aiogram import Bot

from formatter.forget import ChatForgetter
from formatter.join import JoinStore
from gateway.chats import chat_key
from gateway.intake import correlation_id, correlation_key
from infra.bus import Bus, Delivery, deliver
from infra.bus.names import (
    BUCKET_JOINS,
    BUCKET_NOTES,
    CONSUMER_FORMATTER_FORGET,
    CONSUMER_GATEWAY,
    STREAM,
    STREAM_FORGET,
    STREAM_UPDATES,
    SUBJECT_FORGET_INTAKE,
    SUBJECT_TRANSCRIPT,
    analysis_subject,
)
from infra.domain.contracts import Analysis, ForgetChat, ForgetIntake, Origin, Transcript
from infra.domain.limits import user_key
from infra.domain.notes import NoteStore, NoteTrail, StoredNote, text_digest
from infra.runtime.settings import Settings
from infra.voice.telegram import FloodControl, make_bot
from infra.voice.texts import text
from tests.support import (
    EN_TEXT,
    MAX_AUDIO_SECONDS,
    TOKEN,
    Speech,
    Stack,
    a_transcript,
    answer_to,
    eventually,
    everything_stored,
    forgotten_mark,
    fresh,
    new_chat,
    settled,
)
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import SentMessage, TelegramDouble

_chats = itertools.count(88_000_001)


@pytest.fixture
async def bot(telegram: TelegramDouble) -> AsyncIterator[Bot]:
    settings = Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url)
    made = make_bot(settings, FloodControl(patience=0), request_timeout=2)
    yield made
    await made.session.close()


async def a_note_of(bus: Bus, chat_id: int) -> tuple[str, str, int]:
    """An answered note of a chat, as the formatter keeps it: its event in the stream, its join, its record."""
    chat_key, cid = f"chat{chat_id}", f"note{chat_id}"
    ack = await bus.js.publish(SUBJECT_TRANSCRIPT, msgspec.json.encode(a_transcript(cid)), stream=STREAM)
    await (await bus.kv(BUCKET_JOINS)).put(cid, b"{}")
    origin = Origin(chat_id=chat_id, message_id=1, status_message_id=2, ui_language="en")
    note = StoredNote(origin=origin, transcript=a_transcript(cid), fingerprint=f"fp{chat_id}", seqs=(ack.seq,))
    await NoteStore(bus).put(chat_key, cid, note)
    return chat_key, cid, ack.seq


async def stored(bus: Bus, subject: str) -> list[bytes]:
    """Every message on `subject` still in `FORGET` (a work queue: nobody takes these here)."""
    found, seq = [], 1
    while True:
        try:
            msg = await bus.js.get_msg(STREAM_FORGET, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return found
        found.append(msg.data or b"")
        seq = (msg.seq or seq) + 1


def forget(chat_id: int, chat_key: str) -> ForgetChat:
    return ForgetChat(chat_key=chat_key, chat_id=chat_id, ui_language="en", settings=True)


async def test_a_redelivered_forget_says_what_was_deleted_not_zero(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """Telegram answers 500 to the first reply: the delivery is tried again, and the chat is told what there was,
    once; the notes and their events go only after the chat was told."""
    chat = next(_chats)
    chat_key, cid, seq = await a_note_of(private_bus, chat)
    forgetter = ChatForgetter(private_bus, bot)
    telegram.refuse_writes(chat, "try again later", code=500, method="sendMessage")

    first = await deliver(
        forgetter.on_forget, forget(chat, chat_key), Delivery(subject="forget.chat", attempt=1, seq=7)
    )
    assert first.outcome != "done", first
    second = await deliver(
        forgetter.on_forget, forget(chat, chat_key), Delivery(subject="forget.chat", attempt=2, seq=7)
    )
    assert second.outcome == "done", second

    [told] = [m.text for m in telegram.messages(chat)]
    assert "transcripts, analyses and audio: 1\n" in told and "this chat's settings: yes" in told, told
    assert await NoteStore(private_bus).get(chat_key, cid) is None
    with pytest.raises(nats.js.errors.NotFoundError):
        await private_bus.js.get_msg(STREAM, seq=seq)
    # The keepers were asked once, whatever the attempts: the request's ID is the delivery's.
    asked = [msgspec.json.decode(m, type=ForgetIntake) for m in await stored(private_bus, SUBJECT_FORGET_INTAKE)]
    assert [a.correlation_ids for a in asked if cid in a.correlation_ids] == [(cid,)]


async def test_a_chat_that_is_gone_is_forgotten_all_the_same(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """The bot was removed from the group, or the chat deleted: nobody can be told, and nothing is kept."""
    chat = next(_chats)
    chat_key, cid, _ = await a_note_of(private_bus, chat)
    telegram.forget_chat(chat)
    forgetter = ChatForgetter(private_bus, bot)
    verdict = await deliver(
        forgetter.on_forget, forget(chat, chat_key), Delivery(subject="forget.chat", attempt=1, seq=9)
    )
    assert verdict.outcome == "done", verdict
    assert not telegram.messages(chat), "nobody was told: the chat is gone"
    assert await NoteStore(private_bus).get(chat_key, cid) is None


async def test_a_failed_notes_trail_is_found_and_erased_with_its_events(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """A failed note has no transcript to keep for buttons, but its events name the chat: the trail of where they
    lie is found and erased like an answered note."""
    chat = next(_chats)
    chat_key_, kept, _ = await a_note_of(private_bus, chat)
    ack = await private_bus.js.publish(SUBJECT_TRANSCRIPT, msgspec.json.encode(a_transcript("failed")), stream=STREAM)
    await NoteStore(private_bus).keep_trail(chat_key_, "failed", NoteTrail(seqs=(ack.seq,)))
    forgetter = ChatForgetter(private_bus, bot)
    verdict = await deliver(
        forgetter.on_forget, forget(chat, chat_key_), Delivery(subject="forget.chat", attempt=1, seq=11)
    )
    assert verdict.outcome == "done", verdict
    [told] = [m.text for m in telegram.messages(chat)]
    assert "transcripts, analyses and audio: 2\n" in told, told
    with pytest.raises(nats.js.errors.NotFoundError):
        await private_bus.js.get_msg(STREAM, seq=ack.seq)
    assert not await private_bus.kv_keys(BUCKET_NOTES, prefix=f"{chat_key_}."), "neither the note nor the trail"
    assert await NoteStore(private_bus).get(chat_key_, kept) is None


# --- through the whole stack ----------------------------------------------------------------------------------

KEY = correlation_key(TOKEN)
FORGOTTEN = "🧹 Deleted:"


def traces_of(chat: int, *notes: int) -> tuple[bytes, ...]:
    """What names the chat or its notes: their IDs, the chat's key, its user's key (a private chat's), its id."""
    ids = [correlation_id(KEY, chat, note) for note in notes]
    return (
        *(i.encode() for i in ids),
        chat_key(KEY, chat).encode(),
        user_key(KEY, chat).encode(),
        f'"chat_id":{chat},'.encode(),
    )


async def left_of(bus: Bus, traces: tuple[bytes, ...], digest: bytes | None = None) -> list[str]:
    """Where the chat still is: a trace in a message's subject or data, or a cached analysis of its transcript (a
    purged one leaves an empty marker under its key, a hash of the transcript, for the cache's hour). A note's
    mark that it was forgotten is what `/forget` leaves on purpose."""
    return [
        f"{stream}: {subject}"
        for stream, subject, data in await everything_stored(bus)
        if (any(t in subject.encode() or t in data for t in traces) and not forgotten_mark(stream, data))
        or (digest is not None and digest in subject.encode() and b"'KV-Operation': 'PURGE'" not in data)
    ]


async def nothing_left(bus: Bus, traces: tuple[bytes, ...], digest: bytes | None = None) -> None:
    deadline = time.monotonic() + 30
    while left := await left_of(bus, traces, digest):
        assert time.monotonic() < deadline, f"left behind: {left}"
        await asyncio.sleep(0.5)


async def say_forget(telegram: TelegramDouble, chat: int) -> str:
    await telegram.send_text(chat, "/forget")
    await telegram.wait_for(lambda: any(m.text.startswith(FORGOTTEN) for m in telegram.messages(chat)), 30)
    return next(m.text for m in telegram.messages(chat) if m.text.startswith(FORGOTTEN))


async def transcript_of(bus: Bus, cid: str) -> Transcript:
    """The note's transcript, as it went through the stream."""
    seq = 1
    while True:
        msg = await bus.js.get_msg(STREAM, seq=seq, subject=SUBJECT_TRANSCRIPT, next=True)
        found = msgspec.json.decode(msg.data or b"", type=Transcript)
        if found.correlation_id == cid:
            return found
        seq = (msg.seq or seq) + 1


def full_answer(telegram: TelegramDouble, chat: int) -> SentMessage | None:
    """The note's answer with both analyses in it, in its status message or in a message of its own."""
    return next((m for m in telegram.messages(chat) if "📌 The gist" in m.text and "🎭 Tone" in m.text), None)


def status_of(telegram: TelegramDouble, chat: int, note: int) -> SentMessage | None:
    return next((m for m in telegram.messages(chat) if m.reply_to == note), None)


async def test_forget_erases_the_events_of_a_failed_note_and_the_records_of_a_refused_one(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    """Silence fails at the transcriber, after its events went through the stream with the chat's id in them; an
    over-long note is refused by the gateway, and leaves its intake record and answered mark. Neither was kept for
    buttons, and `/forget` once found neither."""
    chat = new_chat()
    silent = await telegram.send_media(chat, speech.lavfi("anullsrc=r=16000:cl=mono", 6), duration=6)
    assert (await answer_to(telegram, chat, silent)).text.startswith("🤫 I could not hear any speech")
    too_long = await telegram.send_media(chat, speech.say("hello"), duration=MAX_AUDIO_SECONDS + 60)
    assert (await answer_to(telegram, chat, too_long)).text.startswith("⏱ This recording is longer")
    await settled(bus)
    traces = traces_of(chat, silent, too_long)
    before = await left_of(bus, traces)
    assert any(entry.startswith(f"{STREAM}: ") for entry in before), "the failed note's events name the chat"
    refused = correlation_id(KEY, chat, too_long)
    assert any(entry.endswith(f".{refused}") for entry in before), "the refused note's records are there"

    told = await say_forget(telegram, chat)
    assert "notes, with their transcripts, analyses and audio: 2\n" in told, told
    assert "this chat's settings: none" in told, told
    await nothing_left(bus, traces)


async def test_a_note_in_flight_at_forget_is_answered_then_erased_and_never_kept(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, bus: Bus
) -> None:
    """The transcript is shown, the analyses are on their way when the chat says `/forget`: the note is answered
    in full, offers no buttons (nothing is kept for them), and right after its answer nothing of it is left:
    events, stored note, join, marks, intake record, cached transcript and analyses. The chat is told so."""
    chat = new_chat()
    openai_double.latency = 6.0  # the models are slow today: the note is in flight for a while
    try:
        voice = await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9)
        await telegram.wait_for(
            lambda: "📝 Transcript" in ((m := status_of(telegram, chat, voice)) and m.text or ""), 120
        )
        transcript = await transcript_of(bus, correlation_id(KEY, chat, voice))
        told = await say_forget(telegram, chat)
        await telegram.wait_for(lambda: full_answer(telegram, chat) is not None, 120)
    finally:
        openai_double.latency = 0.0
    answer = full_answer(telegram, chat)
    assert answer is not None
    assert "analyses and audio: 0\n" in told, told
    assert "Notes still in progress will be answered, then deleted at once." in told, told
    assert not answer.keyboard, "nothing is kept for buttons under it"
    cid = correlation_id(KEY, chat, voice)
    said = transcript.text.encode()  # what an answer, a cached transcript or the note would hold
    await nothing_left(bus, (*traces_of(chat, voice), said), text_digest(transcript.text).encode())
    assert await NoteStore(bus).get(chat_key(KEY, chat), cid) is None

    # Nothing brings it back: an analysis later than its answer (a model past the join's deadline, an analyzer
    # catching up), nor its update sent again by Telegram (a lost offset, a webhook's retry).
    late = Analysis(correlation_id=cid, mode="TONE", title="Tone", model="m", text=f"About: {transcript.text}")
    await bus.publish(analysis_subject("TONE"), late, msg_id=f"{cid}.analysis.late")
    await settled(bus)
    assert await JoinStore(await bus.kv(BUCKET_JOINS)).get(cid) is None, "a late analysis opened a join again"
    await nothing_left(bus, (*traces_of(chat, voice), said), text_digest(transcript.text).encode())
    before = [m.text for m in telegram.all_messages(chat)]
    await redelivered(telegram, bus, voice)
    await asyncio.sleep(1.0)  # an answer from the formatter would follow within a second
    assert [m.text for m in telegram.all_messages(chat)] == before, "taken in and answered again"


async def test_a_note_refused_while_forget_is_carried_out_leaves_nothing(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    """The note is still being downloaded when the chat says `/forget`, and then refused (the download fails): it
    is answered, with the refusal alone (no apology after it), and its records go at once."""
    chat = new_chat()
    telegram.download_delay = 4.0
    telegram.fail_downloads(404, 404, 404)
    try:
        voice = await telegram.send_media(chat, speech.say("hello there"), duration=3)
        await telegram.wait_for(lambda: status_of(telegram, chat, voice) is not None, 30)
        told = await say_forget(telegram, chat)
        answer = await answer_to(telegram, chat, voice, timeout=60)
    finally:
        telegram.download_delay = 0.0
        telegram.fail_downloads()
    assert "analyses and audio: 0\n" in told, told
    assert answer.text.startswith("📡 I could not download the file"), answer.text
    await nothing_left(bus, traces_of(chat, voice))
    await asyncio.sleep(1.0)  # an apology would have come by now
    assert [m.text for m in telegram.messages(chat)] == [answer.text, told]
    # Telegram sends the note's update again (a lost offset, a webhook's retry): it was answered, and forgotten.
    await redelivered(telegram, bus, voice)
    assert [m.text for m in telegram.all_messages(chat)] == [answer.text, told], "no new 'Listening…'"


async def redelivered(telegram: TelegramDouble, bus: Bus, message_id: int) -> None:
    """Telegram delivers a message's update again, under a new update ID, and the gateway has handled it."""
    await telegram.redeliver(message_id)
    update_id = telegram.updates[-1]["update_id"]
    await eventually(lambda: telegram.confirmed_offset > update_id, 30, 0.1)  # polled and passed on
    await settled(bus, CONSUMER_GATEWAY, stream=STREAM_UPDATES)


_groups = iter(range(-100_880_000_001, -100_890_000_000, -1))  # this module's own


async def test_a_note_asked_for_after_forget_is_a_new_note_though_sent_before_it(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    """`/forget` erases what was in flight at that moment, not whatever was sent before it: a video in a group
    from before the `/forget`, which nobody had asked about, asked about after it (`/transcribe`) is answered as
    any note is, with its buttons, and kept for them."""
    group, admin = next(_groups), 1301
    telegram.members[(group, admin)] = "administrator"  # who may say /forget in a group
    video = await telegram.send_media(
        group,
        speech.video_note(EN_TEXT),
        kind="video",
        duration=9,
        mime_type="video/mp4",
        file_name="clip.mp4",
        from_user=admin,
    )
    await telegram.send_text(group, "/forget", from_user=admin)
    await telegram.wait_for(lambda: any(m.text.startswith(FORGOTTEN) for m in telegram.messages(group)), 30)
    await telegram.send_text(group, "/transcribe", reply_to=video, from_user=admin)
    answer = await answer_to(telegram, group, video, timeout=180)
    assert "budget" in answer.text.lower() and answer.keyboard, answer.text
    await settled(bus)
    kept = await NoteStore(bus).get(chat_key(KEY, group), correlation_id(KEY, group, video))
    assert kept is not None, "erased as if it had been in flight at /forget"


async def test_a_note_asked_for_again_after_forget_erased_it_says_how_to_have_it_again(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    """A `/transcribe` of a note answered already is told where the answer is; of one `/forget` erased (it stays
    answered for its mark's day, so that nothing of it comes back), to send it anew: never silence."""
    chat = new_chat()
    voice = await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9)
    await answer_to(telegram, chat, voice)
    await settled(bus)
    await telegram.send_text(chat, "/transcribe", reply_to=voice)
    await telegram.wait_for(lambda: any("answered already" in m.text for m in telegram.messages(chat)), 30)
    await say_forget(telegram, chat)
    await settled(bus, CONSUMER_FORMATTER_FORGET, stream=STREAM_FORGET)  # the chat is told before its notes go
    await telegram.send_text(chat, "/transcribe", reply_to=voice)
    await telegram.wait_for(lambda: any("deleted with /forget" in m.text for m in telegram.messages(chat)), 30)
    told = next(m for m in telegram.messages(chat) if "deleted with /forget" in m.text)
    assert told.text == text("note_forgotten", "en") and told.reply_to != voice
    await settled(bus)
    assert sum(m.reply_to == voice for m in telegram.messages(chat)) == 1, "not taken in a second time"
