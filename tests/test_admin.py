"""Admins change modes from the chat: through the real gateway, the bus, an analyzer-side desk with the real
openai client, and the Telegram and OpenAI doubles. Everyone else is refused, politely, and changes nothing."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import msgspec
import pytest

from analyzers.desk import ModeDesk, Registrar
from analyzers.llm import ChatLLM, make_client
from analyzers.service import AnalyzerService
from gateway.admin import parse_change
from infra.bus import Bus, deliver
from infra.bus.names import BUCKET_MODES, STREAM_ADMIN, SUBJECT_ALERT
from infra.domain.contracts import AdminAlert
from infra.domain.registry import ModeRegistry
from infra.runtime.settings import Limits
from tests.support import DECIDED, OPENAI_KEY, Gateway, a_transcript, an_analyzer, first_delivery
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import TelegramDouble

TOKEN = "515151515:EEHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw6"
_users = itertools.count(71_000_001)
FIRST = first_delivery(AnalyzerService.handle)

DEFINITION = "/add_mode" + DECIDED


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramDouble]:
    double = TelegramDouble(TOKEN)
    await double.start()
    yield double
    await double.stop()


@pytest.fixture
async def registrar(private_bus: Bus, openai_double: OpenAIDouble) -> AsyncIterator[None]:
    """What the registrar process runs: the desk, on the shared `mode-registrar` durable."""
    llm = ChatLLM(make_client(OPENAI_KEY, openai_double.base_url))
    await private_bus.start(Registrar(private_bus, ModeDesk(await ModeRegistry.open(private_bus), llm)))
    yield


async def reply_to(telegram: TelegramDouble, chat: int, command: str, marker: str, count: int = 1) -> list[str]:
    before = len(telegram.messages(chat))
    await telegram.send_text(chat, command)
    await telegram.wait_for(lambda: sum(marker in m.text for m in telegram.messages(chat)[before:]) >= count, 60)
    return [m.text for m in telegram.messages(chat)[before:]]


async def test_an_admin_sets_a_model_that_exists_and_is_told_why_one_that_does_not_is_refused(
    private_bus: Bus, telegram: TelegramDouble, registrar: None
) -> None:
    admin = next(_users)
    registry = await ModeRegistry.open(private_bus)
    async with Gateway(private_bus, telegram, Limits(allowed=frozenset()), admins=(admin,)):
        texts = await reply_to(telegram, admin, "/set_model TONE gpt-7-imaginary", "❌")
        assert texts[0] == "⏳ Checking TONE: the model, a canary call…"
        assert "does not exist on the configured server" in texts[-1] and "nothing changed" in texts[-1]
        assert (await registry.get("TONE")).definition.model == "gpt-4o", "the old model keeps answering"

        texts = await reply_to(telegram, admin, "/set_model TONE gpt-4o-mini", "✅")
        assert "✅ TONE: set_model done. Version 2, model gpt-4o-mini." in texts
        assert (await registry.get("TONE")).definition.model == "gpt-4o-mini"

        texts = await reply_to(telegram, admin, DEFINITION, "✅")
        assert "✅ DECIDED: add_mode done. Version 1" in texts[-1]
        texts = await reply_to(telegram, admin, "/mode DECIDED", "DECIDED")
        assert "admin #1: added" in texts[-1] and "decisions (list)" in texts[-1]
        assert str(admin) not in texts[-1], "admins are shown by their place, never by id"


async def test_stats_agree_with_what_the_llm_saw(
    private_bus: Bus, telegram: TelegramDouble, openai_double: OpenAIDouble
) -> None:
    admin = next(_users)
    name = f"COUNTED_{admin % 1000}"
    registry = await ModeRegistry.open(private_bus)
    tone = (await registry.get("TONE")).definition
    await registry.write(msgspec.structs.replace(tone, name=name, model="gpt-4o-mini"), None)
    analyzer = await an_analyzer(private_bus, openai_double.base_url, name)
    seen = len(openai_double.usage_log)
    for n in range(2):
        await deliver(analyzer.handle, a_transcript(f"stats-{admin}-{n}", f"Note number {n} about the launch."), FIRST)
    openai_double.break_model("gpt-4o-mini", status=404)
    try:
        await deliver(analyzer.handle, a_transcript(f"stats-{admin}-x", "One more note."), FIRST)
    finally:
        openai_double.heal()
    used = openai_double.usage_log[seen:]
    tokens_in, tokens_out = sum(u["prompt_tokens"] for u in used), sum(u["completion_tokens"] for u in used)

    async with Gateway(private_bus, telegram, Limits(allowed=frozenset()), admins=(admin,)):
        texts = await reply_to(telegram, admin, "/stats", "Modes, last 24 hours")
    line = next(line for line in texts[-1].splitlines() if line.startswith(name))
    assert line.startswith(f"{name} v1: 3 calls · 1 errors (http_404 ×1) · tokens {tokens_in} in / {tokens_out} out")
    assert "p50 ≤" in line and "cache hits 0" in line


async def test_an_alert_reaches_every_admin(private_bus: Bus, telegram: TelegramDouble) -> None:
    first, second = next(_users), next(_users)
    async with Gateway(private_bus, telegram, Limits(allowed=frozenset()), admins=(first, second)):
        await telegram.send_text(first, "/start")  # admins talk to the bot, so it may write to them
        await telegram.send_text(second, "/start")
        alert = AdminAlert(kind="mode_rolled_back", mode="TONE", detail="Mode TONE: v2 was rolled back to v1.")
        await private_bus.publish(SUBJECT_ALERT, alert, msg_id=f"alert-{first}", stream=STREAM_ADMIN)
        for admin in (first, second):
            await telegram.wait_for(lambda a=admin: any("🚨 Mode TONE" in m.text for m in telegram.messages(a)), 30)


async def test_anyone_else_is_refused_and_nothing_is_asked(
    private_bus: Bus, telegram: TelegramDouble, registrar: None
) -> None:
    admin, user = next(_users), next(_users)
    before = (await private_bus.js.stream_info(STREAM_ADMIN)).state.messages
    async with Gateway(private_bus, telegram, Limits(allowed=frozenset({user})), admins=(admin,)):
        for command in ("/set_model TONE gpt-4o-mini", "/disable_mode TONE", "/rollback DEFAULT"):
            texts = await reply_to(telegram, user, command, "🔐")
            assert texts == ["🔐 Only the bot's admins can change analysis modes."]
        # Commands that only read are refused in their own words: nobody asked to change anything.
        mode, stats = await reply_to(telegram, user, "/mode TONE", "🔐"), await reply_to(telegram, user, "/stats", "🔐")
        assert mode == ["🔐 Only the bot's admins can see how a mode is set up."]
        assert stats == ["🔐 Only the bot's admins can see its usage."]
    assert (await private_bus.js.stream_info(STREAM_ADMIN)).state.messages == before
    assert (await (await ModeRegistry.open(private_bus)).get("TONE")).definition.enabled


@pytest.mark.parametrize(
    ("command", "args", "asked"),
    [
        ("set_model", "tone gpt-4o-mini", ("set_model", "TONE", {"model": "gpt-4o-mini"})),
        ("set_model", "TONE", None),
        ("set_model", "TONE gpt 4o", None),
        (
            "edit_prompt",
            "DEFAULT\nSummarise it.\n\nText: {text}",
            ("edit_prompt", "DEFAULT", {"prompt": "Summarise it.\n\nText: {text}"}),
        ),
        ("edit_prompt", "DEFAULT Summarise: {text}", ("edit_prompt", "DEFAULT", {"prompt": "Summarise: {text}"})),
        ("edit_prompt", "DEFAULT", None),
        ("rollback", "TONE", ("rollback", "TONE", {})),
        ("rollback", "TONE 3", ("rollback", "TONE", {"version": 3})),
        ("rollback", "TONE latest", None),
        ("disable_mode", "TONE", ("disable", "TONE", {})),
        ("enable_mode", "", None),
        (
            "add_mode",
            DECIDED,
            ("add", "DECIDED", {"definition": DECIDED.strip()}),
        ),
    ],
)
def test_admin_commands_are_read_as_their_usage_lines_say(command: str, args: str, asked: tuple | None) -> None:  # type: ignore[type-arg]
    found = parse_change(command, args)
    assert (None if found is None else (found.action, found.mode, found.fields)) == asked


async def test_list_modes_names_a_model_the_llm_server_lacks_and_how_to_pick_another(
    private_bus: Bus, telegram: TelegramDouble, openai_double: OpenAIDouble
) -> None:
    """Issue 11: with a local server that lacks a mode's model, `/list_modes` says so instead of notes failing."""
    analyzer = await an_analyzer(private_bus, openai_double.base_url, "TONE")
    registry = await ModeRegistry.open(private_bus)
    read = await registry.get("TONE")
    await registry.write(read.definition.successor("cli", "a model this server lacks", model="llama3.2"), read)
    info = await analyzer.info()
    assert info is not None and info.model == "llama3.2"
    await (await private_bus.kv(BUCKET_MODES)).put("TONE", msgspec.json.encode(info))
    user = next(_users)
    try:
        async with Gateway(private_bus, telegram, Limits(allowed=frozenset({user}))):
            await telegram.send_text(user, "/list_modes")
            await telegram.wait_for(lambda: bool(telegram.messages(user)), 30)
    finally:
        read = await registry.get("TONE")
        await registry.write(read.definition.successor("cli", "back", model="gpt-4o"), read)
    listed = telegram.messages(user)[0].text
    assert "🎭 Tone · llama3.2" in listed
    assert "⚠️ model llama3.2 is not on the LLM server, which has: gpt-4.1, gpt-4o" in listed
    assert "/set_model TONE <model>" in listed
