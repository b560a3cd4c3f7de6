"""The buttons under an answer in a group (issue 23): who may press them, what they offer, and what a second press
says — through the whole stack, with the Telegram double playing the group, its members and its admins.

A button posts to the whole group (a colleague's tone read out, two files), so only the note's sender and the
group's admins may press it; it offers only what the group allows and what the answer does not hold already.
"""

from __future__ import annotations

import asyncio

import pytest

from infra.bus import Bus, encode
from infra.bus.names import BUCKET_MODES
from infra.domain.contracts import ModeInfo
from tests.support import EN_TEXT, Speech, Stack, answer_to, fresh, in_progress, new_chat, settled
from tests.test_chat import press, settings_message
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import SentMessage, TelegramDouble

pytestmark = pytest.mark.timeout(600)

BOT_ID = TelegramDouble.BOT_USER["id"]
_groups = iter(range(-100_400_000_001, -100_500_000_000, -1))
_people = iter(range(7_100_001, 7_200_000))


def labels(message: SentMessage) -> list[str]:
    return [b["text"] for row in message.keyboard for b in row]


def files(telegram: TelegramDouble, chat: int) -> int:
    return sum(m.document is not None for m in telegram.messages(chat))


async def group_note(
    telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, group: int, sender: int
) -> tuple[int, SentMessage]:
    """A voice note in the group, answered while TONE fails (so "▶ 🎭 Tone" is offered under it)."""
    openai_double.break_model("gpt-4o")
    try:
        voice = await telegram.send_media(group, speech.say(fresh(EN_TEXT)), duration=9, from_user=sender)
        return voice, await answer_to(telegram, group, voice)
    finally:
        openai_double.heal()


def a_group(telegram: TelegramDouble) -> tuple[int, int, int, int]:
    """A group the bot sees every message of (it is an admin), with a sender, a member and an admin."""
    group, sender, member, admin = next(_groups), next(_people), next(_people), next(_people)
    telegram.members[(group, BOT_ID)] = "administrator"
    telegram.members[(group, admin)] = "administrator"
    return group, sender, member, admin


async def test_in_a_group_only_the_notes_sender_and_the_admins_may_press_its_buttons(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, bus: Bus
) -> None:
    group, sender, member, admin = a_group(telegram)
    voice, answer = await group_note(telegram, openai_double, speech, group, sender)
    assert "⚠️ Missing: 🎭 Tone" in answer.text, "users read the mode's title, never its internal name"
    assert labels(answer) == ["📄 Transcript", "▶ 🎭 Tone"], "the gist is in the answer: not offered"
    await settled(bus)
    asked, shown = len(openai_double.requests), len(telegram.messages(group))

    for button in ("▶ 🎭 Tone", "📄 Transcript"):
        told = await press(telegram, answer, button, user=member)
        assert not told["show_alert"], "a short toast"
        assert "sender" in told["text"] and "admins" in told["text"], told
    await settled(bus, "gateway", stream="UPDATES")
    assert len(telegram.messages(group)) == shown, "a member's press posts nothing"
    assert len(openai_double.requests) == asked, "...and asks the LLM nothing"

    # The sender and an admin press "📄 Transcript" at once: the files come once, and the other press says where.
    both = await asyncio.gather(
        press(telegram, answer, "📄 Transcript", user=sender), press(telegram, answer, "📄 Transcript", user=admin)
    )
    await telegram.wait_for(lambda: files(telegram, group) == 2, 30)
    await settled(bus, "gateway", stream="UPDATES")
    assert files(telegram, group) == 2, "two presses, one pair of files"
    assert sorted(bool(told["text"]) for told in both) == [False, True]
    again = await press(telegram, answer, "📄 Transcript", user=sender)
    assert "Already sent" in again["text"] and "below" in again["text"], again
    await settled(bus, "gateway", stream="UPDATES")
    assert files(telegram, group) == 2

    assert (await press(telegram, answer, "▶ 🎭 Tone", user=sender))["show_alert"] is False
    await telegram.wait_for(
        lambda: any("Hidden intentions" in m.text for m in telegram.messages(group) if m is not answer), 120
    )
    tone = next(m for m in telegram.messages(group) if "Hidden intentions" in m.text)
    assert tone.reply_to == voice and not in_progress(tone.text)
    assert tone.keyboard == [], "the note's buttons are those under its answer, above"
    where = await press(telegram, answer, "▶ 🎭 Tone", user=admin)
    assert "below" in where["text"] and "above" not in where["text"], "the re-run's answer came after this one"
    telegram.members.pop((group, BOT_ID))


async def test_a_group_is_offered_only_the_modes_it_allows_even_when_its_settings_change_after_the_answer(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, bus: Bus
) -> None:
    group, sender, _, admin = a_group(telegram)
    voice, answer = await group_note(telegram, openai_double, speech, group, sender)
    assert "▶ 🎭 Tone" in labels(answer)
    menu = await settings_message(telegram, group, admin)
    await press(telegram, menu, "✅ 🎭 Tone", user=admin)  # the group's admins switch the tone reading off
    await telegram.wait_for(lambda: "⬜ 🎭 Tone" in menu.text, 30)
    await settled(bus)
    asked, shown = len(openai_double.requests), len(telegram.messages(group))

    told = await press(telegram, answer, "▶ 🎭 Tone", user=sender)
    assert "🎭 Tone" in told["text"] and "switched off" in told["text"], told
    await settled(bus, "gateway", stream="UPDATES")
    assert len(telegram.messages(group)) == shown and len(openai_double.requests) == asked, "nothing was run"

    later = await telegram.send_media(group, speech.say(fresh(EN_TEXT)), duration=9, from_user=sender)
    second = await answer_to(telegram, group, later)
    assert "🎭 Tone" not in second.text and labels(second) == ["📄 Transcript"], "a mode switched off: no button"
    telegram.members.pop((group, BOT_ID))


async def test_a_mode_no_longer_running_is_named_by_its_title(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    """A mode live when the note came, never answering, and gone by the time its button is pressed."""
    kv = await bus.kv(BUCKET_MODES)
    ghost = ModeInfo(mode="GHOST", title="👻 Ghost", titles={"ru": "👻 Призрак", "en": "👻 Ghost"})
    await kv.put("GHOST", encode(ghost))
    try:
        chat = new_chat()
        voice = await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9)
        answer = await answer_to(telegram, chat, voice)
    finally:
        await kv.delete("GHOST")
    assert "⚠️ Missing: 👻 Ghost" in answer.text and "GHOST" not in answer.text
    told = await press(telegram, answer, "▶ 👻 Ghost")
    assert told["text"].startswith("👻 Ghost is not running right now"), told
    assert len(telegram.messages(chat)) == 1, "nothing posted"
