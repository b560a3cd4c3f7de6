"""The buttons under an answer: the transcript as files, and another mode run on the note's stored transcript.

Both read the note the formatter kept for a day (`infra.domain.notes`), asked of the formatter by its exact key;
a button of a note past its day, or of a chat that said `/forget`, says so instead of failing. Running a mode
publishes `AnalysesRequested` and the stored transcript under a new correlation ID derived from the note and the
mode: the analyzers and the formatter treat it like any note (nothing is transcribed again), a second press of the
same button asks nothing twice, and its answer comes as a reply to the voice note.
"""

from __future__ import annotations

import hashlib
import logging
import time

import msgspec
from aiogram import Bot, Router
from aiogram.types import BufferedInputFile, CallbackQuery, Message, ReplyParameters

from gateway.chats import chat_key
from gateway.intake import claim_status, write_record
from infra.bus import Bus
from infra.bus.names import BUCKET_ANSWERED, BUCKET_INTAKE, SUBJECT_RERUN, SUBJECT_TRANSCRIPT
from infra.domain.answers import is_answered
from infra.domain.contracts import AnalysesRequested
from infra.domain.modes import live_modes
from infra.domain.notes import StoredNote, ask_for_note
from infra.voice.buttons import ModePress, Pressed, TranscriptPress
from infra.voice.telegram import answer_press
from infra.voice.texts import text
from infra.voice.transcript_files import as_srt, as_text

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


async def on_transcript_press(
    query: CallbackQuery, press: TranscriptPress, bot: Bot, bus: Bus, key: bytes, lang: str
) -> None:
    found = await _note(query, bus, key, press, lang)
    if found is None:
        return
    message, note = found
    reply = ReplyParameters(message_id=note.origin.message_id, allow_sending_without_reply=True)
    files = (
        ("transcript.txt", as_text(note.transcript), text("transcript_file_caption", lang)),
        ("transcript.srt", as_srt(note.transcript), text("subtitles_caption", lang)),
    )
    for name, content, caption in files:
        await bot.send_document(
            chat_id=message.chat.id,
            document=BufferedInputFile(content.encode(), filename=name),
            caption=caption,
            message_thread_id=note.origin.thread_id,
            reply_parameters=reply,
        )
    await answer_press(query)


async def on_mode_press(query: CallbackQuery, press: ModePress, bot: Bot, bus: Bus, key: bytes, lang: str) -> None:
    found = await _note(query, bus, key, press, lang)
    if found is None:
        return
    message, note = found
    if press.index >= len(note.offered):
        await answer_press(query, text("note_expired", lang), alert=True)
        return
    mode = note.offered[press.index]
    live = {m.mode: m for m in await live_modes(bus)}
    if mode not in live:
        await answer_press(query, text("mode_not_live", lang, mode=mode), alert=True)
        return
    cid = rerun_id(press.note, mode)
    if await is_answered(await bus.kv(BUCKET_ANSWERED), cid):
        await answer_press(query, text("already_there", lang))
        return
    intake = await bus.kv(BUCKET_INTAKE)

    async def send_status() -> int:
        title = live[mode].titles.get(lang) or live[mode].title
        status = await bot.send_message(
            chat_id=message.chat.id,
            text=text("rerun_status", lang, mode=title),
            message_thread_id=note.origin.thread_id,
            reply_parameters=ReplyParameters(message_id=note.origin.message_id, allow_sending_without_reply=True),
        )
        return status.message_id

    record, _ = await claim_status(intake, cid, send_status)  # one status message, however often it is pressed
    origin = msgspec.structs.replace(note.origin, status_message_id=record.status_message_id, transcript_view="off")
    asked = AnalysesRequested(correlation_id=cid, origin=origin, modes=(mode,), of_note=press.note)
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
