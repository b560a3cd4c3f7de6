"""`/forget`, the formatter's part: it keeps the chat's notes (answered ones for their buttons, failed ones as
the trail of where they lie), so it finds them, asks the other keepers to erase their parts, tells the chat what
it deletes, and erases the notes. A note still in flight at that moment is erased the same way as soon as it is
answered (`forget_if_asked`), and is never kept (`keep`). The notes the gateway refused never reached here: the
gateway names them (`ForgetChat.refused`).

In that order, so a redelivered `/forget` (a crash, Telegram away a moment) finds the same notes and says the same:
the requests to the keepers carry IDs of their own (a repeat asks nothing twice), the chat is told once (a mark
in the answered marks), and the notes, which name everything else, go last: the chat is never told "0 notes" for
notes that were deleted, nor told again while erasing is retried.

Each mode's analyzer is asked on a subject of its own (`forget.analyses.<MODE>`), every live mode's. A request no
analyzer takes expires with the analysis cache (an hour): by then the entries it names are gone anyway.
"""

from __future__ import annotations

import logging

import nats.js.errors
from aiogram import Bot
from aiogram.types import InlineKeyboardMarkup
from nats.js.kv import KeyValue

from formatter.buttons import keep_for_buttons
from formatter.join import JoinState, JoinStore
from infra.bus import Bus, Delivery, consumes
from infra.bus.names import (
    ANALYSIS_CACHE_TTL,
    BUCKET_ANSWERED,
    CONSUMER_FORMATTER_FORGET,
    STREAM_FORGET,
    SUBJECT_FORGET_CHAT,
    SUBJECT_FORGET_INTAKE,
    SUBJECT_FORGET_TRANSCRIPTS,
    forget_analyses_subject,
)
from infra.domain.contracts import ForgetAnalyses, ForgetChat, ForgetIntake, ForgetTranscripts
from infra.domain.forgotten import forgotten_since
from infra.domain.modes import live_modes
from infra.domain.notes import Forgotten, NoteStore, NoteTrail, Trail, erase_notes, find_forgotten, text_digest
from infra.domain.threads import forget_threads
from infra.voice.telegram import TELEGRAM_PERMANENT
from infra.voice.texts import text

log = logging.getLogger("voice_insight.formatter")


class ChatForgetter:
    def __init__(self, bus: Bus, bot: Bot) -> None:
        self.bus = bus
        self.bot = bot

    @consumes(SUBJECT_FORGET_CHAT, CONSUMER_FORMATTER_FORGET, stage="forget", stream=STREAM_FORGET)
    async def on_forget(self, request: ForgetChat, delivery: Delivery) -> None:
        gone = await find_forgotten(self.bus, request.chat_key)
        found = set(gone.correlation_ids)
        gone.trails += [Trail(cid) for cid in request.refused if cid not in found]
        await ask_the_keepers(self.bus, request.chat_key, gone, f"forget.{delivery.seq}")
        told = f"forget-told.{delivery.seq}"  # in the answered marks: told once, however often erasing fails
        marks = await self.bus.kv(BUCKET_ANSWERED)
        if not await _kept(marks, told):
            await self._tell(request, gone)
            await marks.put(told, b"told")
        await forget_threads(self.bus, request.chat_key)
        await erase_notes(self.bus, request.chat_key, gone)

    async def _tell(self, request: ForgetChat, gone: Forgotten) -> None:
        lang = request.ui_language
        settings = text("yes" if request.settings else "no", lang)
        said = text("forgotten", lang, count=len(gone.trails), settings=settings)
        try:
            await self.bot.send_message(request.chat_id, said, message_thread_id=request.thread_id)
        except TELEGRAM_PERMANENT as exc:  # the chat is gone, or the bot was blocked or removed: erase all the same
            log.warning("a forgotten chat could not be told (%s); its data is erased", type(exc).__name__)


async def _kept(kv: KeyValue, key: str) -> bool:
    try:
        await kv.get(key)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return False
    return True


