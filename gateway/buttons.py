"""The buttons under an answer: the transcript as files, and another mode run on the note's stored transcript.

Both read the note the formatter kept for a day (`infra.domain.notes`), asked of the formatter by its exact key;
a button of a note past its day, or of a chat that said `/forget`, says so instead of failing. Running a mode
publishes `AnalysesRequested` and the stored transcript under a new correlation ID derived from the note and the
mode: the analyzers and the formatter treat it like any note (nothing is transcribed again), a second press of the
same button asks nothing twice, and its answer comes as a reply to the voice note.

A press posts to the whole chat (a colleague's tone read out, two files), so in a group only the note's sender
(its `user_key`) and the group's admins may press; anyone else is told who may, and nothing is posted. A mode the
chat has switched off since is not run, and the transcript's files go out once per voice note (a mark in the
intake bucket, claimed like a status message): a later press, or one at the same moment, is told where they are.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

import msgspec
from aiogram import Bot, Router
from aiogram.enums import ChatType
from aiogram.types import BufferedInputFile, CallbackQuery, Message, ReplyParameters

from gateway.chat_settings import may_change
from gateway.chats import ChatSettings, chat_key
from gateway.intake import claim_status, correlation_id, write_record
from infra.bus import Bus
from infra.bus.names import BUCKET_ANSWERED, BUCKET_INTAKE, SUBJECT_RERUN, SUBJECT_TRANSCRIPT
from infra.domain.answers import is_answered
from infra.domain.contracts import AnalysesRequested
from infra.domain.limits import user_key
from infra.domain.modes import live_modes, mode_titles
from infra.domain.notes import StoredNote, ask_for_note, files_mark
from infra.voice.buttons import ModePress, Pressed, TranscriptPress
from infra.voice.telegram import answer_press
from infra.voice.texts import text
from infra.voice.transcript_files import as_srt, as_text, attached_to_answer

log = logging.getLogger("voice_insight.gateway")


def rerun_id(note: str, mode: str) -> str:
    """The correlation ID of `mode` run again on `note`: the same for every press of that button."""
    return hashlib.sha256(f"rerun:{note}:{mode}".encode()).hexdigest()[:32]


async def _note(
    query: CallbackQuery, bus: Bus, key: bytes, press: TranscriptPress | ModePress, lang: str
) -> tuple[Message, StoredNote] | None:
    message = query.message
    if isinstance(message, Message):
        note = await ask_for_note(bus, chat_key(key, message.chat.id), press.note, press.proof)
    else:
        note = None
    if note is None or not isinstance(message, Message):
        await answer_press(query, text("note_expired", lang), alert=True)
        return None
    return message, note


async def _may_press(query: CallbackQuery, message: Message, note: StoredNote, bot: Bot, key: bytes, lang: str) -> bool:
    """Anyone in a private chat (it is theirs); in a group, the note's sender and the group's admins. Anyone else
    is told so in a toast, and nothing is posted."""
    if message.chat.type == ChatType.PRIVATE:
        return True
    if note.user_key is not None and hmac.compare_digest(note.user_key, user_key(key, query.from_user.id)):
        return True
    if await may_change(bot, message.chat, query.from_user):
        return True
    await answer_press(query, text("buttons_sender_only", lang))
    return False


def _button_title(query: CallbackQuery) -> str | None:
    """The title on the button pressed, as the chat reads it ("▶ 🎭 Tone" → "🎭 Tone")."""
    markup = query.message.reply_markup if isinstance(query.message, Message) else None
    for row in markup.inline_keyboard if markup is not None else []:
        for button in row:
            if button.callback_data == query.data:
                return button.text.removeprefix("▶").strip() or None
    return None


async def on_transcript_press(
    query: CallbackQuery, press: TranscriptPress, bot: Bot, bus: Bus, key: bytes, lang: str
) -> None:
    found = await _note(query, bus, key, press, lang)
    if found is None:
        return
    message, note = found
    if not await _may_press(query, message, note, bot, key, lang):
        return
    reply = ReplyParameters(message_id=note.origin.message_id, allow_sending_without_reply=True)
    files = [("transcript.srt", as_srt(note.transcript), text("subtitles_caption", lang))]
    if not attached_to_answer(note.origin, note.transcript):  # the answer has it already: one .txt per note
        files.insert(0, ("transcript.txt", as_text(note.transcript), text("transcript_file_caption", lang)))

    async def send_files() -> int:
        first = 0
        for name, content, caption in files:
            sent = await bot.send_document(
                chat_id=message.chat.id,
                document=BufferedInputFile(content.encode(), filename=name),
                caption=caption,
                message_thread_id=note.origin.thread_id,
                reply_parameters=reply,
            )
            first = first or sent.message_id
        return first

    # Once per voice note: a re-run's answer is of the same note (its origin's message).
    voice = correlation_id(key, message.chat.id, note.origin.message_id)
    _, sent = await claim_status(await bus.kv(BUCKET_INTAKE), files_mark(voice), send_files)
    await answer_press(query, None if sent else text("transcript_sent_already", lang))


async def on_mode_press(
    query: CallbackQuery,
    press: ModePress,
    bot: Bot,
    bus: Bus,
    key: bytes,
    lang: str,
    chat_settings: ChatSettings,
) -> None:
    found = await _note(query, bus, key, press, lang)
    if found is None:
        return
    message, note = found
    if not await _may_press(query, message, note, bot, key, lang):
        return
    if press.index >= len(note.offered):
        await answer_press(query, text("note_expired", lang), alert=True)
        return
    mode = note.offered[press.index]
    live = {m.mode: m for m in await live_modes(bus)}
    shown = (live[mode].titles.get(lang) or live[mode].title) if mode in live else (_button_title(query) or mode)
    if not chat_settings.wants(mode):  # switched off since the answer: the chat's word is the latest
        await answer_press(query, text("mode_off_here", lang, mode=shown), alert=True)
        return
    if mode not in live:
        await answer_press(query, text("mode_not_running", lang, mode=shown), alert=True)
        return
    cid = rerun_id(press.note, mode)
    if await is_answered(await bus.kv(BUCKET_ANSWERED), cid):
        await answer_press(query, text("rerun_below", lang))  # re-runs answer below the note's answer
        return
    intake = await bus.kv(BUCKET_INTAKE)

    async def send_status() -> int:
        title = live[mode].titles.get(lang) or live[mode].title
        status = await bot.send_message(
            chat_id=message.chat.id,
            text=text("rerun_status", lang, mode=title),
            message_thread_id=note.origin.thread_id,
            reply_parameters=ReplyParameters(message_id=note.origin.message_id, allow_sending_without_reply=True),
            disable_notification=message.chat.type != ChatType.PRIVATE,  # a group: a status is nobody's news
        )
        return status.message_id

    record, sent = await claim_status(intake, cid, send_status)  # one status message, however often it is pressed
    if not sent and record.handed_over:
        await answer_press(query, text("rerun_on_its_way", lang))
        return
    origin = msgspec.structs.replace(note.origin, status_message_id=record.status_message_id, transcript_view="off")
    asked = AnalysesRequested(
        correlation_id=cid,
        origin=origin,
        modes=(mode,),
        of_note=press.note,
        titles=mode_titles([live[mode]]),
    )
    await bus.publish(SUBJECT_RERUN, asked, msg_id=f"{cid}.rerun")
    again = msgspec.structs.replace(note.transcript, correlation_id=cid, modes=(mode,), published_at=time.time())
    await bus.publish(SUBJECT_TRANSCRIPT, again, msg_id=f"{cid}.transcript")
    await write_record(intake, cid, msgspec.structs.replace(record, handed_over=True))
    await answer_press(query)


def build_buttons_router() -> Router:
    router = Router(name="buttons")
    router.callback_query.register(on_transcript_press, Pressed(TranscriptPress))
    router.callback_query.register(on_mode_press, Pressed(ModePress))
    return router
