"""Who may use the bot, how much, and in what order: the gateway in-process against a real nats-server and a
Telegram double of its own, and the transcribers' fair order through the bus."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from gateway.intake import Intake
from infra.bus import Bus, ConsumerSpec, Delivery, decoder, deliver
from infra.bus.names import BUCKET_BUDGET, STREAM, SUBJECT_AUDIO, SUBJECT_AUDIO_QUEUED
from infra.domain.contracts import AudioReceived
from infra.domain.limits import DailyCounter, note_finished
from infra.runtime.settings import Limits
from tests.support import Gateway, a_transcript, an_analyzer, first_delivery, subscriber
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import TelegramDouble

TOKEN = "424242424:DDHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw5"
_users = itertools.count(80_000_001)
OGG = b"OggS" + bytes(2000)  # the gateway does not decode: any bytes will do


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramDouble]:  # its own bot, so the session stack never polls it
    double = TelegramDouble(TOKEN)
    await double.start()
    yield double
    await double.stop()


async def refusal(telegram: TelegramDouble, chat: int, count: int, start: str) -> list[str]:
    """Wait for `count` status messages, one of them turned into a refusal (no transcriber runs here)."""
    await telegram.wait_for(
        lambda: (
            len(telegram.messages(chat)) >= count and any(m.text.startswith(start) for m in telegram.messages(chat))
        ),
        60,
    )
    return [m.text for m in telegram.messages(chat)]


async def audio_events(bus: Bus, since: int) -> list[tuple[str, AudioReceived]]:
    info = await bus.js.stream_info(STREAM)
    found = []
    for seq in range(since + 1, info.state.last_seq + 1):
        try:
            stored = await bus.js.get_msg(STREAM, seq)
        except Exception:
            continue
        if stored.subject in (SUBJECT_AUDIO, SUBJECT_AUDIO_QUEUED):
            found.append((stored.subject, decoder(AudioReceived).decode(stored.data)))
    return found


async def test_a_closed_bot_tells_a_stranger_their_id_and_takes_nothing(
    private_bus: Bus, telegram: TelegramDouble
) -> None:
    owner, stranger = next(_users), next(_users)
    since = (await private_bus.js.stream_info(STREAM)).state.last_seq
    async with Gateway(private_bus, telegram, Limits(allowed=frozenset({owner}))):
        await telegram.send_media(stranger, OGG, duration=3)
        await telegram.send_text(stranger, "/help", language_code="ru")
        await telegram.wait_for(lambda: len(telegram.messages(stranger)) == 2, 30)
        await telegram.send_text(owner, "/help")
        await telegram.wait_for(lambda: len(telegram.messages(owner)) == 1, 30)
    first, second = (m.text for m in telegram.messages(stranger))
    assert first.startswith("🔒 This is a private bot") and str(stranger) in first
    assert second.startswith("🔒 Это частный бот")
    assert "How to use it" in telegram.messages(owner)[0].text
    assert not [e for _, e in await audio_events(private_bus, since)], "nothing of the stranger's was taken in"
    assert not [m for m, p in telegram.calls if m.lower() == "getfile"]


async def test_notes_per_minute_and_notes_in_flight_are_limited_with_a_clear_message(
    private_bus: Bus, telegram: TelegramDouble
) -> None:
    fast, busy = next(_users), next(_users)
    async with Gateway(private_bus, telegram, Limits(allowed=None, per_minute=3, max_pending=30)):
        for _ in range(4):
            await telegram.send_media(fast, OGG, duration=3)
        texts = await refusal(telegram, fast, 4, "⏳")
    assert sum(t.startswith("⏳ That is a lot of notes in one minute") for t in texts) == 1
    assert texts.count("🎧 Listening…") == 3
    async with Gateway(private_bus, telegram, Limits(allowed=None, per_minute=100, max_pending=2)):
        for _ in range(3):
            await telegram.send_media(busy, OGG, duration=3, language_code="ru")
        texts = await refusal(telegram, busy, 3, "⏳")
    assert sum(t.startswith("⏳ Я ещё разбираю 2 ваши записи") for t in texts) == 1, (
        "two: «ваши записи», not «ваших записей»"
    )


async def test_the_daily_minutes_are_a_quota(private_bus: Bus, telegram: TelegramDouble) -> None:
    user = next(_users)
    async with Gateway(private_bus, telegram, Limits(allowed=None, daily_minutes=2)):
        await telegram.send_media(user, OGG, duration=150)
        texts = await refusal(telegram, user, 1, "📊")
    assert texts[0].startswith("📊 You have used today's 2 minutes of listening")


async def test_a_flooding_user_does_not_delay_someone_with_one_note(private_bus: Bus, telegram: TelegramDouble) -> None:
    flooder, other = next(_users), next(_users)
    since = (await private_bus.js.stream_info(STREAM)).state.last_seq
    async with Gateway(private_bus, telegram, Limits(allowed=None)):
        for _ in range(5):
            await telegram.send_media(flooder, OGG, duration=3)
            await asyncio.sleep(0.3)  # in order, as a forwarded batch arrives
        await telegram.send_media(other, OGG, duration=3)
        deadline = time.monotonic() + 60
        while len(events := await audio_events(private_bus, since)) < 6:
            assert time.monotonic() < deadline, events
            await asyncio.sleep(0.2)
    subjects = [(subject, event.origin.chat_id) for subject, event in events]
    assert [s for s, chat in subjects if chat == flooder] == [SUBJECT_AUDIO] * 2 + [SUBJECT_AUDIO_QUEUED] * 3
    assert [s for s, chat in subjects if chat == other] == [SUBJECT_AUDIO]

    # A transcriber takes `voice.audio` first: the other user's note before the flooder's third.
    order: list[int] = []
    done = asyncio.Event()

    async def transcribe(event: AudioReceived, delivery: Delivery) -> None:
        if event.origin.chat_id in (flooder, other):
            order.append(event.origin.chat_id)
            await note_finished(private_bus, event.correlation_id)
        if len(order) == 6:
            done.set()

    await private_bus.start(
        subscriber(
            ConsumerSpec("fair-test", SUBJECT_AUDIO, ack_wait=5.0),
            AudioReceived,
            transcribe,
            then=(ConsumerSpec("fair-test-queued", SUBJECT_AUDIO_QUEUED, ack_wait=5.0),),
        )
    )
    await asyncio.wait_for(done.wait(), 60)
    assert order.index(other) <= 2, f"the single note waited behind the flood: {order}"


async def test_past_the_daily_token_budget_analyses_stop_and_say_why(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    await DailyCounter(await private_bus.kv(BUCKET_BUDGET)).add("tokens", 1000)
    analyzer = await an_analyzer(private_bus, openai_double.base_url, "TONE", daily_tokens=1000)
    before = len(openai_double.requests)
    transcript = a_transcript("budget-test", "Hello.")
    await deliver(analyzer.handle, transcript, first_delivery(analyzer.handle))
    assert len(openai_double.requests) == before
    stored = await private_bus.js.get_last_msg(STREAM, "voice.analysis.TONE")
    assert b'"error":"budget_exhausted"' in stored.data


async def test_an_intake_that_keeps_failing_ends_in_an_apology_in_the_status_message(
    private_bus: Bus, telegram: TelegramDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_hand_over(self: Intake, *args: object) -> None:
        raise RuntimeError("the object store is gone")

    monkeypatch.setattr(Intake, "_hand_over", broken_hand_over)
    user = next(_users)
    async with Gateway(private_bus, telegram, Limits(allowed=None), give_up_after=2):
        await telegram.send_media(user, OGG, duration=3)
        await telegram.wait_for(lambda: any("Something broke" in m.text for m in telegram.messages(user)), 60)
    messages = telegram.messages(user)
    assert len(messages) == 1 and messages[0].history == ["🎧 Listening…", messages[0].text]


async def test_in_a_group_the_bot_keeps_out_of_the_conversation(private_bus: Bus, telegram: TelegramDouble) -> None:
    """Issue 11: in a group the bot speaks only about voice notes or when addressed, never to the chatter."""
    group, closed_group = -100_000_000_001, -100_000_000_002
    telegram.privacy_mode = False  # the bot sees the whole conversation (an admin, or privacy mode off)
    async with Gateway(private_bus, telegram, Limits(allowed=frozenset({group}))):
        await telegram.send_text(group, "Who is bringing the cake on Friday?")
        await telegram.send_text(closed_group, "Lunch at noon?")
        await telegram.send_text(group, "/help")
        await telegram.send_text(closed_group, "/help")
        await telegram.wait_for(lambda: bool(telegram.messages(group)) and bool(telegram.messages(closed_group)), 30)
        await asyncio.sleep(1.0)  # time enough for any answer to the chatter to arrive
    telegram.privacy_mode = True
    answered = [m.text for m in telegram.messages(group)]
    assert len(answered) == 1 and answered[0].startswith("How to use it"), answered
    refused = [m.text for m in telegram.messages(closed_group)]
    assert len(refused) == 1 and refused[0].startswith("🔒"), refused


async def test_two_requests_for_one_note_take_it_in_once(private_bus: Bus, telegram: TelegramDouble) -> None:
    """Issue 21 (5): two `/transcribe` replies to one voice note both read "no intake yet" and each sent a status
    message; one of them was never answered. Whoever creates the note's intake record takes it in."""
    group, member = -100_000_000_021, next(_users)
    since = (await private_bus.js.stream_info(STREAM)).state.last_seq
    async with Gateway(private_bus, telegram, Limits(allowed=None)):
        voice = await telegram.send_media(group, OGG, duration=3, from_user=member)  # privacy mode: unseen
        telegram.hold_sends(1.0)  # a Bot API under load: both requests are read before either status is written
        await telegram.send_text(group, "/transcribe", reply_to=voice, from_user=member)
        await telegram.send_text(group, "/transcribe", reply_to=voice, from_user=member)
        deadline = time.monotonic() + 60
        while not await audio_events(private_bus, since):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # the second request settles too
    statuses = [m for m in telegram.messages(group) if m.reply_to == voice]
    assert [m.text for m in statuses] == ["🎧 Listening…"], [m.text for m in statuses]
    (event,) = [e for _, e in await audio_events(private_bus, since)]
    assert event.origin.status_message_id == statuses[0].message_id


