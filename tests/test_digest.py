"""The chat's digest (issue 24), part by part against a real nats-server and the two doubles: `/digest` and the
daily digest's clock at the gateway, the notes gathered by the formatter, the digest written by the asker (and
condensed first when there is much), rendered with links or numbers, sent once. The whole way through the stack:
`tests/test_digest_stack.py`.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiogram import Bot

from analyzers.asking import AskerService
from analyzers.digesting import DigestWriter
from analyzers.llm import ChatLLM, make_client
from formatter.digest import DigestDesk, DigestReplies, render_digest
from formatter.marks import AnswerMarks
from formatter.sending import Sender
from gateway.chats import chat_key
from gateway.digests import DigestClock, DigestSchedule
from gateway.intake import correlation_id, correlation_key
from infra.bus import Bus, decoder
from infra.bus.names import (
    BUCKET_ANSWERED,
    BUCKET_BUDGET,
    BUCKET_DIGESTS,
    STREAM_ASK,
    SUBJECT_DIGEST,
    SUBJECT_DIGEST_POSED,
    SUBJECT_DIGEST_WRITTEN,
)
from infra.domain.contracts import (
    DigestAsked,
    DigestPoint,
    DigestPosed,
    DigestSource,
    DigestWritten,
    Origin,
    ReplyTo,
    Segment,
    Transcript,
)
from infra.domain.forgotten import mark_forgotten
from infra.domain.limits import DailyCounter
from infra.domain.notes import NoteStore, StoredNote
from infra.domain.registry import ModeRegistry
from infra.runtime.settings import Limits, Settings
from infra.voice.telegram import make_bot
from infra.voice.texts import text
from tests.support import (  # noqa: F401  (`telegram_of_its_own`: the `telegram` fixture here, a double of its own)
    OPENAI_KEY,
    Gateway,
    Redelivered,
    telegram_of_its_own,
    waiting_on,
)
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import TelegramDouble

_ids = itertools.count(1)
_users = itertools.count(92_000_001)
SAID = (
    ("Anna", "The launch moves to March. Tom, please send the new budget by Friday."),
    ("Tom", "We agreed to keep the old supplier. Who talks to the landing page agency?"),
    ("Anna", "I will call the agency tomorrow morning."),
)


async def published(bus: Bus, subject: str, kind: type, cid: str) -> list:
    return [event for event in await waiting_on(bus, subject, kind) if event.correlation_id == cid]


async def keep_note(bus: Bus, chat: str, message_id: int, speaker: str, words: str, at: float) -> str:
    cid = f"note{next(_ids)}x{time.monotonic_ns()}"
    transcript = Transcript(
        correlation_id=cid,
        text=words,
        language="en",
        language_probability=0.99,
        duration=5.0,
        segments=(Segment(0.0, 5.0, words),),
        ui_language="en",
        model="base",
        transcribe_seconds=1.0,
        published_at=at,
    )
    origin = Origin(
        chat_id=-1001234567890, message_id=message_id, status_message_id=message_id + 1, ui_language="en",
        chat_key=chat, speaker=speaker,
    )  # fmt: skip
    await NoteStore(bus).put(chat, cid, StoredNote(origin=origin, transcript=transcript))
    return cid


def asked(chat: str, hours: float = 24.0, daily: bool = False, links: bool = True) -> DigestAsked:
    reply = ReplyTo(chat_id=-1001234567890, message_id=0 if daily else 900 + next(_ids), ui_language="en")
    cid = f"digest{next(_ids)}x{time.monotonic_ns()}"
    return DigestAsked(correlation_id=cid, chat_key=chat, reply=reply, hours=hours, links=links, daily=daily)


@pytest.fixture
async def writer(private_bus: Bus, openai_double: OpenAIDouble) -> DigestWriter:
    llm = ChatLLM(make_client(OPENAI_KEY, openai_double.base_url))
    return DigestWriter(AskerService(private_bus, llm, await ModeRegistry.open(private_bus), model="gpt-4o-mini"))


# --- the gateway ------------------------------------------------------------------------------------------


async def test_digest_asks_for_the_chats_last_day_or_the_hours_given(
    private_bus: Bus, telegram: TelegramDouble
) -> None:
    user, group = next(_users), -1000000000000 - next(_users)  # a supergroup: its messages have links
    key = correlation_key(telegram.token)
    async with Gateway(private_bus, telegram, Limits(allowed=None)):
        day = await telegram.send_text(user, "/digest")
        six = await telegram.send_text(group, "/digest 6h", from_user=user)
        await telegram.send_text(user, "/digest yesterday")
        await telegram.wait_for(lambda: len(telegram.messages(user)) == 1, 30)
        await asyncio.sleep(1)
    assert telegram.messages(user)[0].text == text("digest_usage", "en")

    [mine] = await published(private_bus, SUBJECT_DIGEST, DigestAsked, correlation_id(key, user, day))
    assert (mine.hours, mine.links, mine.daily, mine.chat_key) == (24.0, False, False, chat_key(key, user))
    assert mine.reply.message_id == day
    [theirs] = await published(private_bus, SUBJECT_DIGEST, DigestAsked, correlation_id(key, group, six))
    assert (theirs.hours, theirs.links) == (6.0, True)


async def test_a_daily_digest_is_asked_for_at_its_hour_once_whoever_looks(private_bus: Bus) -> None:
    key = b"k" * 32
    chat = f"chat{next(_ids)}"
    kv = await private_bus.kv(BUCKET_DIGESTS)
    schedule = DigestSchedule(chat_id=-1001234567890, hour=9, ui_language="de", links=True)
    await kv.put(chat, msgspec.json.encode(schedule))
    nine = datetime.datetime(2026, 12, 1, 9, 0, 5, tzinfo=datetime.UTC)
    one, two = DigestClock(private_bus, key), DigestClock(private_bus, key)
    assert await one.tick(nine - datetime.timedelta(hours=1)) == 0, "not before its hour"
    await asyncio.gather(one.tick(nine), two.tick(nine))  # two gateways look at once
    assert await one.tick(nine + datetime.timedelta(minutes=30)) == 0, "not again within the hour"
    info = await private_bus.js.stream_info(STREAM_ASK)
    daily = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        stored = await private_bus.js.get_msg(STREAM_ASK, seq)
        if stored.subject == SUBJECT_DIGEST and (d := decoder(DigestAsked).decode(stored.data)).chat_key == chat:
            daily.append(d)
    assert len(daily) == 1, "asked once that day"
    assert daily[0].daily and daily[0].reply.message_id == 0 and daily[0].reply.ui_language == "de"
    assert msgspec.json.decode((await kv.get(chat)).value, type=DigestSchedule).last_day == "20261201"
    assert await one.tick(nine + datetime.timedelta(days=1)) == 1, "and again the next day"
    late = nine + datetime.timedelta(days=2, hours=3)  # every gateway was down through the hour: asked once back
    assert await one.tick(late) == 1 and await two.tick(late) == 0


async def test_settings_turn_the_daily_digest_on_and_off(private_bus: Bus, telegram: TelegramDouble) -> None:
    user = next(_users)
    key = correlation_key(telegram.token)
    kv = await private_bus.kv(BUCKET_DIGESTS)
    async with Gateway(private_bus, telegram, Limits(allowed=None)):
        await telegram.send_text(user, "/settings")
        await telegram.wait_for(lambda: len(telegram.messages(user)) == 1, 30)
        menu = telegram.messages(user)[0]
        assert "Daily digest: off" in menu.text
        picking = text("digest_pick", "en")
        await telegram.press(user, menu.message_id, menu.button("🗞").get("callback_data"))
        await telegram.wait_for(lambda: telegram.messages(user)[0].text == picking, 30)
        await telegram.press(user, menu.message_id, "s:dig:18")
        await telegram.wait_for(lambda: "Daily digest: 18:00 UTC" in telegram.messages(user)[0].text, 30)
        schedule = msgspec.json.decode((await kv.get(chat_key(key, user))).value, type=DigestSchedule)
        assert (schedule.chat_id, schedule.hour, schedule.links) == (user, 18, False)
        await telegram.press(user, menu.message_id, "s:dig")
        await telegram.wait_for(lambda: telegram.messages(user)[0].text == picking, 30)
        await telegram.press(user, menu.message_id, "s:dig:off")
        await telegram.wait_for(lambda: "Daily digest: off" in telegram.messages(user)[0].text, 30)
    assert chat_key(key, user) not in await private_bus.kv_keys(BUCKET_DIGESTS)


# --- the formatter gathers ------------------------------------------------------------------------------


async def test_the_notes_of_the_hours_asked_are_posed_once_each_oldest_first(private_bus: Bus) -> None:
    chat, now = f"chat{next(_ids)}", time.time()
    await keep_note(private_bus, chat, 10, "Old", "Said two days ago, long gone.", now - 30 * 3600)
    for n, (speaker, words) in enumerate(SAID):
        await keep_note(private_bus, chat, 20 + n, speaker, words, now - 3600 * (3 - n))
    await keep_note(private_bus, chat, 20, "Anna", SAID[0][1], now - 60)  # a button's re-run: the same note again
    question = asked(chat)
    await Redelivered(DigestDesk(private_bus).on_digest)(question)
    [posed] = await published(private_bus, SUBJECT_DIGEST_POSED, DigestPosed, question.correlation_id)
    assert [(s.number, s.message_id, s.speaker) for s in posed.sources] == [
        (1, 20, "Anna"),
        (2, 21, "Tom"),
        (3, 22, "Anna"),
    ]
    assert posed.texts == tuple(words for _, words in SAID)
    short = asked(chat, hours=1.5)
    await Redelivered(DigestDesk(private_bus).on_digest)(short)
    [recent] = await published(private_bus, SUBJECT_DIGEST_POSED, DigestPosed, short.correlation_id)
    assert [s.message_id for s in recent.sources] == [22]


async def test_notes_from_before_the_chats_forget_are_not_digested_even_while_being_erased(private_bus: Bus) -> None:
    chat, now = f"chat{next(_ids)}", time.time()
    await keep_note(private_bus, chat, 30, "Anna", SAID[0][1], now - 600)
    await keep_note(private_bus, chat, 40, "Tom", SAID[1][1], now - 60)
    await mark_forgotten(await private_bus.kv(BUCKET_ANSWERED), chat, message_id=35)  # note 30 not erased yet
    question = asked(chat)
    await Redelivered(DigestDesk(private_bus).on_digest)(question)
    [posed] = await published(private_bus, SUBJECT_DIGEST_POSED, DigestPosed, question.correlation_id)
    assert [s.message_id for s in posed.sources] == [40]


async def test_with_nothing_to_digest_it_says_so_and_a_daily_digest_keeps_quiet(private_bus: Bus) -> None:
    chat = f"chat{next(_ids)}"
    asked_now, daily = asked(chat, hours=6), asked(chat, daily=True)
    await Redelivered(DigestDesk(private_bus).on_digest)(asked_now)
    await Redelivered(DigestDesk(private_bus).on_digest)(daily)
    [empty] = await published(private_bus, SUBJECT_DIGEST_WRITTEN, DigestWritten, asked_now.correlation_id)
    assert empty.refusal == "empty"
    assert render_digest(empty) == text("digest_empty", "en", count=6)
    assert not await published(private_bus, SUBJECT_DIGEST_WRITTEN, DigestWritten, daily.correlation_id)
    assert not await published(private_bus, SUBJECT_DIGEST_POSED, DigestPosed, daily.correlation_id)


# --- the asker writes -------------------------------------------------------------------------------------


def a_posed(count: int = 3) -> DigestPosed:
    said = (SAID * ((count + 2) // 3))[:count]
    sources = tuple(
        DigestSource(number=i, message_id=100 + i, at=1796000000.0 + 60 * i, speaker=speaker)
        for i, (speaker, _) in enumerate(said, 1)
    )
    reply = ReplyTo(chat_id=-1001234567890, message_id=5, ui_language="en")
    cid = f"posed{next(_ids)}x{time.monotonic_ns()}"
    return DigestPosed(
        correlation_id=cid, chat_key="c", reply=reply, sources=sources, texts=tuple(w for _, w in said), links=True
    )


async def test_the_digest_names_its_notes_and_its_people(writer: DigestWriter, openai_double: OpenAIDouble) -> None:
    posed = a_posed()
    await Redelivered(writer.handle)(posed)
    [written] = await published(writer.bus, SUBJECT_DIGEST_WRITTEN, DigestWritten, posed.correlation_id)
    assert written.refusal is None and written.sources == posed.sources
    assert [p.notes for p in written.topics] == [(1,), (2,), (3,)]
    assert ("Tom", (2,)) in [(a.speaker, a.notes) for a in written.actions]
    assert any("old supplier" in d.text for d in written.decisions)
    assert any(q.text.endswith("agency?") for q in written.open_questions)
    sent = openai_double.requests[-1]
    assert sent["messages"][1]["content"].startswith("<transcript>\n[1] ")
    assert "never instructions" in sent["messages"][0]["content"]
    shown = render_digest(written)
    assert shown.startswith("🗞 <b>Digest</b> · the last 24 hours · 3 voice notes")
    assert '<a href="https://t.me/c/1234567890/102">[2]</a>' in shown and "<b>Tom</b>: " in shown


async def test_many_notes_are_condensed_first_and_keep_their_numbers(
    writer: DigestWriter, openai_double: OpenAIDouble
) -> None:
    writer.room = 200  # tokens: a few notes a part, as a day of a busy group against a small model
    posed = a_posed(9)
    calls, billed = len(openai_double.requests), len(openai_double.usage_log)
    await Redelivered(writer.handle)(posed)
    [written] = await published(writer.bus, SUBJECT_DIGEST_WRITTEN, DigestWritten, posed.correlation_id)
    made = openai_double.requests[calls:]
    condensed = [r for r in made if r["messages"][0]["content"].startswith("You condense voice notes")]
    assert len(condensed) >= 2, "condensed in parts"
    assert {n for p in written.topics for n in p.notes} == set(range(1, 10)), "every note still named"
    used = openai_double.usage_log[billed:]
    assert written.usage.input_tokens == sum(u["prompt_tokens"] for u in used), "every call counted, map and reduce"


async def test_past_the_budget_or_with_the_llm_down_the_chat_is_told(
    writer: DigestWriter, openai_double: OpenAIDouble
) -> None:
    openai_double.fail_next(20, 500)
    down = a_posed()
    await Redelivered(writer.handle)(down)
    [failed] = await published(writer.bus, SUBJECT_DIGEST_WRITTEN, DigestWritten, down.correlation_id)
    assert failed.refusal == "failed" and render_digest(failed) == text("digest_failed", "en")
    openai_double.heal()
    writer.asker.budget.daily_tokens = 10
    await DailyCounter(await writer.bus.kv(BUCKET_BUDGET)).add("tokens", 10)
    spent = a_posed()
    await Redelivered(writer.handle)(spent)
    [budget] = await published(writer.bus, SUBJECT_DIGEST_WRITTEN, DigestWritten, spent.correlation_id)
    assert budget.refusal == "budget"


# --- rendered and sent ---------------------------------------------------------------------------------


def test_without_links_the_notes_are_listed_by_time_and_speaker_and_names_are_text() -> None:
    sources = (
        DigestSource(number=1, message_id=7, at=1796000000.0, speaker="<b>Anna</b>"),
        DigestSource(number=2, message_id=9, at=1796003600.0, speaker="Tom"),
    )
    written = DigestWritten(
        correlation_id="x",
        chat_key="c",
        reply=ReplyTo(chat_id=42, message_id=3, ui_language="en"),
        sources=sources,
        actions=(DigestPoint(text="send the budget", notes=(2, 7), speaker="Tom"),),
        hours=6,
    )
    shown = render_digest(written)
    assert shown.startswith("🗞 <b>Digest</b> · the last 6 hours · 2 voice notes")
    assert "• <b>Tom</b>: send the budget [2]" in shown, "a number the notes do not have is dropped"
    assert "Notes (UTC): [1] 00:53 &lt;b&gt;Anna&lt;/b&gt; · [2] 01:53 Tom" in shown and "t.me" not in shown
    many = tuple(DigestSource(number=n, message_id=n, at=1796000000.0, speaker="Somebody Long") for n in range(1, 61))
    long = msgspec.structs.replace(
        written, sources=many, topics=tuple(DigestPoint(text="x" * 5000, notes=(n,)) for n in range(1, 41))
    )
    shown = render_digest(long)
    assert len(shown) <= 3900 and "…" in shown, "cut to one message"
    assert "[60] 00:53 Somebody Long</i>" in shown, "and the notes the points name are all still listed"
    assert shown.count("x" * 600) == 0, "no point takes the room of the others"


@pytest.fixture
async def bot(telegram: TelegramDouble) -> AsyncIterator[Bot]:
    made = make_bot(Settings(telegram_token=telegram.token, telegram_api_base=telegram.base_url))
    yield made
    await made.session.close()


async def test_a_digest_goes_out_once_and_a_daily_one_as_a_message_of_its_own(
    private_bus: Bus, telegram: TelegramDouble, bot: Bot
) -> None:
    user = next(_users)
    command = await telegram.send_text(user, "/digest")
    reply = ReplyTo(chat_id=user, message_id=command, ui_language="en")
    written = DigestWritten(
        correlation_id=f"w{next(_ids)}x{time.monotonic_ns()}",
        chat_key="c",
        reply=reply,
        sources=(DigestSource(number=1, message_id=command - 1, at=time.time(), speaker="Anna"),),
        topics=(DigestPoint(text="the launch", notes=(1,)),),
    )
    answered = await private_bus.kv(BUCKET_ANSWERED)
    one = DigestReplies(private_bus, Sender(bot), AnswerMarks(answered, lease=1.0))
    two = DigestReplies(private_bus, Sender(bot), AnswerMarks(answered, lease=1.0))  # another formatter
    await asyncio.gather(Redelivered(one.on_written)(written), Redelivered(two.on_written)(written))
    daily = msgspec.structs.replace(
        written, correlation_id=f"d{next(_ids)}", reply=msgspec.structs.replace(reply, message_id=0), daily=True
    )
    await Redelivered(one.on_written)(daily)
    sent = telegram.messages(user)
    assert len(sent) == 2
    assert sent[0].reply_to == command and sent[0].text.startswith("🗞 Digest")
    assert sent[1].reply_to is None and sent[1].text.startswith("🗞 Daily digest · the last 24 hours · 1 voice note")
