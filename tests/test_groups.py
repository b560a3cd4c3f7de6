"""The bot in groups (issue 23): what counts as a note there, what it says when it is added (and when what it can
see changes), and that a group's ordinary day gets nothing from it that nobody asked for — through the whole stack,
with the Telegram double playing the group and its members.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.updates import take_in
from infra.bus import Bus
from infra.runtime.settings import Limits
from tests.support import (
    EN_TEXT,
    NOTES,
    TOKEN,
    Gateway,
    Speech,
    Stack,
    answer_to,
    answered_once,
    new_chat,
    settled,
)
from voice_insight.doubles.telegram_api import SentMessage, TelegramDouble

pytestmark = pytest.mark.timeout(600)

BOT_ID = TelegramDouble.BOT_USER["id"]
NOT_SOUND = "😕 I could not read this file as sound"
_groups = iter(range(-100_700_000_001, -100_800_000_000, -1))  # this module's own
_update_ids = itertools.count(900_000_001)

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
DOCX = b"PK\x03\x04" + bytes(range(256)) * 20
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def updates_handled(bus: Bus) -> None:
    """Every update the gateway has taken in is handled (acked): what it was going to say, it has said."""
    await settled(bus, "gateway", stream="UPDATES")


def replies(telegram: TelegramDouble, group: int) -> dict[int | None, SentMessage]:
    return {m.reply_to: m for m in telegram.messages(group)}


async def said(telegram: TelegramDouble, group: int, count: int) -> list[SentMessage]:
    """Wait until the bot has posted `count` messages in the group; they, in order."""
    await telegram.wait_for(lambda: len(telegram.messages(group)) >= count, 30)
    return telegram.messages(group)


# --- what is a note in a group ----------------------------------------------------------------------------


async def test_in_a_group_that_answers_every_note_only_sound_is_answered_unasked(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    """A PDF, a meme video and a Word file in a group that answers every note are the group's business: no
    "Listening…", no "not sound", no transcript. A recording sent as a file (typed audio/*) is sound, and answered;
    a PDF asked about is told at once, without "Listening…", that it is not sound."""
    group, member = next(_groups), 1101
    telegram.members[(group, BOT_ID)] = "administrator"  # it sees everything
    pdf = await telegram.send_media(
        group, PDF, kind="document", mime_type="application/pdf", file_name="minutes.pdf", from_user=member
    )
    await telegram.send_media(
        group,
        speech.video_note("Look at this cat, it is so funny."),
        kind="video",
        duration=3,
        mime_type="video/mp4",
        file_name="cat.mp4",
        from_user=member,
    )
    await telegram.send_media(group, DOCX, kind="document", mime_type=DOCX_TYPE, file_name="plan.docx")
    recording = await telegram.send_media(
        group, speech.say(EN_TEXT), kind="document", mime_type="audio/ogg", file_name="memo.ogg", from_user=member
    )
    answer = await answer_to(telegram, group, recording)
    assert "budget" in answer.text.lower() and answered_once(answer)
    await updates_handled(bus)
    assert list(replies(telegram, group)) == [recording], "nothing but the recording was answered"

    await telegram.send_text(group, "/transcribe", reply_to=pdf, from_user=member)
    told = await answer_to(telegram, group, pdf, timeout=30)
    assert told.history == [told.text] and told.text.startswith(NOT_SOUND), "told at once, no 'Listening…'"
    telegram.members.pop((group, BOT_ID))


async def test_a_file_that_is_plainly_not_sound_is_declined_at_once_and_once(
    stack: Stack, telegram: TelegramDouble, bus: Bus
) -> None:
    """In a private chat sending is asking: a PDF or a picture sent as a file is answered, but at once (no
    "Listening…" that turns into "not sound" seconds later), without being downloaded, and once however often the
    update comes."""
    chat = new_chat()
    pdf = await telegram.send_media(chat, PDF, kind="document", mime_type="application/pdf", file_name="x.pdf")
    picture = await telegram.send_media(chat, PNG, kind="document", mime_type="image/png", file_name="scan.png")
    for sent in (pdf, picture):
        told = await answer_to(telegram, chat, sent, timeout=30)
        assert told.history == [told.text] and told.text.startswith(NOT_SOUND)
    await telegram.redeliver(pdf)
    await updates_handled(bus)
    assert len(telegram.messages(chat)) == 2, "a repeated update is not told again"
    file_ids = {telegram.sent_updates[m]["message"]["document"]["file_id"] for m in (pdf, picture)}
    assert not file_ids & {p.get("file_id") for method, p in telegram.calls if method.lower() == "getfile"}


# --- added to a group ---------------------------------------------------------------------------------------


async def test_added_to_a_group_the_bot_says_once_what_it_does_and_whether_it_can_hear_voice_notes(
    stack: Stack, telegram: TelegramDouble, bus: Bus
) -> None:
    group, adder = next(_groups), 1201
    await telegram.bot_added(group, by_user=adder, status="member", language_code="ru")
    (hello,) = await said(telegram, group, 1)
    assert hello.text.startswith("👋 Привет!") and "каждое голосовое" in hello.text, "in the adder's language"
    assert "Пока я не вижу здесь голосовые" in hello.text and "/setprivacy" in hello.text, "privacy mode is on"
    assert "сделайте меня администратором" in hello.text and "/transcribe" in hello.text

    await telegram.bot_status(group, "administrator", by_user=adder, language_code="ru")
    hears = (await said(telegram, group, 2))[1]
    assert hears.text.startswith("👂 Теперь я администратор") and hears.silent

    await telegram.bot_status(group, "member", by_user=adder, language_code="ru")
    deaf = (await said(telegram, group, 3))[2]
    assert "Теперь только по запросу" in deaf.text and "/transcribe" in deaf.text and deaf.silent

    await telegram.bot_status(group, "left", by_user=adder)
    await telegram.bot_added(group, by_user=1202, status="administrator", language_code="en")
    again = (await said(telegram, group, 4))[3]
    await updates_handled(bus)
    assert (
        again.text.startswith("👋 Hi! I turn voice notes into text") and "Here I answer every voice note" in again.text
    )
    assert "cannot see" not in again.text, "an admin hears every voice note"
    assert len(telegram.messages(group)) == 4, "leaving said nothing"
    assert telegram.notified(group) == [hello, again], "only the greetings notify the group"


async def test_with_privacy_mode_off_the_bot_hears_everything_and_its_rights_change_nothing(
    stack: Stack, telegram: TelegramDouble, bus: Bus
) -> None:
    group = next(_groups)
    telegram.privacy_mode = False
    try:
        await telegram.bot_added(group, by_user=1301)
        (hello,) = await said(telegram, group, 1)
        await telegram.bot_status(group, "administrator", by_user=1301)
        await telegram.bot_status(group, "member", by_user=1301)
        await updates_handled(bus)
    finally:
        telegram.privacy_mode = True
    assert "Here I answer every voice note" in hello.text and "cannot see" not in hello.text
    assert telegram.messages(group) == [hello], "what it hears did not change: nothing to say"


def joined(group: int, by_user: int, language_code: str) -> bytes:
    """A `my_chat_member` update as Telegram sends it when a user adds the bot to a group."""
    bot = dict(TelegramDouble.BOT_USER)
    change: dict[str, Any] = {
        "chat": {"id": group, "type": "supergroup", "title": "Team"},
        "from": {"id": by_user, "is_bot": False, "first_name": "User", "language_code": language_code},
        "date": int(time.time()),
        "old_chat_member": {"status": "left", "user": bot},
        "new_chat_member": {"status": "member", "user": bot},
    }
    return json.dumps({"update_id": 0, "my_chat_member": change}).encode()


async def test_a_membership_change_delivered_twice_is_told_once(
    stack: Stack, telegram: TelegramDouble, bus: Bus
) -> None:
    """Telegram sends a change again under another update id when the bot lost its offset, and the stream hands an
    update over again when its handler died: the group hears about it once either way."""
    group = next(_groups)
    payload = joined(group, 1401, "en")
    bot_id = int(TOKEN.split(":")[0])
    for _ in range(3):
        await take_in(bus, bot_id, next(_update_ids), payload)
    await said(telegram, group, 1)
    await updates_handled(bus)
    assert len(telegram.messages(group)) == 1
    assert telegram.messages(group)[0].text.startswith("👋 Hi!")


async def test_a_group_that_is_not_let_in_is_told_so_once_it_adds_the_bot(private_bus: Bus) -> None:
    owner, stranger, group = 1501, 1502, next(_groups)
    telegram = TelegramDouble(TOKEN)  # its own, so the session's stack never polls it
    await telegram.start()
    try:
        async with Gateway(private_bus, telegram, Limits(allowed=frozenset({owner}))):
            await telegram.bot_added(group, by_user=stranger)
            (closed,) = await said(telegram, group, 1)
            await telegram.bot_added(new_group := next(_groups), by_user=owner)
            (hello,) = await said(telegram, new_group, 1)
    finally:
        await telegram.stop()
    assert closed.text.startswith("🔒 This is a private bot") and str(group) in closed.text
    assert hello.text.startswith("👋 Hi!"), "a group its owner adds is served"


# --- a private bot in groups ------------------------------------------------------------------------------

OGG = b"OggS" + bytes(2000)  # the gateway does not decode: any bytes will do
BOT_NAME = TelegramDouble.BOT_USER["username"]


@contextlib.asynccontextmanager
async def private_bot(bus: Bus, *allowed: int) -> AsyncIterator[TelegramDouble]:
    """A bot let in only to `allowed` (users and groups), with a Telegram of its own: the session's stack never
    polls it."""
    telegram = TelegramDouble(TOKEN)
    await telegram.start()
    try:
        async with Gateway(bus, telegram, Limits(allowed=frozenset(allowed))):
            yield telegram
    finally:
        await telegram.stop()


async def test_a_private_bot_tells_a_group_it_is_not_let_in_to_whom_it_listens_and_promises_no_one_else(
    private_bus: Bus,
) -> None:
    """A group is let in by its own id in ALLOWED_USERS; its members who are let in are answered anywhere. Added
    by one of them to a group that is not, the bot greets it saying so, with the group's id for the owner, and its
    notices when it is made an admin or no longer one promise answers only to them: never "each gets its answer"
    to a group whose other members' notes it will not take."""
    owner, stranger, mine, closed, open_group = 1701, 1702, next(_groups), next(_groups), next(_groups)
    async with private_bot(private_bus, owner, open_group) as telegram:
        await telegram.bot_added(mine, by_user=owner)
        (hello,) = await said(telegram, mine, 1)
        await telegram.bot_status(mine, "administrator", by_user=owner)
        hears = (await said(telegram, mine, 2))[1]  # an admin's two changes are moments apart, not one batch
        await telegram.bot_status(mine, "member", by_user=owner)
        deaf = (await said(telegram, mine, 3))[2]

        await telegram.bot_added(closed, by_user=stranger)
        (shut,) = await said(telegram, closed, 1)
        await telegram.bot_status(closed, "administrator", by_user=stranger)
        closed_hears = (await said(telegram, closed, 2))[1]

        await telegram.bot_added(open_group, by_user=stranger)
        (welcome,) = await said(telegram, open_group, 1)
        await telegram.bot_status(open_group, "administrator", by_user=stranger)
        all_heard = (await said(telegram, open_group, 2))[1]
        await settled(private_bus, "gateway", stream="UPDATES")
    assert hello.text.startswith("👋 Hi!") and "cannot see voice notes here yet" in hello.text
    assert "only the people its owner let in" in hello.text and str(mine) in hello.text, "who is answered here"
    assert "ALLOWED_USERS" in hello.text, "and how the owner lets the whole group in"
    for notice in (hears, deaf, closed_hears):
        assert notice.silent and "let in" in notice.text and "each gets its answer" not in notice.text, notice.text
    assert hears.text.startswith("👂") and deaf.text.startswith("🙉") and "/transcribe" in deaf.text
    assert shut.text.startswith("🔒 This is a private bot, and this group is not let in") and str(closed) in shut.text
    assert "let in" not in welcome.text and str(open_group) not in welcome.text, "a group let in is simply served"
    assert all_heard.text == "👂 Now I am an admin here and hear every voice note: each gets its answer."
    assert all(str(stranger) not in m.text for chat in (mine, closed, open_group) for m in telegram.messages(chat))


async def test_a_private_bot_never_posts_a_members_id_in_a_group_and_refuses_only_who_asks(private_bus: Bus) -> None:
    """In a group that is not let in, a voice note of a member who is not let in is nobody's business but the
    group's: no "🔒 private bot … your Telegram id" under it for everyone to read. Asked (`/transcribe`, a
    mention), the bot says briefly that it answers only those let in, naming nobody; what the owner sends is
    answered, and in a group let in by its id so is everyone's."""
    owner, member, group, open_group = 1801, 1802, next(_groups), next(_groups)
    async with private_bot(private_bus, owner, open_group) as telegram:
        for chat in (group, open_group):
            telegram.members[(chat, BOT_ID)] = "administrator"  # it sees every message
        unasked = await telegram.send_media(group, OGG, duration=3, from_user=member)
        request = await telegram.send_text(group, "/transcribe", reply_to=unasked, from_user=member)
        mention = await telegram.send_text(group, f"@{BOT_NAME} and this one?", reply_to=unasked, from_user=member)
        to_another_bot = await telegram.send_text(group, "/start@SomeOtherBot", from_user=member)
        owners = await telegram.send_media(group, OGG, duration=3, from_user=owner)
        members = await telegram.send_media(open_group, OGG, duration=3, from_user=member)
        await telegram.wait_for(lambda: owners in replies(telegram, group), 30)
        await telegram.wait_for(lambda: members in replies(telegram, open_group), 30)
        await settled(private_bus, "gateway", stream="UPDATES")
    answered = replies(telegram, group)
    assert set(answered) == {request, mention, owners}, "nothing under the note, nor to another bot's command"
    assert to_another_bot not in answered
    for refusal in (answered[request], answered[mention]):
        assert refusal.text.startswith("🔒 This is a private bot") and "let in" in refusal.text, refusal.text
    assert all(str(member) not in m.text for m in telegram.all_messages(group)), "nobody's id in the group"
    assert answered[owners].text == "🎧 Listening…"
    assert replies(telegram, open_group)[members].text == "🎧 Listening…", "a group let in: everyone is answered"


# --- a day in a group ---------------------------------------------------------------------------------------


async def test_a_group_gets_no_message_it_did_not_ask_for_in_a_day_of_ordinary_chatter(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    """A group's day: talk, replies between members, stickers, photos, a PDF, a meme video, a spreadsheet, and
    two voice notes; somebody asks for the transcript of a video. The bot, an admin, sees all of it, and posts its
    greeting, the two answers and the one asked for: nothing else, not even "I understand voice messages"."""
    group, anna, boris, vera = next(_groups), 1601, 1602, 1603
    await telegram.bot_added(group, by_user=anna, status="administrator")
    (hello,) = await said(telegram, group, 1)

    hi = await telegram.send_text(group, "Morning all! Who has the figures for the review?", from_user=anna)
    await telegram.send_text(group, "I do, sending in a minute", reply_to=hi, from_user=boris)
    await telegram.send_media(group, b"sticker", kind="sticker", from_user=vera)
    await telegram.send_media(
        group, PDF, kind="document", mime_type="application/pdf", file_name="figures.pdf", from_user=boris
    )
    await telegram.send_text(group, "thanks!", reply_to=hi, from_user=anna)
    first = await telegram.send_media(group, speech.say(NOTES[0]), duration=4, from_user=vera)
    await telegram.send_media(group, PNG, kind="photo", from_user=anna)
    meme = await telegram.send_media(
        group,
        speech.video_note("Our new office opens next Monday in the city center."),
        kind="video",
        duration=4,
        mime_type="video/mp4",
        file_name="tour.mp4",
        from_user=boris,
    )
    await telegram.send_text(group, "ha, love it", reply_to=meme, from_user=vera)
    await telegram.send_media(
        group,
        DOCX,
        kind="document",
        mime_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        file_name="budget.xlsx",
        from_user=anna,
    )
    await telegram.send_text(group, "see you at lunch", from_user=vera)
    await telegram.send_text(group, "/transcribe", reply_to=meme, from_user=anna)
    second = await telegram.send_media(group, speech.say(NOTES[3]), duration=4, from_user=boris)
    await telegram.send_text(group, "on it", reply_to=second, from_user=anna)
    await telegram.send_media(group, b"sticker", kind="sticker", from_user=boris)

    answers = {note: await answer_to(telegram, group, note, timeout=240) for note in (first, meme, second)}
    await updates_handled(bus)
    assert telegram.messages(group) == [hello, *sorted(answers.values(), key=lambda m: m.message_id)], (
        "the greeting and the three answers, nothing else"
    )
    assert all(answered_once(answer) for answer in answers.values())
    assert "budget" in answers[first].text.lower() and "office" in answers[meme].text.lower()
    assert "supplier" in answers[second].text.lower()