async def test_a_refusal_that_could_not_be_said_is_said_again_not_forgotten(
    private_bus: Bus, telegram: TelegramDouble
) -> None:
    """Issue 21 (5): a redelivered update skipped the limit checks, so a note refused by a limit, whose refusal
    Telegram failed to take (a 500), was taken in anyway on the next delivery. The decision is kept with the note."""
    user = next(_users)
    since = (await private_bus.js.stream_info(STREAM)).state.last_seq
    async with Gateway(private_bus, telegram, Limits(allowed=None, per_minute=1)):
        await telegram.send_media(user, OGG, duration=3)
        await telegram.wait_for(lambda: len(telegram.messages(user)) == 1, 30)
        telegram.refuse_writes(user, "try again", code=500, method="editMessageText")  # the update is tried again
        await telegram.send_media(user, OGG, duration=3)
        texts = await refusal(telegram, user, 2, "⏳")
        await asyncio.sleep(2)
    assert sum(t.startswith("⏳ That is a lot of notes in one minute") for t in texts) == 1, texts
    assert len([e for _, e in await audio_events(private_bus, since) if e.origin.chat_id == user]) == 1


async def test_a_note_whose_status_telegram_keeps_failing_is_kept_until_telegram_takes_it(
    private_bus: Bus, telegram: TelegramDouble
) -> None:
    """Issue 21 (1): Bot API sends failing for a while (500s) while polling still worked used up the update's
    attempts; the give-up could not tell the user either, swallowed that, and the bus acked: the note was gone,
    and Telegram had forgotten it. Nothing is acked as handled unless it was."""
    user = next(_users)
    since = (await private_bus.js.stream_info(STREAM)).state.last_seq
    async with Gateway(private_bus, telegram, Limits(allowed=None), give_up_after=2):
        telegram.refuse_writes(user, *["try again later"] * 4, code=500)  # the status, its retries, the apology
        await telegram.send_media(user, OGG, duration=3)
        deadline = time.monotonic() + 60
        while not [e for _, e in await audio_events(private_bus, since) if e.origin.chat_id == user]:
            assert time.monotonic() < deadline, "the note was dropped"
            await asyncio.sleep(0.2)
    assert [m.text for m in telegram.messages(user)] == ["🎧 Listening…"]
