"""A chat's own modes (issue 24, part 3) through the whole stack, the OpenAI double answering: `/newmode` tried and
kept, shown in its chat's answers and `/settings` and in no other chat's; refused for a bad instruction, for one
too many, while the bot's admins have chat modes off, and from a group's member who is no admin; counted in the
admins' `/stats` without its instruction; `/dropmode` and `/chatmodes`.
"""

from __future__ import annotations

import msgspec
import pytest

from gateway.chats import chat_key
from gateway.intake import correlation_key
from infra.bus import Bus
from infra.bus.names import BUCKET_CHAT_MODES
from infra.domain.chat_modes import POLICY_KEY, ChatModePolicy
from tests.support import STACK_ADMIN, TOKEN, Speech, Stack, answer_to, new_chat
from voice_insight.doubles.telegram_api import SentMessage, TelegramDouble

pytestmark = pytest.mark.timeout(600)

KEY = correlation_key(TOKEN)
DATES = "List every date, deadline and appointment mentioned, with who committed to it."
SAID = "Maria will send the report on Friday. The client call is on Monday at ten."
_groups = iter(range(-100_920_000_001, -100_930_000_000, -1))  # this module's own


async def said_to(telegram: TelegramDouble, chat: int, command: str, **sender: int) -> SentMessage:
    """The bot's last word on a command: its reply, once it is no "trying it…" status."""
    asked = await telegram.send_text(chat, command, **sender)  # type: ignore[arg-type]

    def last() -> SentMessage | None:
        replies = [m for m in telegram.messages(chat) if m.reply_to == asked and not m.text.startswith("⏳")]
        return replies[-1] if replies else None

    await telegram.wait_for(lambda: last() is not None, 90)
    found = last()
    assert found is not None
    return found


async def answer_in(telegram: TelegramDouble, speech: Speech, chat: int) -> str:
    """A voice note's whole answer in `chat`, every message of it."""
    voice = await telegram.send_media(chat, speech.say(SAID), duration=6)
    status = await answer_to(telegram, chat, voice)
    after = [m.text for m in telegram.messages(chat) if m.message_id > status.message_id and m.document is None]
    return "\n".join([status.text, *after])


@pytest.fixture
async def default_policy(bus: Bus):  # type: ignore[no-untyped-def]
    """Whatever a test does to the bot's policy, the next one finds the default."""
    yield
    await (await bus.kv(BUCKET_CHAT_MODES)).put(POLICY_KEY, msgspec.json.encode(ChatModePolicy()))


async def test_a_chats_own_mode_is_in_its_answers_and_settings_and_in_no_other_chats(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus, default_policy: None
) -> None:
    chat, other = new_chat(), new_chat()
    defined = await said_to(telegram, chat, f"/newmode dates 📅 Dates\n{DATES}")
    assert defined.text.startswith("✅") and "DATES" in defined.text, defined.text

    ours, theirs = await answer_in(telegram, speech, chat), await answer_in(telegram, speech, other)
    assert "\n📅 Dates\n" in ours and "• points 1:" in ours and "send the report" in ours, ours
    assert "📅 Dates" not in theirs and "• points 1:" not in theirs, theirs

    listed = await said_to(telegram, chat, "/chatmodes")
    assert "📅 Dates" in listed.text and DATES in listed.text and "1 of 3" in listed.text, listed.text
    assert "no modes of its own" in (await said_to(telegram, other, "/chatmodes")).text

    await telegram.send_text(chat, "/settings")
    await telegram.wait_for(lambda: bool(telegram.messages(chat)[-1].keyboard), 30)
    menu = telegram.messages(chat)[-1]
    assert menu.button("✅ 📅 Dates")["callback_data"] == "s:m:chat.DATES"
    await telegram.send_text(other, "/settings")
    await telegram.wait_for(lambda: bool(telegram.messages(other)[-1].keyboard), 30)
    assert not any("Dates" in b["text"] for row in telegram.messages(other)[-1].keyboard for b in row)

    # Switched off in /settings like any mode: the chat's next note goes without it.
    await telegram.press(chat, menu.message_id, "s:m:chat.DATES")
    await telegram.wait_for(lambda: any(b["text"] == "⬜ 📅 Dates" for row in menu.keyboard for b in row), 30)
    assert "📅 Dates" not in await answer_in(telegram, speech, chat)

    stats = await said_to(telegram, STACK_ADMIN, "/stats")
    short = chat_key(KEY, chat)[:12]
    assert f"DATES · chat {short}: 1 calls · 0 errors" in stats.text, stats.text
    assert DATES not in stats.text, "usage, never the instruction"

    dropped = await said_to(telegram, chat, "/dropmode DATES")
    assert dropped.text.startswith("🗑") and "DATES" in dropped.text
    assert "no modes of its own" in (await said_to(telegram, chat, "/chatmodes")).text
    # Defined again, it is on again: a name the chat once switched off starts afresh.
    assert (await said_to(telegram, chat, f"/newmode DATES 📅 Dates\n{DATES}")).text.startswith("✅")
    assert "📅 Dates" in await answer_in(telegram, speech, chat)
    assert "no mode NOPE" in (await said_to(telegram, chat, "/dropmode NOPE")).text


async def test_a_chat_mode_is_refused_for_a_bad_instruction_one_too_many_and_while_chat_modes_are_off(
    stack: Stack, telegram: TelegramDouble, speech: Speech, default_policy: None
) -> None:
    chat = new_chat()
    harmful = await said_to(telegram, chat, "/newmode ARMS Arms\nExplain how to build a weapon from what is said.")
    assert harmful.text.startswith("❌ The model would not follow this instruction"), harmful.text
    short = await said_to(telegram, chat, "/newmode DATES Dates\nDates.")
    assert short.text == "❌ The instruction must be 20 to 1500 characters long.", short.text
    assert "the first line" in (await said_to(telegram, chat, "/newmode DATES")).text, "how to write one"

    limited = await said_to(telegram, STACK_ADMIN, "/chatmode_policy limit 1")
    assert "at most 1 per chat" in limited.text, limited.text
    assert (await said_to(telegram, chat, f"/newmode DATES 📅 Dates\n{DATES}")).text.startswith("✅")
    one_more = await said_to(telegram, chat, f"/newmode ASKS Asks\n{DATES}")
    assert one_more.text.startswith("❌ This chat has 1 mode of its own already"), one_more.text

    off = await said_to(telegram, STACK_ADMIN, "/chatmode_policy off")
    assert ": switched off ·" in off.text, off.text
    refused = await said_to(telegram, chat, f"/newmode ASKS Asks\n{DATES}")
    assert refused.text == "Modes of a chat's own are switched off on this bot by its admins.", refused.text
    assert "📅 Dates" not in await answer_in(telegram, speech, chat), "its notes no longer wait for its modes"
    assert (await said_to(telegram, chat, "/chatmode_policy on")).text.startswith("🔐"), "for the bot's admins only"

    group = next(_groups)
    member = await said_to(telegram, group, f"/newmode ASKS Asks\n{DATES}", from_user=21)
    assert member.text == "Only the group's admins can change its settings.", member.text
