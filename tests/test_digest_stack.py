"""The chat's digest (issue 24) through the whole stack: several people's voice notes in a supergroup, `/digest`
with a link to each note its points come from, the daily digest chosen in `/settings` firing at its hour, and
nothing left to digest once the group said `/forget`.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time

import pytest

from gateway.chats import chat_key
from gateway.intake import correlation_key
from infra.bus import Bus
from infra.domain.notes import NoteStore
from infra.voice.texts import text
from tests.support import EN_TEXT, LONG_EN_TEXT, TOKEN, Speech, Stack, answer_to, reply_to
from voice_insight.doubles.telegram_api import SentMessage, TelegramDouble

pytestmark = pytest.mark.timeout(600)

KEY = correlation_key(TOKEN)
BOT_ID = TelegramDouble.BOT_USER["id"]
_groups = iter(range(-100_910_000_001, -100_920_000_000, -1))  # this module's own
ANNA, TOM = 7_100_001, 7_100_002


async def test_a_groups_digest_names_who_said_what_links_each_note_and_comes_daily(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    group = next(_groups)
    telegram.members[(group, BOT_ID)] = "administrator"  # it hears every voice note there
    telegram.members[(group, ANNA)] = "administrator"
    telegram.names.update({ANNA: "Anna", TOM: "Tom"})
    first = await telegram.send_media(group, speech.say(LONG_EN_TEXT), duration=17, from_user=ANNA)
    second = await telegram.send_media(group, speech.say(EN_TEXT), duration=8, from_user=TOM)
    await answer_to(telegram, group, first)
    await answer_to(telegram, group, second)

    asked = await telegram.send_text(group, "/digest", from_user=TOM)
    digest = await reply_to(telegram, group, asked)
    assert digest.text.startswith("🗞 Digest · the last 24 hours · 2 voice notes"), digest.text
    assert "Topics" in digest.text and "Actions" in digest.text
    # Notes are numbered in the order they were transcribed (Tom's shorter one may be first): each speaker's point
    # carries their own note's number, and that number links to their note.
    anna, tom = re.search(r"• Anna: .+\[(\d)\]", digest.text), re.search(r"• Tom: .+\[(\d)\]", digest.text)
    assert anna and tom and anna.group(1) != tom.group(1), digest.text
    link = str(group).removeprefix("-100")  # a supergroup's own id
    for note, number in ((first, anna.group(1)), (second, tom.group(1))):
        assert f'<a href="https://t.me/c/{link}/{note}">[{number}]</a>' in digest.html, digest.html

    # The daily digest, chosen by an admin for this very hour (UTC): it comes on its own, not as a reply.
    now = datetime.datetime.now(datetime.UTC)
    if now.minute >= 58:  # not across the hour's end: the clock must find the hour chosen still on
        await asyncio.sleep((60 - now.minute) * 60 - now.second + 1)
        now = datetime.datetime.now(datetime.UTC)
    await telegram.send_text(group, "/settings", from_user=ANNA)
    await telegram.wait_for(lambda: "Daily digest: off" in telegram.messages(group)[-1].text, 30)
    menu = telegram.messages(group)[-1]
    await telegram.press(group, menu.message_id, "s:dig", from_user=ANNA)
    await telegram.wait_for(lambda: telegram.messages(group)[-1].text == text("digest_pick", "en"), 30)
    await telegram.press(group, menu.message_id, f"s:dig:{now.hour}", from_user=ANNA)

    def daily() -> SentMessage | None:
        return next((m for m in telegram.messages(group) if m.text.startswith("🗞 Daily digest")), None)

    await telegram.wait_for(lambda: daily() is not None, 90)
    found = daily()
    assert found is not None and found.reply_to is None and "2 voice notes" in found.text

    # /forget: the notes and their speakers' names go; nothing is left to digest.
    await telegram.send_text(group, "/forget", from_user=ANNA)
    await telegram.wait_for(lambda: telegram.messages(group)[-1].text.startswith("🧹 Deleted:"), 30)
    deadline = time.monotonic() + 30  # the chat is told first, and its notes erased right after
    while await NoteStore(bus).of_chat(chat_key(KEY, group)):
        assert time.monotonic() < deadline, "the group's notes outlived its /forget"
        await asyncio.sleep(0.2)
    again = await telegram.send_text(group, "/digest", from_user=ANNA)
    assert (await reply_to(telegram, group, again)).text == text("digest_empty", "en", count=24)
