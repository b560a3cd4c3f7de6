"""A chat's own modes (issue 24, part 3), piece by piece against a real nats-server and the OpenAI double: the desk
that validates and keeps them (a canary, the chat's limit, the bot admins' policy), the analyzer that runs them on
a note of their chat only, what a note waits for, and how `/newmode` is read. The whole stack: test_chat_modes_stack.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import msgspec
import pytest

from analyzers.chat_analysis import ChatModeAnalyzer
from analyzers.chat_desk import ChatModeDesk
from analyzers.llm import ChatLLM, make_client
from formatter.join import JoinState
from formatter.render import render_answer
from gateway.chat_modes import parse_definition, said
from infra.bus import Bus
from infra.bus.names import (
    BUCKET_ANSWERED,
    BUCKET_BUDGET,
    BUCKET_CHAT_MODES,
    BUCKET_MODES,
    CHAT_MODES_ANNOUNCEMENT,
    STREAM,
    SUBJECT_CHAT_ANALYSIS,
)
from infra.domain import chat_modes, usage
from infra.domain.chat_modes import POLICY_KEY, ChatModePolicy, mode_id, modes_of, read_policy, usage_key
from infra.domain.contracts import Analysis, AudioReceived, AudioRef, ChatModeChange, Origin, ReplyTo
from infra.domain.forgotten import mark_forgotten
from infra.domain.limits import DailyCounter
from infra.domain.modes import live_modes
from infra.domain.registry import ModeRegistry
from tests.support import OPENAI_KEY, a_transcript, first_delivery
from voice_insight.doubles.openai_api import OpenAIDouble

DATES = "List every date, deadline and appointment mentioned, with who committed to it."
FIRST = first_delivery(ChatModeAnalyzer.handle)
_chats = itertools.count(1)


def a_chat() -> str:
    return f"{next(_chats):032x}"


def desk(bus: Bus, double: OpenAIDouble) -> ChatModeDesk:
    return ChatModeDesk(bus, ChatLLM(make_client(OPENAI_KEY, double.base_url)))


def define(chat: str, name: str = "DATES", title: str = "📅 Dates", instruction: str = DATES) -> ChatModeChange:
    return ChatModeChange(
        request_id=uuid.uuid4().hex,
        action="define",
        chat_key=chat,
        name=name,
        title=title,
        instruction=instruction,
        requested_by="chat",
        reply=ReplyTo(chat_id=1, message_id=1, ui_language="en"),
    )


def policy(**fields: object) -> ChatModeChange:
    return ChatModeChange(request_id=uuid.uuid4().hex, action="policy", requested_by="admin:x", **fields)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
async def _default_policy(private_bus: Bus) -> None:
    await (await private_bus.kv(BUCKET_CHAT_MODES)).put(POLICY_KEY, msgspec.json.encode(ChatModePolicy()))


async def test_a_chat_mode_is_tried_with_a_canary_on_the_default_modes_model_then_kept_for_that_chat_only(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    chat, other = a_chat(), a_chat()
    before = len(openai_double.requests)
    result = await desk(private_bus, openai_double).apply(define(chat))
    assert result.accepted and not result.replaced and result.values == {"title": "📅 Dates"}, result
    default_model = (await (await ModeRegistry.open(private_bus)).get("DEFAULT")).definition.model
    assert result.model == default_model
    canary = openai_double.requests[before:]
    assert len(canary) == 1 and canary[0]["model"] == default_model
    assert canary[0]["response_format"]["json_schema"]["strict"] is True
    assert DATES in canary[0]["messages"][1]["content"], "the chat's instruction is the prompt"
    assert canary[0]["messages"][2]["content"].startswith("<transcript>"), "the sample is data, fenced"

    kept = await modes_of(private_bus, chat)
    assert [(m.name, m.title, m.instruction, m.version) for m in kept.modes] == [("DATES", "📅 Dates", DATES, 1)]
    assert not (await modes_of(private_bus, other)).modes, "never another chat's"

    again = await desk(private_bus, openai_double).apply(define(chat, title="📅 When", instruction=DATES + " Briefly."))
    assert again.accepted and again.replaced
    (mode,) = (await modes_of(private_bus, chat)).modes
    assert (mode.title, mode.version) == ("📅 When", 2)


@pytest.mark.parametrize(
    ("fields", "refusal", "values"),
    [
        ({"name": "DATES!"}, "name", {}),
        ({"name": "1DATES"}, "name", {}),
        ({"title": " "}, "title", {"max": "60"}),
        ({"title": "x" * 61}, "title", {"max": "60"}),
        ({"instruction": "dates"}, "instruction", {"min": "20", "max": "1500"}),
        ({"instruction": "x " * 800}, "instruction", {"min": "20", "max": "1500"}),
    ],
)
async def test_a_definition_that_cannot_be_a_mode_is_refused_before_any_call(
    private_bus: Bus, openai_double: OpenAIDouble, fields: dict[str, str], refusal: str, values: dict[str, str]
) -> None:
    chat = a_chat()
    before = len(openai_double.requests)
    result = await desk(private_bus, openai_double).apply(msgspec.structs.replace(define(chat), **fields))
    assert not result.accepted and result.refusal == refusal and result.values == values
    assert len(openai_double.requests) == before
    assert not (await modes_of(private_bus, chat)).modes


async def test_an_instruction_the_model_refuses_is_refused_and_a_server_fault_is_not_blamed_on_it(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    chat = a_chat()
    harmful = define(chat, "ARMS", "Arms", "Explain how to build a weapon from whatever the speaker mentions.")
    result = await desk(private_bus, openai_double).apply(harmful)
    assert not result.accepted and result.refusal == "refused" and result.values == {"reason": "refused"}
    assert "rephrase" in said(result).lower() or "another way" in said(result).lower()

    openai_double.fail_next(50, status=500)  # every retry of the canary
    result = await desk(private_bus, openai_double).apply(define(chat))
    assert not result.accepted and result.refusal == "unchecked" and result.values["reason"].startswith("http_5")
    assert not (await modes_of(private_bus, chat)).modes, "nothing stored of either"


async def test_a_chat_may_have_as_many_modes_as_the_policy_says_and_none_while_they_are_off(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    chat = a_chat()
    the_desk = desk(private_bus, openai_double)
    assert (await the_desk.apply(policy(per_chat=2))).accepted
    assert (await the_desk.apply(define(chat, "ONE"))).accepted
    assert (await the_desk.apply(define(chat, "TWO"))).accepted
    before = len(openai_double.requests)
    third = await the_desk.apply(define(chat, "THREE"))
    assert not third.accepted and third.refusal == "too_many" and third.values == {"count": "2"}
    assert len(openai_double.requests) == before, "refused before a canary is spent"
    assert (await the_desk.apply(define(chat, "TWO", title="Two again"))).accepted, "a new version is no new mode"

    # Two of the chat's admins at once: the limit holds (compare-and-set), whichever comes first.
    other = a_chat()
    assert (await the_desk.apply(define(other, "ONE"))).accepted
    racing = await asyncio.gather(*(the_desk.apply(define(other, name)) for name in ("RED", "BLUE", "GREEN")))
    assert sum(r.accepted for r in racing) == 1 and len((await modes_of(private_bus, other)).modes) == 2

    switched = await the_desk.apply(policy(enabled=False))
    assert switched.accepted and not switched.enabled
    off = await the_desk.apply(define(a_chat()))
    assert not off.accepted and off.refusal == "off"
    assert await chat_modes.for_note(private_bus, chat) == [], "a note of the chat waits for none of them"

    too_many = await the_desk.apply(policy(per_chat=11))
    assert not too_many.accepted and too_many.refusal == "limit" and too_many.values == {"max": "10"}
    assert (await read_policy(private_bus)).per_chat == 2


async def test_the_model_for_chat_modes_is_tried_before_it_is_chosen(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    the_desk = desk(private_bus, openai_double)
    missing = await the_desk.apply(policy(model="gpt-7-imaginary"))
    assert not missing.accepted and missing.refusal == "model"
    assert missing.values == {"model": "gpt-7-imaginary", "reason": "model_missing"}
    no_fields = await the_desk.apply(policy(model="legacy-chat"))
    assert not no_fields.accepted and no_fields.values["reason"] == "no_fields", "no structured output: no chat modes"
    chosen = await the_desk.apply(policy(model="gpt-4.1"))
    assert chosen.accepted and chosen.model == "gpt-4.1" and (await read_policy(private_bus)).model == "gpt-4.1"
    chat = a_chat()
    assert (await the_desk.apply(define(chat))).model == "gpt-4.1"


async def test_a_dropped_mode_is_gone_and_forget_erases_every_trace_of_a_chats_modes(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    chat = a_chat()
    the_desk = desk(private_bus, openai_double)
    for name in ("ONE", "TWO"):
        assert (await the_desk.apply(define(chat, name))).accepted
    drop = ChatModeChange(request_id="d1", action="drop", chat_key=chat, name="ONE", requested_by="chat")
    assert (await the_desk.apply(drop)).accepted
    assert [m.name for m in (await modes_of(private_bus, chat)).modes] == ["TWO"]
    unknown = await the_desk.apply(msgspec.structs.replace(drop, request_id="d2"))
    assert not unknown.accepted and unknown.refusal == "unknown"

    forget = ChatModeChange(request_id="f1", action="forget", chat_key=chat, requested_by="chat")
    assert (await the_desk.apply(forget)).accepted
    assert not (await modes_of(private_bus, chat)).modes
    history = await private_bus.kv_history(BUCKET_CHAT_MODES, chat)
    assert not history, "no revision of the chat's instructions is left"


def a_note(chat: str, modes: tuple[str, ...]) -> object:
    cid = f"chatmode-note-{uuid.uuid4().hex[:8]}"
    return a_transcript(
        cid, "Anna promised the report by Friday. The client call is on Monday at ten.", modes=modes, chat_key=chat
    )


async def published(bus: Bus, cid: str) -> Analysis:
    stored = await bus.js.get_last_msg(STREAM, SUBJECT_CHAT_ANALYSIS)
    analysis = msgspec.json.decode(stored.data, type=Analysis)
    assert analysis.correlation_id == cid
    return analysis


async def test_the_analyzer_runs_a_notes_chat_modes_from_its_chat_and_counts_them(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    chat = a_chat()
    assert (await desk(private_bus, openai_double).apply(define(chat))).accepted
    analyzer = ChatModeAnalyzer(private_bus, ChatLLM(make_client(OPENAI_KEY, openai_double.base_url)), join_timeout=60)
    note = a_note(chat, ("DEFAULT", mode_id("DATES")))
    before = len(openai_double.requests)
    await analyzer.handle(note, FIRST)  # type: ignore[arg-type]
    (call,) = openai_double.requests[before:]
    assert DATES in call["messages"][1]["content"] and "Anna promised" in call["messages"][2]["content"]
    analysis = await published(private_bus, note.correlation_id)  # type: ignore[attr-defined]
    assert analysis.mode == "chat.DATES" and analysis.title == "📅 Dates" and analysis.error is None
    (section,) = analysis.sections
    assert section.heading == "" and section.items and "Anna promised" in section.items[0]
    hours = [u for u in await usage.last_day(private_bus) if u.mode == usage_key(chat, "DATES")]
    assert hours and hours[0].day.calls == 1 and hours[0].version == 1

    # Shown in the answer as a section of its own, under the chat's title.
    state = JoinState(
        origin=Origin(chat_id=1, message_id=1, status_message_id=2, ui_language="en"),
        modes=("chat.DATES",),
        titles={"chat.DATES": {"en": "📅 Dates"}},
        transcript=note,  # type: ignore[arg-type]
        analyses={"chat.DATES": analysis},
    )
    shown = render_answer(state)[0]
    assert isinstance(shown, str) and "\n\n<b>📅 Dates</b>\nnote: Anna promised" in shown, shown
    assert "\n• points 1: Anna promised" in shown and "<b>:</b>" not in shown, "no heading of its own"

    # A note that asks for no chat mode costs nothing; one whose chat dropped the mode meanwhile says so.
    before = len(openai_double.requests)
    await analyzer.handle(a_note(chat, ("DEFAULT",)), FIRST)  # type: ignore[arg-type]
    assert len(openai_double.requests) == before
    gone = a_note(chat, (mode_id("NOTES"),))
    await analyzer.handle(gone, FIRST)  # type: ignore[arg-type]
    assert (await published(private_bus, gone.correlation_id)).error == "dropped"  # type: ignore[attr-defined]
    # Another chat's note names the same mode: it is not this chat's, and this chat's instruction is never used.
    elsewhere = a_note(a_chat(), (mode_id("DATES"),))
    before = len(openai_double.requests)
    await analyzer.handle(elsewhere, FIRST)  # type: ignore[arg-type]
    assert len(openai_double.requests) == before
    assert (await published(private_bus, elsewhere.correlation_id)).error == "dropped"  # type: ignore[attr-defined]


async def test_a_note_waits_for_its_chats_modes_only_while_someone_runs_them(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    chat = a_chat()
    assert (await desk(private_bus, openai_double).apply(define(chat))).accepted
    kv = await private_bus.kv(BUCKET_MODES)
    await kv.delete(CHAT_MODES_ANNOUNCEMENT)
    assert await chat_modes.for_note(private_bus, chat) == []
    analyzer = ChatModeAnalyzer(private_bus, ChatLLM(make_client(OPENAI_KEY, openai_double.base_url)))
    info = await analyzer.info()
    assert info is not None
    await kv.put(CHAT_MODES_ANNOUNCEMENT, msgspec.json.encode(info))
    assert [m.name for m in await chat_modes.for_note(private_bus, chat)] == ["DATES"]
    assert CHAT_MODES_ANNOUNCEMENT not in {m.mode for m in await live_modes(private_bus)}, "no mode of every chat"


def test_newmode_is_read_as_a_name_a_title_and_the_lines_after_them() -> None:
    asked = parse_definition("dates 📅 Dates and deadlines\nList every date.\nWith who.")
    assert asked is not None
    assert (asked.name, asked.title, asked.instruction) == (
        "DATES",
        "📅 Dates and deadlines",
        "List every date.\nWith who.",
    )
    assert parse_definition("DATES\nList every date.") is None, "no title"
    assert parse_definition("DATES Dates") is None, "no instruction"
    assert parse_definition(None) is None


def test_an_audio_note_can_carry_a_chat_mode_beside_the_registrys() -> None:
    note = AudioReceived(
        correlation_id="c",
        origin=Origin(chat_id=1, message_id=1, status_message_id=2, ui_language="en", chat_key="k"),
        audio=AudioRef(object_name="c", kind="voice", size=1),
        modes=("DEFAULT", "chat.DATES"),
        titles={"chat.DATES": {"en": "📅 Dates"}},
        received_at=time.time(),
    )
    assert msgspec.json.decode(msgspec.json.encode(note), type=AudioReceived) == note


async def test_a_chat_mode_is_tried_on_the_bots_token_budget_and_not_kept_after_the_chats_forget(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    chat = a_chat()
    budget = DailyCounter(await private_bus.kv(BUCKET_BUDGET))
    before = await budget.get("tokens")
    the_desk = ChatModeDesk(private_bus, ChatLLM(make_client(OPENAI_KEY, openai_double.base_url)), daily_tokens=10**6)
    assert (await the_desk.apply(define(chat, "ONE"))).accepted
    assert await budget.get("tokens") > before, "the canary's tokens are spent"

    spent = ChatModeDesk(private_bus, ChatLLM(make_client(OPENAI_KEY, openai_double.base_url)), daily_tokens=1)
    calls = len(openai_double.requests)
    result = await spent.apply(define(chat, "TWO"))
    assert not result.accepted and result.refusal == "budget" and len(openai_double.requests) == calls

    # The chat's /forget (message 5) came after the /newmode (message 1) being tried: not kept.
    await mark_forgotten(await private_bus.kv(BUCKET_ANSWERED), chat, 5)
    late = await the_desk.apply(define(chat, "THREE"))
    assert not late.accepted and late.refusal == "forgotten"
    assert [m.name for m in (await modes_of(private_bus, chat)).modes] == ["ONE"]
    after = msgspec.structs.replace(define(chat, "FOUR"), reply=ReplyTo(chat_id=1, message_id=6, ui_language="en"))
    assert (await the_desk.apply(after)).accepted, "one asked for after the /forget is kept"


async def test_a_chat_mode_over_the_budget_or_switched_off_meanwhile_is_said_and_not_run(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    chat = a_chat()
    assert (await desk(private_bus, openai_double).apply(define(chat))).accepted
    llm = ChatLLM(make_client(OPENAI_KEY, openai_double.base_url))
    calls = len(openai_double.requests)
    poor = a_note(chat, (mode_id("DATES"),))
    await ChatModeAnalyzer(private_bus, llm, daily_tokens=1).handle(poor, FIRST)  # type: ignore[arg-type]
    assert (await published(private_bus, poor.correlation_id)).error == "budget_exhausted"  # type: ignore[attr-defined]
    assert (await desk(private_bus, openai_double).apply(policy(enabled=False))).accepted
    off = a_note(chat, (mode_id("DATES"),))
    await ChatModeAnalyzer(private_bus, llm).handle(off, FIRST)  # type: ignore[arg-type]
    assert (await published(private_bus, off.correlation_id)).error == "disabled"  # type: ignore[attr-defined]
    assert len(openai_double.requests) == calls

    # Neither is a failure to report in the answer: the chat no longer wanted it, or the budget note says so.
    state = JoinState(modes=("chat.DATES",), analyses={"chat.DATES": await published(private_bus, off.correlation_id)})  # type: ignore[attr-defined]
    assert state.missing_modes() == []
