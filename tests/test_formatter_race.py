"""The formatter's answer protocol against a real nats-server and the Telegram double: exactly one answer, and
exactly one copy of every part of it, through races, dead formatters, flood control, outages and held edits.

Handlers are driven directly, with JetStream's redelivery emulated (`tests.support.Redelivered`): a `Retry` is
"try again later", never "done".
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiogram import Bot

from formatter.join import JoinState, JoinStore
from formatter.marks import AnswerMarks, Owned
from formatter.render import render_answer
from formatter.service import ORPHAN_AFTER, WATCH_EVERY, FormatterService
from infra.bus import Bus, Delivery, Retry, declaration, deliver
from infra.bus.names import BUCKET_ANSWERED, BUCKET_JOINS, STREAM
from infra.domain.answers import Claimed, Sent, encode_mark, read_mark
from infra.domain.contracts import Analysis, AudioReceived, AudioRef, Event, Origin, Section, Transcript
from infra.runtime.settings import Settings
from infra.voice.telegram import FloodControl, make_bot
from infra.voice.texts import text
from tests.support import TOKEN, Redelivered, a_transcript, eventually
from voice_insight.doubles.telegram_api import TelegramDouble

_chats = itertools.count(70_000_001)
_cids = itertools.count(1)
LEASE = 1.0
FIRST = Delivery(subject="voice.test", attempt=1)
LONG_TEXT = " ".join(f"Sentence number {n} of a long analysis of the quarterly plan." for n in range(70))


async def formatter(bus: Bus, bot: Bot, lease: float = LEASE, backoff_cap: float = 60.0) -> FormatterService:
    return FormatterService(
        bus,
        bot,
        JoinStore(await bus.kv(BUCKET_JOINS)),
        AnswerMarks(await bus.kv(BUCKET_ANSWERED), lease=lease),
        join_timeout=30,
        max_audio_seconds=600,
        answer_backoff_cap=backoff_cap,
        show_progress=False,  # these tests count the status message's edits: the answer's only
    )


async def a_note(
    bot: Bot,
    modes: tuple[str, ...] = ("DEFAULT", "TONE"),
    text: str = "We ship on Monday.",
    sections: tuple[Section, ...] | None = None,
    long: bool = False,
) -> tuple[int, str, list[Event]]:
    """A note's events; `long`: analyses long enough for an answer of several messages."""
    chat, cid = next(_chats), f"note{next(_cids)}x{id(bot)}"
    status = await bot.send_message(chat, "🎧 Listening…")
    origin = Origin(
        chat_id=chat, message_id=status.message_id - 1, status_message_id=status.message_id, ui_language="en"
    )
    events: list[Event] = [
        AudioReceived(
            correlation_id=cid, origin=origin, audio=AudioRef(object_name=cid, kind="voice", size=1), modes=modes
        ),
        a_transcript(cid, text),
    ] + [
        Analysis(
            correlation_id=cid,
            mode=m,
            title=m.title(),
            model="m",
            sections=sections
            if sections is not None
            else (Section(heading="H", body=f"{m} body" + (f" {LONG_TEXT}" if long else "")),),
        )
        for m in modes
    ]
    return chat, cid, events


def parts_seen(telegram: TelegramDouble, chat: int) -> list[str]:
    """Every message the user got in this chat, status edits folded into their final text."""
    return [m.text for m in telegram.messages(chat)]


def parts_of(events: list[Event]) -> int:
    """How many messages the whole answer to these events takes."""
    state = JoinState()
    for event in events:
        state.apply(event)
    return len(render_answer(state))


@pytest.fixture
async def bot(telegram: TelegramDouble) -> AsyncIterator[Bot]:
    bot = make_bot(Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url))
    yield bot
    await bot.session.close()


@pytest.fixture
async def impatient_bot(telegram: TelegramDouble) -> AsyncIterator[Bot]:
    """A bot whose flood control hands every 429 straight to its caller, and that hangs up after 1 s."""
    bot = make_bot(
        Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url), FloodControl(patience=0), request_timeout=1
    )
    yield bot
    await bot.session.close()