async def ask_the_keepers(bus: Bus, chat_key: str, gone: Forgotten, asked: str, pieces: bool = True) -> None:
    """The other keepers' parts, each asked once (`asked`: the requests' IDs). `pieces`: the transcribed pieces of
    all the chat's long notes, which only a whole chat's `/forget` erases; else those of the notes `gone`, which
    were transcribed after it (a note in flight)."""
    if gone.fingerprints or pieces or gone.trails:
        notes = () if pieces else gone.correlation_ids
        transcripts = ForgetTranscripts(chat_key=chat_key, fingerprints=gone.fingerprints, pieces=pieces, notes=notes)
        await bus.publish(SUBJECT_FORGET_TRANSCRIPTS, transcripts, f"{asked}.transcripts", stream=STREAM_FORGET)
    if not gone.trails:
        return
    intake = ForgetIntake(correlation_ids=gone.correlation_ids)
    await bus.publish(SUBJECT_FORGET_INTAKE, intake, f"{asked}.intake", stream=STREAM_FORGET)
    if not gone.digests:
        return
    for mode in await live_modes(bus):
        await bus.publish(
            forget_analyses_subject(mode.mode),
            ForgetAnalyses(digests=gone.digests),
            f"{asked}.analyses.{mode.mode}",
            stream=STREAM_FORGET,
            ttl=ANALYSIS_CACHE_TTL,
        )


async def keep(bus: Bus, cid: str, state: JoinState) -> InlineKeyboardMarkup | None:
    """What is kept of a note as it is answered, and its buttons: an answered note for them (a day); of a failed
    one, where it lies, for `/forget` only (no buttons); of a note whose chat said `/forget` since, nothing."""
    origin = state.origin
    assert origin is not None
    try:
        if await forgotten_since(await bus.kv(BUCKET_ANSWERED), origin, state.received_at):
            return None
    except Exception as exc:  # the answer matters more; `forget_if_asked` looks again after it
        log.warning("%s: could not tell whether the note's chat said /forget (%s)", cid, type(exc).__name__)
    if not state.failed:
        return await keep_for_buttons(bus, cid, state)
    if origin.chat_key is not None:
        trail = NoteTrail(seqs=state.seqs, fingerprint=state.fingerprint)
        try:
            await NoteStore(bus).keep_trail(origin.chat_key, cid, trail)
        except Exception as exc:  # the answer matters more; its events expire with the day
            log.warning("%s: a failed note's trail was not kept (%s)", cid, type(exc).__name__)
    return None


async def forget_if_asked(bus: Bus, joins: JoinStore, cid: str, state: JoinState) -> bool:
    """Once a note is answered: if its chat said `/forget` while it was in flight, everything of it goes now, as a
    found note's would (`ChatForgetter`), and True; False if not, or if erasing failed (the usual clean-up then).
    Looked at after the answer, whatever `keep` saw before it: a `/forget` that came meanwhile found the note kept,
    or finds it here. Before the clean-up, since the join says where the events lie; best effort, like the rest
    of the clean-up: what is left expires with the day."""
    origin = state.origin
    if origin is None or origin.chat_key is None:
        return False
    try:
        if not await forgotten_since(await bus.kv(BUCKET_ANSWERED), origin, state.received_at):
            return False
    except Exception as exc:
        log.warning("%s: could not tell whether the note's chat said /forget (%s)", cid, type(exc).__name__)
        return False
    try:
        latest = await joins.get(cid)  # events merged while the answer went out
        seqs = tuple(sorted({*state.seqs, *(latest.seqs if latest else ())}))
        digest = text_digest(state.transcript.text) if state.transcript is not None else None
        gone = Forgotten([Trail(cid, seqs, state.fingerprint, digest)])
        await ask_the_keepers(bus, origin.chat_key, gone, f"forget-note.{cid}", pieces=False)
        await forget_threads(bus, origin.chat_key, notes=(cid,))
        await erase_notes(bus, origin.chat_key, gone)
    except Exception as exc:  # the usual clean-up then, and the rest expires with the day
        log.warning("%s: a forgotten chat's note was not erased after its answer (%s)", cid, type(exc).__name__)
        return False
    return True
