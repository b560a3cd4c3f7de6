"""While a note waits for a transcriber, its status says where it stands (issue 11): a real nats-server, the
transcribers' real durable consumer (driven by hand here), the formatter and the Telegram double."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot

from formatter.join import JoinStore
from formatter.marks import AnswerMarks
from formatter.service import FormatterService
from infra.bus import Bus, ConsumerSpec
from infra.bus import Delivery as BusDelivery
from infra.bus.names import BUCKET_ANSWERED, BUCKET_JOINS, CONSUMER_TRANSCRIBER, STREAM, SUBJECT_AUDIO
from infra.domain.contracts import AudioReceived, AudioRef, Origin
from infra.runtime.settings import Settings
from infra.voice.telegram import make_bot
from tests.support import TOKEN, a_transcript, eventually, new_chat
from voice_insight.doubles.telegram_api import TelegramDouble


@pytest.fixture
async def bot(telegram: TelegramDouble) -> AsyncIterator[Bot]:
    bot = make_bot(Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url))
    yield bot
    await bot.session.close()


async def watching_formatter(bus: Bus, bot: Bot, **timing: float) -> FormatterService:
    """A formatter watching the transcribers' real durable consumer, which the test drives by hand."""
    await bus.ensure_consumer(ConsumerSpec(CONSUMER_TRANSCRIBER, SUBJECT_AUDIO))
    joins, marks = JoinStore(await bus.kv(BUCKET_JOINS)), AnswerMarks(await bus.kv(BUCKET_ANSWERED))
    return FormatterService(bus, bot, joins, marks, join_timeout=30, max_audio_seconds=600, **timing)


async def waiting_note(bus: Bus, bot: Bot, name: str) -> tuple[AudioReceived, int]:
    """A note handed over to the transcribers: its status message sent, its event on `voice.audio`."""
    chat = new_chat()  # a chat of its own in the session's double
    status = await bot.send_message(chat, "🎧 Listening…")
    origin = Origin(chat_id=chat, message_id=1, status_message_id=status.message_id, ui_language="en")
    event = AudioReceived(
        correlation_id=name, origin=origin, audio=AudioRef(object_name=name, kind="voice", size=1), modes=("DEFAULT",)
    )
    await bus.publish(SUBJECT_AUDIO, event, msg_id=name)
    return event, (await bus.js.stream_info(STREAM)).state.last_seq


async def test_a_waiting_note_shows_how_many_notes_are_ahead_and_about_how_long(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    formatter = await watching_formatter(private_bus, bot, progress_interval=0.1, queue_every=0.3)
    formatter.status.queue.observe(4.0)  # a transcript took four seconds a moment ago
    await waiting_note(private_bus, bot, "queue-a")
    await waiting_note(private_bus, bot, "queue-b")
    mine, seq = await waiting_note(private_bus, bot, "queue-c")
    await formatter.on_event(mine, BusDelivery(subject=SUBJECT_AUDIO, attempt=1, seq=seq))
    status = telegram.messages(mine.origin.chat_id)[0]
    await eventually(lambda: status.text == "⏳ Notes ahead of yours in the queue: 2, about 8 s.", 20)

    transcriber = await private_bus.js.pull_subscribe_bind(durable=CONSUMER_TRANSCRIBER, stream=STREAM)
    (first,) = await transcriber.fetch(1, timeout=5)
    await eventually(lambda: len(status.history) == 2 and status.history[-1].endswith("2, about 8 s."), 5)
    await first.ack_sync()  # one transcribed: one ahead now
    await eventually(lambda: status.text == "⏳ Notes ahead of yours in the queue: 1, about 4 s.", 20)

    taken = await transcriber.fetch(2, timeout=5)  # a transcriber takes the next two: this one among them
    assert [m.metadata.sequence.stream for m in taken][-1] == seq
    transcript = a_transcript("queue-c", "We ship on Monday.", transcribe_seconds=3.0)
    await formatter.on_event(transcript, BusDelivery(subject="voice.transcript", attempt=1, seq=seq + 1))
    await eventually(lambda: "We ship on Monday." in status.text and "Still working on: DEFAULT" in status.text, 20)
    assert [t for t in status.history if "queue" in t] == [
        "⏳ Notes ahead of yours in the queue: 2, about 8 s.",
        "⏳ Notes ahead of yours in the queue: 1, about 4 s.",
    ], "each place said once, and nothing about the queue once the transcript is there"
    for message in taken:
        await message.ack_sync()


async def test_the_places_of_many_waiting_notes_cost_one_look_at_the_queue(
    private_bus: Bus, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21 (7): every waiting note scanned the queue ahead of it on its own, a message at a time, every
    three seconds: under a backlog of N, N notes cost about N²/2 reads per round. One look serves them all."""
    formatter = await watching_formatter(private_bus, bot, queue_every=60.0)  # its own rounds stay out of the count
    info = await private_bus.js.consumer_info(STREAM, CONSUMER_TRANSCRIBER)
    already = info.num_pending or 0
    notes = [await waiting_note(private_bus, bot, f"backlog-{n}") for n in range(40)]
    watched = notes[-10:]
    for event, seq in watched:
        await formatter.on_event(event, BusDelivery(subject=SUBJECT_AUDIO, attempt=1, seq=seq))
    reads = 0
    get_msg = private_bus.js.get_msg

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal reads
        reads += 1
        return await get_msg(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(private_bus.js, "get_msg", counted)
    queue = formatter.status.queue
    said = [await queue.place("en", SUBJECT_AUDIO, seq) for _, seq in watched]  # one round of the ten watches
    assert said == [f"⏳ Notes ahead of yours in the queue: {min(already + 30 + n, 100)}." for n in range(10)], said
    assert reads <= 45, f"{reads} reads for ten places behind a queue of {already + 40}"
