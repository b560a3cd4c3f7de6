"""In the chat (issue 11): groups, settings per chat, the buttons under an answer, answers that arrive as they are
ready, and `/forget` — through the whole stack, with the Telegram double playing the user (and the group).
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from gateway.chats import chat_key
from gateway.intake import correlation_id, correlation_key
from infra.bus import Bus
from infra.bus.names import BUCKET_ANALYSIS_CACHE, BUCKET_CHAT_MODES, CONSUMER_TRANSCRIBER, STREAM
from infra.domain.limits import user_key
from infra.domain.notes import NoteStore, StoredNote, text_digest
from tests.support import (
    EN_TEXT,
    LONG_EN_TEXT,
    RU_TEXT,
    TOKEN,
    Speech,
    Stack,
    answer_of,
    answer_to,
    answered_once,
    everything_stored,
    forgotten_mark,
    fresh,
    in_progress,
    new_chat,
    settled,
)
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import SentMessage, TelegramDouble

pytestmark = pytest.mark.timeout(600)

KEY = correlation_key(TOKEN)
BOT_ID = TelegramDouble.BOT_USER["id"]
_groups = iter(range(-100_200_000_001, -100_300_000_000, -1))


async def stored_note(bus: Bus, chat: int, message_id: int) -> StoredNote:
    """The note as the formatter kept it for its buttons."""
    deadline = time.monotonic() + 30
    while (note := await NoteStore(bus).get(chat_key(KEY, chat), correlation_id(KEY, chat, message_id))) is None:
        assert time.monotonic() < deadline, "the answered note was not kept"
        await asyncio.sleep(0.1)
    return note


async def press(telegram: TelegramDouble, message: SentMessage, button: str, user: int | None = None) -> dict:
    """Press the button whose text starts with `button`; what the bot answered the press (toast or alert)."""
    query = await telegram.press(message.chat_id, message.message_id, message.button(button)["callback_data"], user)
    await telegram.wait_for(lambda: query in telegram.callback_answers, 30)
    return telegram.callback_answers[query]


async def settings_message(telegram: TelegramDouble, chat: int, user: int | None = None) -> SentMessage:
    before = len(telegram.messages(chat))
    await telegram.send_text(chat, "/settings", from_user=user)
    await telegram.wait_for(lambda: len(telegram.messages(chat)) > before, 30)
    message = telegram.messages(chat)[-1]
    assert "Settings for this chat" in message.text
    return message


# --- groups ------------------------------------------------------------------------------------------


async def test_in_a_forum_group_the_bot_answers_voice_notes_in_their_topic_and_ignores_chatter(
    stack: Stack, telegram: TelegramDouble, speech: Speech
) -> None:
    group = next(_groups)
    telegram.forums.add(group)
    telegram.members[(group, BOT_ID)] = "administrator"  # sees every message, privacy mode or not
    await telegram.send_text(group, "Who is bringing the cake on Friday?", thread=77)
    voice = await telegram.send_media(group, speech.say(EN_TEXT), duration=9, from_user=501, thread=77)
    answer = await answer_of(telegram, group)
    assert len(telegram.messages(group)) == 1, "the chatter got nothing; the note got one answer"
    assert answer.reply_to == voice and answer.thread_id == 77, "in reply to the note, in its topic"
    assert answer.text.startswith("📝 Transcript") and answered_once(answer)


async def test_a_group_on_request_answers_only_transcribe_or_a_mention_and_only_admins_change_that(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    group, admin, member = next(_groups), 601, 602
    telegram.members[(group, admin)] = "administrator"
    menu = await settings_message(telegram, group, member)
    assert "In the group: every voice note" in menu.text and "I must be its admin" in menu.text
    refused = await press(telegram, menu, "👥", user=member)
    assert refused["show_alert"] and "Only the group's admins" in refused["text"]
    assert "every voice note" in telegram.messages(group)[-1].text, "a member changed nothing"
    await press(telegram, menu, "👥", user=admin)
    await telegram.wait_for(lambda: "only on request" in menu.text, 30)

    # Privacy mode on: a plain voice note does not even reach the bot; a reply with /transcribe does.
    first = await telegram.send_media(group, speech.say(EN_TEXT), duration=9, from_user=member)
    second = await telegram.send_media(group, speech.say(LONG_EN_TEXT), duration=14, from_user=member)
    telegram.members[(group, BOT_ID)] = "administrator"  # now it sees everything, and still waits to be asked
    third = await telegram.send_media(group, speech.say(EN_TEXT), duration=9, from_user=member)
    await asyncio.sleep(3)
    assert len(telegram.messages(group)) == 1, "no note was answered unasked"

    await telegram.send_text(group, "/transcribe", reply_to=first, from_user=member)
    await telegram.send_text(group, "@voice_insight_bot what does it say?", reply_to=second, from_user=member)
    await telegram.wait_for(lambda: sum(not in_progress(m.text) for m in telegram.messages(group)[1:]) == 2, 180)
    answers = {m.reply_to: m for m in telegram.messages(group)[1:]}
    assert set(answers) == {first, second}, "each answer replies to the note it was asked about"
    assert "budget" in answers[first].text.lower() and "marketing" in answers[second].text.lower()
    assert third not in answers
    telegram.members.pop((group, BOT_ID))


# --- settings ------------------------------------------------------------------------------------------


async def test_settings_change_what_the_next_note_gets(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    menu = await settings_message(telegram, chat)
    assert "Modes: ✅ 📌 The gist · ✅ 🎭 Tone" in menu.text
    await press(telegram, menu, "✅ 🎭 Tone")  # switched off
    await press(telegram, menu, "📝 Transcript")  # in the message → as a file
    await press(telegram, menu, "🌐")  # the language menu: every language by its own name
    await telegram.wait_for(lambda: "Which language" in menu.text, 30)
    await press(telegram, menu, "Русский")
    await telegram.wait_for(lambda: "⬜ 🎭 Тон" in menu.text and "файлом" in menu.text, 30)

    before = len(openai_double.requests)
    voice = await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9, language_code="en")
    answer = await answer_to(telegram, chat, voice)
    assert "Расшифровка" in answer.text and "Полная расшифровка — в файле ниже." in answer.text
    assert "Тон" not in answer.text and "Суть" in answer.text, "TONE is off here; DEFAULT answers in Russian"
    await settled(bus)
    file = next(m for m in telegram.messages(chat) if m.document is not None)
    assert file.document.file_name == "transcript.txt" and b"budget" in file.document.content.lower()
    assert {r["model"] for r in openai_double.requests[before:]} == {"o3"}, "no TONE call for this chat"
    assert "Write every value in Russian" in str(openai_double.requests[-1])


async def test_a_chat_may_get_its_answers_in_the_language_spoken(
    stack: Stack, telegram: TelegramDouble, speech: Speech
) -> None:
    chat = new_chat()
    menu = await settings_message(telegram, chat)
    await press(telegram, menu, "🌐")  # the language menu, in place of the settings
    await telegram.wait_for(lambda: "Which language" in menu.text, 30)
    await press(telegram, menu, "the language spoken")
    await telegram.wait_for(lambda: "Answer language: the language spoken" in menu.text, 30)
    voice = await telegram.send_media(chat, speech.say(RU_TEXT, voice="ru", speed=130), duration=8, language_code="en")
    answer = await answer_to(telegram, chat, voice)
    assert answer.text.startswith("📝 Расшифровка · русский"), "the user's Telegram speaks English; the note Russian"
    assert "📌 Суть" in answer.text and "🎭 Тон" in answer.text


async def test_a_vocabulary_too_long_is_cut_at_a_word_and_the_user_is_told_where(
    stack: Stack, telegram: TelegramDouble
) -> None:
    chat = new_chat()
    names = [f"Name{i:03d} Surname{i:03d}" for i in range(40)]  # 18 characters each, and ", " between
    await telegram.send_text(chat, "/vocabulary " + ", ".join(names))
    await telegram.wait_for(lambda: len(telegram.messages(chat)) == 1, 30)
    said = telegram.messages(chat)[0].text
    kept = said.splitlines()[0].removeprefix("📚 Vocabulary: ")
    assert len(kept) <= 300 and kept.split(", ") == names[:15], "whole words, within the limit"
    assert "300" in said and "everything from “Name015” on was left out" in said, said
    menu = await settings_message(telegram, chat)
    assert f"Vocabulary: {kept}" in menu.text


# --- the buttons ------------------------------------------------------------------------------------------


async def test_the_transcript_button_sends_a_txt_and_an_srt_timed_by_the_segments(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    voice = await telegram.send_media(chat, speech.say(LONG_EN_TEXT), duration=14)
    answer = await answer_of(telegram, chat)
    note = await stored_note(bus, chat, voice)
    assert len(note.transcript.segments) >= 1
    assert (await press(telegram, answer, "📄 Transcript"))["show_alert"] is False
    await telegram.wait_for(lambda: sum(m.document is not None for m in telegram.messages(chat)) == 2, 30)
    txt, srt = (m.document for m in telegram.messages(chat) if m.document is not None)
    assert txt is not None and srt is not None
    assert (txt.file_name, srt.file_name) == ("transcript.txt", "transcript.srt")
    lines = txt.content.decode().splitlines()
    cues = srt.content.decode().strip().split("\n\n")
    assert len(lines) == len(cues) == len(note.transcript.segments)
    for line, cue, segment in zip(lines, cues, note.transcript.segments):
        minutes, seconds = divmod(int(segment.start), 60)
        assert line == f"[{minutes:02d}:{seconds:02d}] {segment.text.strip()}"
        number, timing, words = cue.split("\n")
        start, end = re.fullmatch(r"(\S+) --> (\S+)", timing).groups()  # type: ignore[union-attr]
        assert start == srt_time(segment.start) and end == srt_time(segment.end) and words == segment.text.strip()
    assert all(m.reply_to == voice for m in telegram.messages(chat)[1:])


async def test_the_transcript_button_does_not_send_the_txt_the_answer_already_carries(
    stack: Stack, telegram: TelegramDouble, speech: Speech
) -> None:
    """A chat that takes its transcripts as files has `transcript.txt` with the answer: the button adds the
    subtitles, not a second copy of the same file."""
    chat = new_chat()
    menu = await settings_message(telegram, chat)
    await press(telegram, menu, "📝 Transcript")  # in the message → as a file
    await telegram.wait_for(lambda: "Transcript: as a file" in menu.text, 30)
    voice = await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9)
    answer = await answer_to(telegram, chat, voice)
    await telegram.wait_for(lambda: any(m.document is not None for m in telegram.messages(chat)), 30)
    await press(telegram, answer, "📄 Transcript")
    await telegram.wait_for(lambda: sum(m.document is not None for m in telegram.messages(chat)) >= 2, 30)
    await asyncio.sleep(1)
    names = [m.document.file_name for m in telegram.messages(chat) if m.document is not None]
    assert names == ["transcript.txt", "transcript.srt"], names


async def test_a_press_handled_too_late_to_answer_still_does_its_work_once(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    """Telegram takes a press's answer for ~15 s; a press handled later (a backlog) still sends its files, once,
    and its late answer is not an error that fails the press."""
    chat = new_chat()
    voice = await telegram.send_media(chat, speech.say(EN_TEXT), duration=9)
    answer = await answer_to(telegram, chat, voice)
    await stored_note(bus, chat, voice)
    logged = len(stack.output())
    telegram.callback_ttl = 0.0
    try:
        await telegram.press(chat, answer.message_id, answer.button("📄 Transcript")["callback_data"])
        await telegram.wait_for(lambda: sum(m.document is not None for m in telegram.messages(chat)) == 2, 30)
        await settled(bus, "gateway", stream="UPDATES")
    finally:
        telegram.callback_ttl = 15.0
    assert sum(m.document is not None for m in telegram.messages(chat)) == 2
    assert "rejected a message on telegram.update" not in stack.output()[logged:]


def srt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"


async def test_a_mode_button_runs_that_mode_on_the_stored_transcript_without_transcribing_again(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    openai_double.break_model("gpt-4o")  # the tone reading fails this time: the answer comes without it
    try:
        voice = await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9)
        answer = await answer_to(telegram, chat, voice)
    finally:
        openai_double.heal()
    assert "Hidden intentions" not in answer.text and "⚠️ Missing: 🎭 Tone" in answer.text
    await settled(bus)
    transcribed = (await bus.js.consumer_info(STREAM, CONSUMER_TRANSCRIBER)).delivered.consumer_seq
    before = len(openai_double.requests)

    assert (await press(telegram, answer, "▶ 🎭 Tone"))["show_alert"] is False
    await telegram.wait_for(
        lambda: len(telegram.messages(chat)) == 2 and not in_progress(telegram.messages(chat)[1].text), 120
    )
    tone = telegram.messages(chat)[1]
    assert tone.history[0] == "⏳ 🎭 Tone…"
    assert tone.reply_to == voice and "🎭 Tone" in tone.text and "Hidden intentions" in tone.text
    assert "📝 Transcript" not in tone.text, "the transcript is above already"
    assert [r["model"] for r in openai_double.requests[before:]] == ["gpt-4o"]
    await settled(bus)
    assert (await bus.js.consumer_info(STREAM, CONSUMER_TRANSCRIBER)).delivered.consumer_seq == transcribed
    again = await press(telegram, answer, "▶ 🎭 Tone")
    assert "Already done" in again["text"] and "below" in again["text"], "the re-run answered below this answer"
    assert len(telegram.messages(chat)) == 2


async def test_buttons_of_a_note_no_longer_kept_say_so(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    voice = await telegram.send_media(chat, speech.say(EN_TEXT), duration=9)
    answer = await answer_of(telegram, chat)
    await stored_note(bus, chat, voice)
    await bus.erase("voice-notes", f"{chat_key(KEY, chat)}.{correlation_id(KEY, chat, voice)}")  # its day is over
    told = await press(telegram, answer, "📄 Transcript")
    assert told["show_alert"] and "no longer kept" in told["text"]


# --- the answer as it gets ready ------------------------------------------------------------------------


async def test_the_transcript_shows_before_the_analyses_and_the_note_ends_as_one_answer(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    openai_double.latency = 4.0  # the models are slow today; the transcript is not
    try:
        await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9)
        answer = await answer_of(telegram, chat, timeout=180)
    finally:
        openai_double.latency = 0.0
    await settled(bus)
    assert answered_once(answer) and len(telegram.messages(chat)) == 1
    shown = answer.history[1]
    assert "📝 Transcript" in shown and "budget" in shown.lower()
    assert "⏳ Still working on: 📌 The gist, 🎭 Tone" in shown and "Summary" not in shown, "titles, never names"
    assert answer.times[1] + 2.0 < answer.times[-1], "the transcript came seconds before the full answer"
    assert "📌 The gist" in answer.text and "🎭 Tone" in answer.text and "⏳" not in answer.text


# --- the user's data ------------------------------------------------------------------------------------


async def test_forget_leaves_nothing_of_the_chat_in_any_bucket_or_stream(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    await telegram.send_text(chat, "/vocabulary Kubernetes, Tbilisi")
    await telegram.wait_for(lambda: len(telegram.messages(chat)) == 1, 30)
    # A mode of the chat's own: kept by the registrar, its requests and results on a stream of their own.
    await telegram.send_text(chat, "/newmode DATES 📅 Dates\nList every date and deadline mentioned, with who.")
    await telegram.wait_for(lambda: telegram.messages(chat)[-1].text.startswith("✅"), 60)
    voice = await telegram.send_media(chat, speech.say(fresh(LONG_EN_TEXT)), duration=14)
    answer = await answer_to(telegram, chat, voice, timeout=180)
    note = await stored_note(bus, chat, voice)
    await settled(bus)
    cid, chat_hash, user_hash = correlation_id(KEY, chat, voice), chat_key(KEY, chat), user_key(KEY, chat)
    traces = (cid.encode(), chat_hash.encode(), user_hash.encode(), f'"chat_id":{chat},'.encode())
    words = note.transcript.text.encode()
    digest = text_digest(note.transcript.text).encode()  # what the analysis cache's keys are made of

    def of_the_chat(items: list[tuple[str, str, bytes]]) -> list[str]:
        # A purged cache entry leaves an empty marker under its key (a hash of the transcript) for the cache's hour;
        # the note's answered mark says only that it was forgotten, so that its update, sent again, is not taken in.
        return [
            f"{stream}: {subject}"
            for stream, subject, data in items
            if (any(t in subject.encode() or t in data for t in traces) and not forgotten_mark(stream, data))
            or words in data
            or (digest in subject.encode() and b"'KV-Operation': 'PURGE'" not in data)
        ]

    before = of_the_chat(await everything_stored(bus))
    assert before, "the check can see what a chat leaves"
    assert any(entry.startswith(f"KV_{BUCKET_ANALYSIS_CACHE}: ") for entry in before), "and the analyses it cached"
    assert any(entry.startswith(f"KV_{BUCKET_CHAT_MODES}: ") for entry in before), "and its own modes"
    await telegram.send_text(chat, "/forget")
    await telegram.wait_for(lambda: telegram.messages(chat)[-1].text.startswith("🧹 Deleted:"), 30)
    told = telegram.messages(chat)[-1].text
    assert "analyses and audio: 1\n" in told and "this chat's settings: yes" in told, told
    deadline = time.monotonic() + 20
    while left := of_the_chat(await everything_stored(bus)):
        assert time.monotonic() < deadline, f"left behind: {left}"
        await asyncio.sleep(0.5)
    expired = await press(telegram, answer, "📄 Transcript")
    assert "no longer kept" in expired["text"]
    menu = await settings_message(telegram, chat)
    assert "Vocabulary: —" in menu.text, "settings are gone too"


async def test_privacy_says_what_is_kept_for_how_long_and_who_sees_it(stack: Stack, telegram: TelegramDouble) -> None:
    chat = new_chat()
    await telegram.send_text(chat, "/privacy")
    await telegram.wait_for(lambda: bool(telegram.messages(chat)), 30)
    said = telegram.messages(chat)[0].text
    assert "24 hours" in said and "/forget" in said and "127.0.0.1" in said  # the LLM server the bot uses
