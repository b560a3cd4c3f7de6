"""Asking the recording (issue 24) through the whole stack: a voice note answered, then questions in reply to the
answer, to the voice note itself and to an answer to a question (a follow-up), in a private chat and in a group;
a note whose day is over and one erased by `/forget`; one question's trace across the services.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from gateway.chats import chat_key
from gateway.intake import correlation_id, correlation_key
from infra.bus import Bus
from infra.bus.names import BUCKET_NOTES
from infra.domain.notes import note_key
from infra.voice.texts import text
from tests.support import LONG_EN_TEXT, TOKEN, Speech, Stack, answer_of, answer_to, new_chat, reply_to
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.otlp import OTLPReceiver
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = pytest.mark.timeout(600)

KEY = correlation_key(TOKEN)
BOT_ID = TelegramDouble.BOT_USER["id"]
_groups = iter(range(-100_900_000_001, -100_910_000_000, -1))  # this module's own
MOMENT = re.compile(r"\[\d\d:\d\d\]")


async def test_questions_about_a_recording_are_answered_from_it_and_a_follow_up_goes_on(
    stack: Stack, telegram: TelegramDouble, speech: Speech, openai_double: OpenAIDouble, otlp: OTLPReceiver
) -> None:
    chat = new_chat()
    voice = await telegram.send_media(chat, speech.say(LONG_EN_TEXT), duration=17)
    answer = await answer_of(telegram, chat)

    # In reply to the answer: drawn from what was said, with the moment.
    first = await telegram.send_text(chat, "Who will check the pricing table?", reply_to=answer.message_id)
    said = await reply_to(telegram, chat, first)
    assert said.text.startswith("💬") and "pricing table" in said.text.lower() and MOMENT.search(said.text), said.text

    # In reply to that answer: a follow-up, read with the question before it.
    second = await telegram.send_text(chat, "And with whom?", reply_to=said.message_id)
    follow = await reply_to(telegram, chat, second)
    assert "finance" in follow.text.lower(), follow.text
    asked = openai_double.requests[-1]["messages"]
    assert any("Q: Who will check the pricing table?" in m["content"] for m in asked), "the conversation so far"

    # In reply to the voice note itself, and one the recording does not answer.
    third = await telegram.send_text(chat, "When does the marketing campaign start?", reply_to=voice)
    assert "monday" in (await reply_to(telegram, chat, third)).text.lower()
    fourth = await telegram.send_text(chat, "What colour is the office cat?", reply_to=answer.message_id)
    assert "does not say" in (await reply_to(telegram, chat, fourth)).text

    # Each question answered once, and each answer a reply to its question.
    replies = [m for m in telegram.messages(chat) if m.reply_to in (first, second, third, fourth)]
    assert len(replies) == 4

    # One question is one trace: the gateway took it, an asker answered, the formatter replied.
    cid = correlation_id(KEY, chat, first)
    deadline = time.monotonic() + 30
    while True:
        roots = [s for s in otlp.spans if s.attributes.get("voice_insight.correlation_id") == cid]
        spans = otlp.trace(roots[0].trace_id) if roots else []
        if {"gateway", "asker", "formatter"} <= {s.service for s in spans}:
            break
        assert time.monotonic() < deadline, f"the question's trace: {sorted({(s.service, s.name) for s in spans})}"
        await asyncio.sleep(0.2)
    assert roots[0].name == "question receive" and roots[0].parent_id == ""
    assert any(s.service == "asker" and s.name.startswith("chat ") for s in spans), "the LLM call, in the trace"
    words = "Who will check the pricing table?"
    assert not any(words in str(s.attributes) for s in spans), "the question's words stay out of the trace"


async def test_a_question_about_a_note_whose_day_is_over_or_that_was_forgotten_is_told_so(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    expired, forgotten = new_chat(), new_chat()
    first = await telegram.send_media(expired, speech.say(LONG_EN_TEXT), duration=17)
    await telegram.send_media(forgotten, speech.say(LONG_EN_TEXT), duration=17)
    answer, other = await answer_of(telegram, expired), await answer_of(telegram, forgotten)

    # The note's day is over: the bucket let it go (as its TTL does).
    await bus.erase(BUCKET_NOTES, note_key(chat_key(KEY, expired), correlation_id(KEY, expired, first)))
    asked = await telegram.send_text(expired, "Who will review the copy?", reply_to=answer.message_id)
    assert (await reply_to(telegram, expired, asked)).text == text("ask_expired", "en")

    await telegram.send_text(forgotten, "/forget")
    await telegram.wait_for(lambda: telegram.messages(forgotten)[-1].text.startswith("🧹 Deleted:"), 30)
    asked = await telegram.send_text(forgotten, "Who will review the copy?", reply_to=other.message_id)
    assert (await reply_to(telegram, forgotten, asked)).text == text("ask_forgotten", "en")


async def test_in_a_group_a_reply_to_the_bots_answer_is_a_question(
    stack: Stack, telegram: TelegramDouble, speech: Speech
) -> None:
    group = next(_groups)  # privacy mode on, the bot no admin: it sees commands and replies to itself only
    voice = await telegram.send_media(group, speech.say(LONG_EN_TEXT), duration=17, from_user=11)
    await telegram.send_text(group, "/transcribe", reply_to=voice, from_user=12)
    answer = await answer_to(telegram, group, voice)
    asked = await telegram.send_text(group, "Who will review the copy?", reply_to=answer.message_id, from_user=13)
    reply = await reply_to(telegram, group, asked)
    assert "the copy" in reply.text.lower() and reply.silent is False, reply.text