async def test_two_formatters_racing_on_every_event_send_every_part_once(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    one, two = await formatter(private_bus, bot), await formatter(private_bus, bot)
    for n in range(3):
        chat, _, events = await a_note(bot, long=True)
        # Both formatters receive every event, concurrently and in opposite orders, redelivered on Retry.
        await asyncio.gather(
            *(Redelivered(one.on_event)(e) for e in events), *(Redelivered(two.on_event)(e) for e in reversed(events))
        )
        texts = parts_seen(telegram, chat)
        assert parts_of(events) >= 3
        assert len(texts) == parts_of(events), f"round {n}: each part once: {[t[:40] for t in texts]}"
        assert len(telegram.messages(chat)[0].history) == 2, "the status message was edited once"
        assert "DEFAULT body Sentence number 0 " in texts[0] and "TONE body" in "".join(texts)
        assert "".join(texts).count("Sentence number 69 ") == 2


async def test_a_fresh_claim_means_later_and_a_dead_owners_claim_is_taken_over(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    chat, cid, events = await a_note(bot, modes=())
    answered = await private_bus.kv(BUCKET_ANSWERED)
    await answered.create(cid, encode_mark(Claimed(owner="a formatter that died", parts_sent=0)))
    survivor = await formatter(private_bus, bot)
    for event in events[:-1]:
        await survivor.on_event(event, FIRST)
    redelivered = Redelivered(survivor.on_event)
    assert await redelivered(events[-1]) == "acked"
    assert redelivered.retries, "the redelivered event was told to come back, not acked as done"
    assert telegram.messages(chat)[0].text.startswith("📝 Transcript")
    mark, _ = await read_mark(answered, cid)
    assert isinstance(mark, Sent) and mark.outcome == "answered"


async def test_a_429_in_the_middle_of_a_long_answer_repeats_no_part(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot, impatient_bot: Bot
) -> None:
    chat, _, events = await a_note(bot, long=True)
    service = await formatter(private_bus, impatient_bot)
    for event in events[:-1]:
        await service.on_event(event, FIRST)
    original_send = impatient_bot.send_message
    sent = 0

    async def flood_after_first_follow_up(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal sent
        sent += 1
        if sent == 2:
            telegram.flood(chat, retry_after=1)
        return await original_send(*args, **kwargs)

    impatient_bot.send_message = flood_after_first_follow_up  # type: ignore[method-assign]
    redelivered = Redelivered(service.on_event)
    assert await redelivered(events[-1]) == "acked"
    assert 1.0 in redelivered.retries, "Telegram's retry_after became the redelivery delay"
    assert len(parts_seen(telegram, chat)) == parts_of(events) and len(telegram.messages(chat)[0].history) == 2


async def test_a_mark_that_fails_to_land_after_the_last_part_repeats_nothing(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, _, events = await a_note(bot, long=True)
    service = await formatter(private_bus, bot)
    real_done = Owned.done
    failures = iter([ConnectionError("leader election")] * 6)

    async def done_fails_once(self: Owned, outcome: str = "answered") -> None:
        if (exc := next(failures, None)) is not None:
            raise exc
        await real_done(self, outcome)

    monkeypatch.setattr(Owned, "done", done_fails_once)
    for event in events[:-1]:
        await service.on_event(event, FIRST)
    with pytest.raises(ConnectionError):
        await service.on_event(events[-1], FIRST)
    monkeypatch.setattr(Owned, "done", real_done)
    assert await Redelivered(service.on_event)(events[-1]) == "acked"  # after the lease: resumes at the end
    assert len(parts_seen(telegram, chat)) == parts_of(events)


@pytest.mark.slow  # eight seconds of outage
async def test_an_answer_waits_out_a_telegram_outage(private_bus: Bus, telegram: TelegramDouble, bot: Bot) -> None:
    chat, _, events = await a_note(bot)
    service = await formatter(private_bus, bot, backoff_cap=0.5)
    for event in events[:-1]:
        await service.on_event(event, FIRST)
    telegram.outage()
    redelivered = Redelivered(service.on_event)
    pending = asyncio.create_task(redelivered(events[-1], timeout=120))
    await asyncio.sleep(4)
    telegram.drop_connections()  # then worse: connections dropped without an answer
    telegram.outage(False)
    await asyncio.sleep(4)
    telegram.drop_connections(False)
    assert await pending == "acked"
    assert len(redelivered.retries) > 8, "more attempts than the old consumer's max_deliver allowed"
    assert parts_seen(telegram, chat)[0].startswith("📝 Transcript") and len(telegram.messages(chat)[0].history) == 2


async def test_an_edit_held_until_the_client_hangs_up_is_sent_again_once(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot, impatient_bot: Bot
) -> None:
    chat, _, events = await a_note(bot)
    service = await formatter(private_bus, impatient_bot)
    for event in events[:-1]:
        await service.on_event(event, FIRST)
    telegram.hold_edits(2.5)
    try:
        with pytest.raises(Retry):
            await service.on_event(events[-1], FIRST)  # the client times out after 1 s
        await asyncio.sleep(2)
        assert telegram.dropped_edits >= 1
    finally:
        telegram.hold_edits(0)
    assert await Redelivered(service.on_event)(events[-1]) == "acked"
    assert len(telegram.messages(chat)) == 1 and len(telegram.messages(chat)[0].history) == 2


async def test_empty_sections_from_an_external_analyzer_do_not_poison_the_answer(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    empty = (
        Section(heading="Summary", body=""),
        Section(heading="", body="  "),
        Section(heading="Items", items=("", " ")),
    )
    chat, _, events = await a_note(bot, sections=empty)
    service = await formatter(private_bus, bot)
    outcomes = [await Redelivered(service.on_event)(e, timeout=10) for e in events]
    assert outcomes == ["acked"] * len(events)
    text = parts_seen(telegram, chat)[0]
    assert text.startswith("📝 Transcript") and "We ship on Monday." in text


async def test_a_chat_that_is_gone_ends_the_note_instead_of_looping(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    _, cid, events = await a_note(bot, modes=())
    origin = events[0].origin  # type: ignore[union-attr]
    gone = Origin(chat_id=-100999, message_id=1, status_message_id=2, ui_language="en")
    events[0] = AudioReceived(
        correlation_id=cid, origin=gone, audio=AudioRef(object_name=cid, kind="voice", size=1), modes=()
    )
    assert origin.chat_id != gone.chat_id
    telegram.forget_chat(gone.chat_id)  # the group was deleted, or the bot removed from it
    service = await formatter(private_bus, bot)
    outcomes = [await Redelivered(service.on_event)(e, timeout=10) for e in events]
    assert outcomes == ["acked", "acked"], "a permanent Bot API error is final, not retried"
    mark, _ = await read_mark(await private_bus.kv(BUCKET_ANSWERED), cid)
    assert isinstance(mark, Sent) and mark.outcome == "undeliverable"


async def test_an_answer_telegram_refuses_becomes_an_apology_in_the_status_message(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """Issue 21 (3): "message is too long" is permanent, so the note was closed as undeliverable, and its status
    message kept saying "Listening…" for good. What cannot be sent says so in the chat."""
    chat, cid, events = await a_note(bot)
    telegram.refuse_writes(chat, "message is too long")
    service = await formatter(private_bus, bot)
    outcomes = [await Redelivered(service.on_event)(e, timeout=10) for e in events]
    assert outcomes == ["acked"] * len(events), "a permanent refusal is final, not retried"
    mark, _ = await read_mark(await private_bus.kv(BUCKET_ANSWERED), cid)
    assert isinstance(mark, Sent) and mark.outcome == "undeliverable"
    (status,) = telegram.messages(chat)
    assert status.text == text("internal", "en"), status.text


async def test_a_deadline_waits_for_a_note_the_formatter_has_not_seen_yet(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """Issue 21 (6): ten minutes past its deadline the deadline consumer terminated a transcript whose note had no
    join state yet (the formatter's main consumer far behind after an outage). When the note's events were merged
    later, with a mode missing, nobody was left to answer it, and "Listening…" stayed for good."""
    chat, _, events = await a_note(bot)
    audio, transcript, gist, _tone = events
    assert isinstance(transcript, Transcript)
    late = msgspec.structs.replace(transcript, published_at=time.time() - 30 - ORPHAN_AFTER - 60)
    service = await formatter(private_bus, bot)
    verdict = await deliver(service.on_deadline, late, Delivery(subject="voice.transcript", attempt=1))
    assert verdict.outcome == "retry", verdict
    for event in (audio, late, gist):  # the main consumer catches up; TONE never answers
        await service.on_event(event, FIRST)
    assert await Redelivered(service.on_deadline)(late, timeout=10) == "acked"
    (answer,) = parts_seen(telegram, chat)
    assert answer.startswith("📝 Transcript") and "Default" in answer and "TONE" in answer, answer


async def test_a_resumed_answer_goes_on_with_what_it_began_to_show(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """Issue 21 (4): an answer sent at its deadline (TONE missing) was interrupted after its first part; TONE
    landed meanwhile, and the resumed answer applied "after part 1" to a new rendering, with TONE in it: the parts
    had shifted, so text was shown twice or never. What was promised to the chat is resumed as it was rendered."""
    chat, _, events = await a_note(bot, long=True)
    audio, transcript, gist, tone = events
    assert isinstance(transcript, Transcript)
    service = await formatter(private_bus, bot)
    for event in (audio, transcript, gist):
        await service.on_event(event, FIRST)
    late = msgspec.structs.replace(transcript, published_at=time.time() - 60)  # past its 30 s deadline
    telegram.refuse_writes(chat, "try again later", code=500, method="sendMessage")  # the second part fails
    verdict = await deliver(service.on_deadline, late, Delivery(subject="voice.transcript", attempt=1))
    assert verdict.outcome == "retry", verdict
    assert await Redelivered(service.on_event)(tone) == "acked"  # the late analysis: the join is complete now
    assert await Redelivered(service.on_deadline)(late) == "acked"
    shown = " ".join(" ".join(parts_seen(telegram, chat)).split())  # a message may end mid-sentence
    sentences = [shown.count(f"Sentence number {n} of") for n in range(70)]
    assert set(sentences) == {1}, f"each sentence of the one analysis shown, once: {sorted(set(sentences))}"
    assert shown.count("DEFAULT body") == 1 and "TONE body" not in shown and "TONE" in shown, shown[-300:]


async def test_two_formatters_show_a_notes_progress_in_order_and_lose_none(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """Issue 21 (7): what a note's status message shows, and when, lived in one formatter's memory. With two
    replicas, one that found the other's progress edit in flight dropped its newer state for good, and an older
    state could land after a newer one. The status shows the newest state, and never goes back."""

    async def replica() -> FormatterService:
        return FormatterService(
            private_bus,
            bot,
            JoinStore(await private_bus.kv(BUCKET_JOINS)),
            AnswerMarks(await private_bus.kv(BUCKET_ANSWERED), lease=LEASE),
            join_timeout=30,
            max_audio_seconds=600,
            progress_interval=0.2,
        )

    chat, _, events = await a_note(bot)
    audio, transcript, gist, _tone = events
    one, two = await replica(), await replica()
    await one.on_event(audio, FIRST)
    telegram.hold_edits(1.0)  # Telegram slow to take an edit
    await one.on_event(transcript, FIRST)  # one shows the transcript; its edit holds the status for a second
    await asyncio.sleep(0.3)
    telegram.hold_edits(0)
    await two.on_event(gist, FIRST)  # two has the transcript and the gist meanwhile
    status = telegram.messages(chat)[0]
    await eventually(lambda: "DEFAULT body" in status.text, 10)
    await asyncio.sleep(1.0)  # whatever either still had to show has been shown
    assert "DEFAULT body" in status.text, "the newer state stays"
    shown = [t for t in status.history if t.startswith("📝")]
    assert all("DEFAULT body" in t for t in shown[shown.index(next(t for t in shown if "DEFAULT body" in t)) :])


async def test_a_note_never_transcribed_ends_with_a_message_at_its_transcription_deadline(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """Issue 21 (2): a note whose transcript never comes (its pieces lost, a backlog of hours, every transcriber
    gone) left "Listening…" on screen for good: only a transcript started the formatter's deadline.
    The note's audio starts a watchdog of its own; at the transcription deadline the user is told, once, and a
    transcript that turns up after that is not a second answer."""
    chat, cid, events = await a_note(bot)
    audio, transcript, gist, tone = events
    assert isinstance(audio, AudioReceived)
    service = await formatter(private_bus, bot)
    watch = Redelivered(service.on_overdue)
    fresh = await deliver(service.on_overdue, audio, Delivery(subject="voice.audio", attempt=1))
    assert fresh.outcome == "retry" and 0 < fresh.delay <= WATCH_EVERY, fresh
    overdue = msgspec.structs.replace(audio, received_at=time.time() - service.transcription_deadline - 1)
    await service.on_event(overdue, FIRST)
    assert await watch(overdue) == "acked"
    (status,) = parts_seen(telegram, chat)
    assert status == text("overdue", "en"), status
    for late in (transcript, gist, tone):
        await service.on_event(late, FIRST)
    assert parts_seen(telegram, chat) == [status], "one answer: a late transcript is not a second one"
    mark, _ = await read_mark(await private_bus.kv(BUCKET_ANSWERED), cid)
    assert isinstance(mark, Sent) and mark.outcome == "answered", mark


async def test_the_watchdog_leaves_a_transcribed_note_to_its_join_deadline(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """Past the transcription deadline, a note whose transcript is in is the join deadline's to answer (with the
    analyses that came): the watchdog steps aside, and says nothing of its own."""
    chat, _, events = await a_note(bot)
    audio, transcript, gist, _tone = events
    assert isinstance(audio, AudioReceived)
    service = await formatter(private_bus, bot)
    overdue = msgspec.structs.replace(audio, received_at=time.time() - service.transcription_deadline - 1)
    for event in (overdue, transcript, gist):
        await service.on_event(event, FIRST)
    assert await Redelivered(service.on_overdue)(overdue) == "acked"
    (status,) = parts_seen(telegram, chat)
    assert status == "🎧 Listening…", status


async def test_an_overdue_note_the_formatter_has_not_joined_is_still_answered(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """The watchdog's own event carries the note's origin: a note the main consumer has not merged (far behind
    after an outage) still hears back at its deadline."""
    chat, _, events = await a_note(bot)
    audio = events[0]
    assert isinstance(audio, AudioReceived)
    service = await formatter(private_bus, bot)
    overdue = msgspec.structs.replace(audio, received_at=time.time() - service.transcription_deadline - 1)
    assert await Redelivered(service.on_overdue)(overdue) == "acked"
    assert parts_seen(telegram, chat) == [text("overdue", "en")]


async def test_an_overdue_answer_interrupted_by_an_outage_is_still_given(
    private_bus: Bus, telegram: TelegramDouble, impatient_bot: Bot
) -> None:
    """The watchdog keeps its "overdue" failure in the note's join state before answering. When that answer
    failed (Telegram away), the next look found a failure in the state and stepped aside as if the failure's own
    answer had it: nobody did, and "Listening…" stayed. The watchdog answers its own failure until it is out."""
    chat, _, events = await a_note(impatient_bot)
    audio = events[0]
    assert isinstance(audio, AudioReceived)
    service = await formatter(private_bus, impatient_bot, backoff_cap=0.5)
    overdue = msgspec.structs.replace(audio, received_at=time.time() - service.transcription_deadline - 1)
    telegram.outage()
    first = await deliver(service.on_overdue, overdue, Delivery(subject="voice.audio", attempt=1))
    assert first.outcome == "retry", first
    telegram.outage(False)
    assert await Redelivered(service.on_overdue)(overdue, timeout=20) == "acked"
    assert parts_seen(telegram, chat) == [text("overdue", "en")]


async def test_the_watchdog_waits_for_a_transcript_the_main_consumer_has_not_been_handed(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    """With the formatters down past a note's deadline, the watchdog (one KV read a look) caught up before the
    main consumer (every event merged) and said "could not transcribe" of a note whose transcript was waiting in
    the stream. It waits until the main consumer has been handed what was stored before the deadline."""
    chat, cid, events = await a_note(bot)
    audio, transcript, gist, tone = events
    assert isinstance(audio, AudioReceived)
    service = await formatter(private_bus, bot)
    spec = declaration(FormatterService.on_event).spec
    await private_bus.ensure_consumer(dataclasses.replace(spec, deliver_new_only=True))
    try:
        await private_bus.publish("voice.transcript", transcript, msg_id=f"{cid}.transcript")
        await asyncio.sleep(1.5)
        # Its deadline passed a moment after the transcript was stored, which the main consumer has not taken.
        overdue = msgspec.structs.replace(audio, received_at=time.time() - service.transcription_deadline - 0.5)
        await service.on_event(overdue, FIRST)
        verdict = await deliver(service.on_overdue, overdue, Delivery(subject="voice.audio", attempt=1))
        assert verdict.outcome == "retry", verdict
        for event in (transcript, gist, tone):  # the main consumer catches up: the note is answered in full
            await service.on_event(event, FIRST)
        assert await Redelivered(service.on_overdue)(overdue) == "acked"
        (answer,) = parts_seen(telegram, chat)
        assert answer.startswith("📝 Transcript"), answer
    finally:
        await private_bus.js.delete_consumer(STREAM, spec.durable)
