"""The whole product through its real processes: `voice-insight up`, a real NATS, real Whisper.

Every assertion is about what the user sees in the chat (through the Bot API double), or what the LLM was
asked (through the OpenAI double).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import nats.js.errors
import pytest

from gateway.intake import correlation_id, correlation_key
from infra.bus import Bus, encode
from infra.bus.names import BUCKET_MODES, STREAM
from infra.domain.contracts import ModeInfo
from tests.support import (
    EN_TEXT,
    LONG_EN_TEXT,
    MAX_AUDIO_SECONDS,
    RU_TEXT,
    TOKEN,
    Speech,
    Stack,
    answer_of,
    answered_once,
    final,
    fresh,
    in_progress,
    new_chat,
    settled,
    until_health,
)
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = pytest.mark.timeout(600)


async def test_english_voice_note_gets_transcript_summary_and_tone(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    before = len(openai_double.requests)
    await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9, language_code="en")

    answer = await answer_of(telegram, chat)
    assert answer.history[0] == "🎧 Listening…"
    text = answer.text
    assert text.startswith("📝 Transcript · English")
    for word in ("budget", "Thursday", "sales report", "Wednesday"):
        assert word.lower() in text.lower()
    # DEFAULT and TONE, in that order, with what the LLM made of this very transcript.
    gist, tone = text.index("📌 The gist"), text.index("🎭 Tone")
    assert gist < tone
    assert "Summary: summary: Hello team" in text
    assert "Key points:" in text and "• key_points 1: Hello team" in text
    assert "Hidden intentions: hidden_intentions: Hello team" in text
    assert "How best to reply:" in text
    assert "Missing" not in text

    # The reasoning model got max_completion_tokens and no temperature; gpt-4o got both classic knobs.
    calls = {r["model"]: r for r in openai_double.requests[before:]}
    assert set(calls) == {"o3", "gpt-4o"}
    assert "max_tokens" not in calls["o3"] and "temperature" not in calls["o3"]
    assert calls["o3"]["max_completion_tokens"] >= 1000
    assert calls["gpt-4o"]["max_tokens"] == 500 and calls["gpt-4o"]["temperature"] == 0.7
    assert all(r["response_format"]["type"] == "json_schema" for r in calls.values())

    await settled(bus)
    messages = final(telegram, chat)
    assert len(messages) == 1, "exactly one answer, in the status message"
    assert answered_once(messages[0]), "the status message ends as the answer, once"


async def test_russian_voice_note_is_answered_in_russian(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    await telegram.send_media(chat, speech.say(RU_TEXT, voice="ru", speed=130), duration=8, language_code="ru")

    answer = await answer_of(telegram, chat)
    assert answer.history[0] == "🎧 Слушаю…"
    text = answer.text.lower().replace("ё", "е")
    assert text.startswith("📝 расшифровка · русский")
    # Synthetic Russian is hard for `base`: a few robust words, not the whole sentence.
    assert "привет" in text and "позвони" in text and "проект" in text
    assert "📌 суть" in text and "резюме:" in text and "основные пункты:" in text
    assert "🎭 тон" in text and "скрытые намерения:" in text and "как лучше ответить:" in text
    await settled(bus)
    assert len(final(telegram, chat)) == 1


async def test_a_round_video_note_is_transcribed(stack: Stack, telegram: TelegramDouble, speech: Speech) -> None:
    chat = new_chat()
    await telegram.send_media(
        chat, speech.video_note("Please call me back about the invoice."), kind="video_note", duration=4
    )
    text = (await answer_of(telegram, chat)).text
    assert "invoice" in text.lower() and "🎭 Tone" in text


async def test_commands_explain_the_bot_and_list_live_modes(stack: Stack, telegram: TelegramDouble) -> None:
    chat = new_chat()
    await telegram.send_text(chat, "/start", language_code="en")
    await telegram.wait_for(lambda: len(telegram.messages(chat)) == 1, 30)
    assert "Forward me a voice message" in telegram.messages(chat)[0].text

    await telegram.send_text(chat, "/help", language_code="ru")
    await telegram.wait_for(lambda: len(telegram.messages(chat)) == 2, 30)
    assert (
        "Как пользоваться" in telegram.messages(chat)[1].text
        and f"до {MAX_AUDIO_SECONDS} с звучания" in telegram.messages(chat)[1].text
    )
    helped = telegram.messages(chat)[1].text  # the three ways beyond one note: ask it, a digest, a mode of one's own
    assert all(command in helped for command in ("/digest", "/newmode", "/chatmodes", "/dropmode")), helped

    await telegram.send_text(chat, "/list_modes", language_code="en")
    await telegram.wait_for(lambda: len(telegram.messages(chat)) == 3, 30)
    listing = telegram.messages(chat)[2].text
    assert "📌 The gist · o3" in listing and "🎭 Tone · gpt-4o" in listing
    assert "DEFAULT" not in listing and "TONE" not in listing, "users see titles, not the modes' internal names"

    await telegram.send_text(chat, "what can you do?", language_code="en")
    await telegram.wait_for(lambda: len(telegram.messages(chat)) == 4, 30)
    assert "I understand voice messages" in telegram.messages(chat)[3].text


async def test_a_file_that_is_not_audio_gets_a_clear_answer(stack: Stack, telegram: TelegramDouble) -> None:
    chat = new_chat()
    await telegram.send_media(
        chat, b"%PDF-1.4\n" + bytes(range(256)) * 40, kind="document", mime_type="application/pdf", file_name="x.pdf"
    )
    answer = await answer_of(telegram, chat)
    assert answer.text.startswith("😕 I could not read this file as sound")


async def test_corrupt_audio_gets_a_clear_answer_and_the_next_note_still_works(
    stack: Stack, telegram: TelegramDouble, speech: Speech
) -> None:
    chat = new_chat()
    good = speech.say("Short test message about the budget.")
    corrupt = good[:64] + bytes(len(good) - 64)  # a valid Ogg header, then zeros
    await telegram.send_media(chat, corrupt, duration=3, language_code="ru")
    answer = await answer_of(telegram, chat)
    assert answer.text.startswith(("😕 Не получилось прочитать", "🤫 В этой записи не слышно речи"))

    await telegram.send_media(chat, good, duration=3, language_code="en")
    await telegram.wait_for(
        lambda: len(telegram.messages(chat)) == 2 and not in_progress(telegram.messages(chat)[1].text), 120
    )
    assert "budget" in telegram.messages(chat)[1].text.lower()


async def test_silence_is_not_transcribed_into_invented_text(
    stack: Stack, telegram: TelegramDouble, speech: Speech
) -> None:
    chat = new_chat()
    await telegram.send_media(chat, speech.lavfi("anullsrc=r=16000:cl=mono", 6), duration=6)
    assert (await answer_of(telegram, chat)).text.startswith("🤫 I could not hear any speech")

    chat = new_chat()
    quiet_noise = speech.lavfi("anoisesrc=color=brown:amplitude=0.02:seed=7", 6)
    await telegram.send_media(chat, quiet_noise, duration=6)
    assert (await answer_of(telegram, chat)).text.startswith("🤫 I could not hear any speech")


async def test_over_long_audio_is_refused(stack: Stack, telegram: TelegramDouble, speech: Speech) -> None:
    # Telegram tells us the duration: refused before downloading anything.
    chat = new_chat()
    await telegram.send_media(chat, speech.say("hello"), duration=MAX_AUDIO_SECONDS + 60)
    assert (await answer_of(telegram, chat)).text.startswith(f"⏱ This recording is longer than {MAX_AUDIO_SECONDS} s,")

    # A document does not say: the transcriber measures it.
    chat = new_chat()
    long_tone = speech.lavfi("sine=frequency=440:sample_rate=16000", MAX_AUDIO_SECONDS + 10)
    await telegram.send_media(chat, long_tone, kind="document", mime_type="audio/ogg", language_code="ru")
    assert (await answer_of(telegram, chat)).text.startswith("⏱ Запись длиннее")


async def test_files_over_the_bot_api_download_limit_are_refused(
    stack: Stack, telegram: TelegramDouble, speech: Speech
) -> None:
    chat = new_chat()
    message_id = await telegram.send_media(
        chat, speech.say("hello"), kind="audio", reported_size=25 * 1024 * 1024, mime_type="audio/mpeg"
    )
    answer = await answer_of(telegram, chat)
    assert answer.text.startswith("📦 The file is over 20 MB")
    file_id = telegram.sent_updates[message_id]["message"]["audio"]["file_id"]
    gets = [p for m, p in telegram.calls if m.lower() == "getfile"]
    assert not any(p.get("file_id") == file_id for p in gets), "refused without asking for the file"


async def test_one_failing_mode_still_gets_an_answer_with_a_note(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, bus: Bus
) -> None:
    openai_double.break_model("gpt-4o", status=500)
    chat = new_chat()
    await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9)
    text = (await answer_of(telegram, chat)).text
    assert "budget" in text.lower() and "📌 The gist" in text
    assert "Hidden intentions" not in text
    assert "⚠️ Missing: 🎭 Tone" in text, "named by its title"
    await settled(bus)
    assert len(final(telegram, chat)) == 1


async def test_a_dead_llm_still_gets_the_transcript_out(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech
) -> None:
    openai_double.fail_next(1000, status=503)
    chat = new_chat()
    await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9, language_code="ru")
    text = (await answer_of(telegram, chat)).text
    assert "budget" in text.lower()
    assert "⚠️ Нет результата: 📌 Суть, 🎭 Тон" in text


async def test_transient_llm_errors_are_retried(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech
) -> None:
    openai_double.fail_next(2, status=429)
    chat = new_chat()
    await telegram.send_media(chat, speech.say(fresh(EN_TEXT)), duration=9)
    text = (await answer_of(telegram, chat)).text
    assert "📌 The gist" in text and "🎭 Tone" in text and "Missing" not in text


async def test_a_mode_that_never_answers_is_cut_off_at_the_join_deadline(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    kv = await bus.kv(BUCKET_MODES)
    ghost = ModeInfo(
        mode="GHOST", title="Ghost", model="none", max_tokens=1, temperature=None, timeout=1, structured_output=False
    )
    await kv.put("GHOST", encode(ghost))  # live when the note arrives, but nobody will ever answer
    try:
        chat = new_chat()
        await telegram.send_media(chat, speech.say(EN_TEXT), duration=9)
        text = (await answer_of(telegram, chat)).text
    finally:
        await kv.delete("GHOST")
    assert "📌 The gist" in text and "🎭 Tone" in text
    assert "⚠️ Missing: Ghost" in text


async def test_redelivered_and_repeated_events_do_not_answer_twice(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    message_id = await telegram.send_media(chat, speech.say(EN_TEXT), duration=9)
    await answer_of(telegram, chat)
    await settled(bus)
    cid = correlation_id(correlation_key(TOKEN), chat, message_id)

    # Replay every event of that note under fresh message ids (past the duplicate window's reach), as a
    # redelivery after a crash would...
    info = await bus.js.stream_info(STREAM)
    replayed = 0
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            stored = await bus.js.get_msg(STREAM, seq)
        except nats.js.errors.NotFoundError:
            continue
        if cid.encode() in (stored.data or b""):
            await bus.js.publish(stored.subject, stored.data, headers={"Nats-Msg-Id": f"replay-{seq}"})
            replayed += 1
    assert replayed == 4, "audio, transcript and two analyses"
    # ...and the user's update again, as Telegram does when a bot restarts before confirming its offset.
    await telegram.redeliver(message_id)
    await telegram.wait_for(lambda: not telegram.updates, 30)

    await settled(bus)
    await settled(bus, "formatter-deadline")
    await settled(bus, "transcriber")
    messages = final(telegram, chat)
    assert len(messages) == 1 and answered_once(messages[0]), "still exactly one answer"


async def test_a_transcriber_killed_mid_work_loses_nothing(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    chat = new_chat()
    await telegram.send_media(chat, speech.say(LONG_EN_TEXT), duration=25)
    deadline = time.monotonic() + 60
    while (await bus.js.consumer_info(STREAM, "transcriber")).num_ack_pending == 0:  # it is working on it now
        assert time.monotonic() < deadline, "the transcriber never took the note"
        await asyncio.sleep(0.05)
    os.kill(stack.child("transcriber"), signal.SIGKILL)

    answer = await answer_of(telegram, chat, timeout=180)  # after the ack wait, the restarted one redoes it
    assert "marketing campaign" in answer.text.lower() and "🎭 Tone" in answer.text
    assert "transcriber   | exited with -9; restarting" in stack.output()
    await settled(bus)
    assert len(final(telegram, chat)) == 1 and answered_once(final(telegram, chat)[0])


async def test_a_restarted_nats_loses_nothing(
    stack: Stack, telegram: TelegramDouble, speech: Speech, nats_server, bus: Bus
) -> None:
    audio = speech.say(EN_TEXT)
    health = f"http://127.0.0.1:{stack.port('gateway')}/health"
    nats_server.stop()
    chat = new_chat()
    await telegram.send_media(chat, audio, duration=9)  # arrives while NATS is down
    await until_health(health, 503, "not connected to NATS")
    nats_server.start()
    await until_health(health, 200, "ok")
    answer = await answer_of(telegram, chat, timeout=180)
    assert "budget" in answer.text.lower() and "🎭 Tone" in answer.text

    chat = new_chat()
    await telegram.send_media(chat, audio, duration=9)  # and after it is back
    assert "budget" in (await answer_of(telegram, chat)).text.lower()
    await settled(bus)
    assert len(final(telegram, chat)) == 1
