"""Taking a voice note in: status reply, limits, download, object store, `AudioReceived`.

The status message goes out first, so the user sees "listening…" within a second whatever happens next. Every
early failure edits that same message into a clear answer. Downloads stream into a spool (memory, then disk)
and from there into the object store in chunks: no file is ever held in memory whole. A note is identified by
a keyed hash of its chat and message ids: the same Telegram message always gets the same correlation ID (so a
repeated update is dropped by the stream's duplicate window and by the formatter's answered mark), and the ID
reveals neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp
import msgspec
import nats.js.errors
from aiogram import Bot
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramRetryAfter
from aiogram.types import (
    Message,
    MessageOriginChannel,
    MessageOriginChat,
    MessageOriginHiddenUser,
    MessageOriginUser,
)
from nats.js.kv import KeyValue
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import Attributes

from gateway.chats import ChatSettings, chat_key
from gateway.forget import file_refused, forget_refused_if_asked
from gateway.storage import StoreRoom
from infra.bus import Bus, Fail, Retry
from infra.bus.names import (
    BUCKET_ANSWERED,
    BUCKET_AUDIO,
    BUCKET_INTAKE,
    BUCKET_QUOTA,
    BUCKET_USERS,
    SUBJECT_AUDIO,
    SUBJECT_AUDIO_QUEUED,
)
from infra.domain import chat_modes
from infra.domain.answers import Sent, encode_mark, is_answered, read_mark
from infra.domain.chat_modes import mode_id
from infra.domain.contracts import AudioReceived, AudioRef, Origin
from infra.domain.limits import FAIR_SHARE, DailyCounter, UserLedger, note_finished, user_key
from infra.domain.modes import live_modes, mode_titles
from infra.runtime.metrics import LIMITED
from infra.runtime.settings import MAX_FILE_STORE, Limits
from infra.runtime.telemetry import record_failure, step
from infra.voice.telegram import DOWNLOAD_LIMIT, LOCAL_DOWNLOAD_LIMIT
from infra.voice.texts import duration_limit, text, ui_language

log = logging.getLogger("voice_insight.gateway")

PUBLISH_PATIENCE = 30.0
"""How long one attempt waits for NATS (restarting, failing over) before the update is retried later."""
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_TIMEOUT = 120
LOCAL_GET_FILE_TIMEOUT = 3600
"""A local Bot API server (`--local`) answers getFile only once it has the file on its disk, downloaded from
Telegram meanwhile: up to 2 GB, many minutes on an ordinary link. The usual request timeout would give up on any
file over a few hundred MB, and each try would start that download again."""
SPOOL_IN_MEMORY = 1024 * 1024
"""A download is held in memory up to this size, on disk beyond: a flood of big files cannot exhaust memory."""


class FileTooBig(Exception):
    """Telegram reports a size over the Bot API's download limit, or the bytes run past it."""


class DownloadFailed(Exception):
    """The file could not be had from Telegram; `kind` is a bounded label, never the error's text."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class Media:
    kind: Literal["voice", "audio", "video_note", "document"]
    file_id: str
    size: int | None
    duration: float | None
    mime_type: str | None
    unique_id: str = ""
    """Telegram's `file_unique_id`: the same for the same file, whoever forwards it."""

    @property
    def sound(self) -> bool:
        """Sound by what Telegram says it is (a voice note, an audio file, a round video note, a file typed
        audio/*): a note wherever notes are answered unasked. A video or any other file may hold sound too, but
        in a group it is somebody's meme or paperwork, so it is taken only when asked for."""
        return self.kind in ("voice", "audio", "video_note") or _mime(self.mime_type).startswith("audio/")

    @property
    def not_sound(self) -> bool:
        """A file whose type says plainly it holds no sound (a PDF, a picture, text, an archive): answered at once,
        never downloaded. An unknown or generic type (`application/octet-stream`) is given the benefit of the doubt:
        a voice recording often comes that way."""
        mime = _mime(self.mime_type)
        kind, _, subtype = mime.partition("/")
        if kind in NOT_SOUND_TYPES:
            return True
        return kind == "application" and any(mark in subtype for mark in NOT_SOUND_APPLICATIONS)


NOT_SOUND_TYPES = frozenset({"image", "text", "font", "model", "message"})
NOT_SOUND_APPLICATIONS = (
    "pdf",
    "zip",
    "rar",
    "7z",
    "tar",
    "gzip",
    "json",
    "xml",
    "msword",
    "ms-excel",
    "ms-powerpoint",
    "officedocument",
    "opendocument",
    "epub",
    "rtf",
    "android.package-archive",
)
"""Parts of `application/…` types that name documents, archives and data, never recordings."""


def _mime(mime_type: str | None) -> str:
    return (mime_type or "").split(";", 1)[0].strip().lower()


def speaker_of(message: Message) -> str | None:
    """Who a note is from, as Telegram names them, for the chat's digest: whom a forward is from (as far as they
    let it be known), else its sender."""
    origin = message.forward_origin
    if isinstance(origin, MessageOriginUser):
        return origin.sender_user.full_name
    if isinstance(origin, MessageOriginHiddenUser):
        return origin.sender_user_name
    if isinstance(origin, MessageOriginChat):
        return origin.sender_chat.title or origin.author_signature
    if isinstance(origin, MessageOriginChannel):
        return origin.author_signature or origin.chat.title
    if message.sender_chat is not None:  # posted as the group (an anonymous admin) or as a channel
        return message.author_signature or message.sender_chat.title
    return message.from_user.full_name if message.from_user else None


def media_of(message: Message) -> Media | None:
    if message.voice:
        v = message.voice
        return Media("voice", v.file_id, v.file_size, v.duration, v.mime_type, v.file_unique_id)
    if message.audio:
        a = message.audio
        return Media("audio", a.file_id, a.file_size, a.duration, a.mime_type, a.file_unique_id)
    if message.video_note:
        n = message.video_note
        return Media("video_note", n.file_id, n.file_size, n.duration, "video/mp4", n.file_unique_id)
    if message.video:
        video = message.video
        return Media("document", video.file_id, video.file_size, video.duration, video.mime_type, video.file_unique_id)
    if message.document:
        d = message.document
        return Media("document", d.file_id, d.file_size, None, d.mime_type, d.file_unique_id)
    return None


def correlation_key(token: str) -> bytes:
    return hashlib.sha256(b"voice-insight/correlation/" + token.encode()).digest()


def file_fingerprint(key: bytes, unique_id: str) -> str:
    """A file as the bus may know it: the same for every forward of it, and revealing nothing of Telegram's id."""
    return hmac.new(key, f"file:{unique_id}".encode(), hashlib.sha256).hexdigest()[:32]


def correlation_id(key: bytes, chat_id: int, message_id: int) -> str:
    return hmac.new(key, f"{chat_id}:{message_id}".encode(), hashlib.sha256).hexdigest()[:32]


class IntakeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What intake has done for a note so far; lets a redelivered update carry on instead of starting over."""

    status_message_id: int
    """0: an intake has claimed the note and is sending its status message (`claimed_at`)."""
    handed_over: bool = False
    claimed_at: float = 0.0
    taken_at: float = 0.0
    """When the note's status was first claimed: the moment it was taken in, kept across redeliveries (whether it
    was in flight when its chat said `/forget`); 0 in a record from before it was kept."""
    limits_checked: bool = False
    """The sender's limits were checked once; a later delivery does not check (nor count) them again."""
    refused: str | None = None
    """Intake decided to refuse the note, for this reason: every later delivery says so again, never takes it in."""
    limited: str | None = None
    """The limit that refused it (the metric's label), if a limit did."""
    values: dict[str, str] = {}
    """The numbers the refusal names (a limit's)."""


_encode_record = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(IntakeRecord).decode

CLAIM_PATIENCE = 30.0
"""Seconds a claimed note waits for its status message before another intake takes the claim over."""


async def read_record(intake: KeyValue, cid: str) -> IntakeRecord | None:
    try:
        entry = await intake.get(cid)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    return _decode_record(entry.value) if entry.value else None


async def claim_status(intake: KeyValue, cid: str, send: Callable[[], Awaitable[int]]) -> tuple[IntakeRecord, bool]:
    """The note's one status message, and whether this call sent it.

    Whoever creates the note's record (compare-and-set) sends the status; another intake of the same note (two
    `/transcribe` replies, two presses of one button) that finds the claim still without its status tries again a
    moment later (`Retry`) and then carries on with the same status message. A status that could not be sent
    releases the claim; a claim whose status never came (its intake died) is taken over after `CLAIM_PATIENCE`."""
    while True:
        try:
            entry = await intake.get(cid)
            found = _decode_record(entry.value) if entry.value else None
            revision: int | None = entry.revision
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            found, revision = None, None
        if found is not None and found.status_message_id:
            return found, False
        if found is not None and time.time() - found.claimed_at < CLAIM_PATIENCE:
            raise Retry(1.0, "another intake of this note is sending its status")
        claim = IntakeRecord(status_message_id=0, claimed_at=time.time())
        try:
            if revision is None:
                revision = await intake.create(cid, _encode_record(claim))
            else:  # claimed by an intake that died before its status went out
                revision = await intake.update(cid, _encode_record(claim), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            continue  # someone else claimed it first: look again
        try:
            status_message_id = await send()
        except BaseException:
            with contextlib.suppress(Exception):  # let the next try claim it at once; the claim expires anyway
                await intake.update(cid, _encode_record(IntakeRecord(status_message_id=0)), last=revision)
            raise
        record = IntakeRecord(status_message_id=status_message_id, taken_at=claim.claimed_at)
        try:
            await intake.update(cid, _encode_record(record), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise Retry(1.0, "the note's claim was taken over") from None
        return record, True


async def write_record(intake: KeyValue, cid: str, record: IntakeRecord) -> None:
    await intake.put(cid, _encode_record(record))


class CappedSpool:
    """A download's destination: memory up to `SPOOL_IN_MEMORY`, then a temporary file; refuses past `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)

    def write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.size > self.limit:
            raise FileTooBig()
        return self.file.write(chunk)

    def flush(self) -> None:
        self.file.flush()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def close(self) -> None:
        self.file.close()


class LocalFile:
    """A file a local Bot API server (`--local`) keeps on its disk, shared with us: read from there in chunks,
    never downloaded or copied, however big."""

    def __init__(self, path: str, limit: int) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 (closed by close(), like the spool)
        self.size = os.fstat(self.file.fileno()).st_size
        if self.size > limit:
            self.file.close()
            raise FileTooBig()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def close(self) -> None:
        self.file.close()


Source = CappedSpool | LocalFile


class Intake:
    """Idempotent intake of one note: safe to run again for the same Telegram message after a crash.

    The status message is sent once and remembered in `voice-intake` before anything slow happens; a repeat
    finds it and carries on from there. Handing over (object store, then `voice.audio` with the correlation ID
    as `Nats-Msg-Id`) is idempotent by construction. Transient failures (Telegram or NATS away) raise, and the
    update is redelivered; what can never work (too big, too long, not downloadable) ends in a clear message.
    """

    def __init__(
        self,
        bus: Bus,
        bot: Bot,
        key: bytes,
        max_audio_seconds: float,
        limits: Limits | None = None,
        local_files: bool = False,
        room: StoreRoom | None = None,
    ) -> None:
        """`local_files`: the Bot API server runs with `--local` and shares its disk: files up to 2 GB, read from
        the path `getFile` names instead of downloaded. `room`: the JetStream store's room, asked before a big file
        is stored (by default against the default cap)."""
        self.local_files = local_files
        self.download_limit = LOCAL_DOWNLOAD_LIMIT if local_files else DOWNLOAD_LIMIT
        self.bus = bus
        self.bot = bot
        self.key = key
        self.max_audio_seconds = max_audio_seconds
        self.limits = limits or Limits(allowed=None)
        self.ledger = UserLedger(bus)
        self.room = room or StoreRoom(bus, MAX_FILE_STORE)

    async def accept(self, message: Message, media: Media, settings: ChatSettings | None = None) -> None:
        """Take one voice note in; the root span of its trace."""
        attributes: Attributes = {
            "voice_insight.media.kind": media.kind,
            "voice_insight.audio.size_bytes": media.size or 0,
            "voice_insight.audio.duration_hint_seconds": float(media.duration or 0),
        }
        with step("voice_note receive", kind=SpanKind.SERVER, attributes=attributes) as span:
            await self._accept(message, media, settings or ChatSettings(), span)

    async def _accept(self, message: Message, media: Media, settings: ChatSettings, span: Span) -> None:
        arrived = time.time()
        lang = settings.words_language(message.from_user.language_code if message.from_user else None)
        cid = correlation_id(self.key, message.chat.id, message.message_id)
        span.set_attribute("voice_insight.correlation_id", cid)
        intake = await self.bus.kv(BUCKET_INTAKE)
        user = user_key(self.key, message.from_user.id) if message.from_user else None

        async def send_status() -> int:
            quiet = message.chat.type != ChatType.PRIVATE  # a group: a status is nobody's news
            return (await message.reply(text("listening", lang), disable_notification=quiet)).message_id

        def repeated() -> None:
            log.info("%s: repeated update for a note already taken in; ignored", cid)
            span.set_attribute("voice_insight.duplicate", True)

        if await is_answered(await self.bus.kv(BUCKET_ANSWERED), cid):
            return repeated()
        if media.not_sound:
            return await self._decline(message, cid, lang, span)
        record, first_time = await claim_status(intake, cid, send_status)  # a note taken in: only read
        if record.handed_over:
            return repeated()
        taken_in = record.taken_at or arrived  # by its first intake, which a redelivery carries on
        if first_time and user:
            await self._count_user(user)
        status_id = record.status_message_id

        async def refuse(reason: str, limited: str | None = None, **values: str) -> None:
            """The status message becomes the answer; `values` fill in the text (a limit's numbers). The decision
            is kept first, so a delivery after a failed edit says it again rather than take the note in. A
            refusal by a limit is counted as `limited`; any other is a failed intake (`Fail`)."""
            log.info("%s: refused at intake: %s", cid, reason)
            record_failure(span, reason)
            if record.refused is None:
                decided = msgspec.structs.replace(record, refused=reason, limited=limited, values=values)
                await write_record(intake, cid, decided)
            key = "too_big_local" if reason == "too_big" and self.local_files else reason
            answer = text(key, lang, limit=duration_limit(self.max_audio_seconds, lang), **values)
            try:
                await self.bot.edit_message_text(text=answer, chat_id=message.chat.id, message_id=status_id)
            except TelegramBadRequest as exc:
                if "not modified" not in exc.message:
                    await message.reply(answer)
            kept = await self._mark_refused(message, cid, taken_in)
            if limited:
                LIMITED.labels(limited).inc()
            elif kept:  # else its chat said /forget meanwhile: nothing of it is left to tell of
                raise Fail(reason)

        if record.refused is not None:  # decided on an earlier delivery, not said yet
            # A refusal decided before its words counted in the language's plurals named the minutes `minutes`.
            said = {("count" if name == "minutes" else name): value for name, value in record.values.items()}
            return await refuse(record.refused, limited=record.limited, **said)
        if user and not record.limits_checked:
            # Counted before checking, so a burst handled concurrently cannot slip past the limits together.
            await self.ledger.in_flight(user, cid)
            await self.ledger.taken_in(user, cid)
            if limit := await self._over_limit(user, media):
                reason, label, values = limit
                return await refuse(reason, limited=label, **values)
            record = msgspec.structs.replace(record, limits_checked=True)
            await write_record(intake, cid, record)
        if media.size is not None and media.size > self.download_limit:
            return await refuse("too_big")
        if media.duration is not None and media.duration > self.max_audio_seconds:
            return await refuse("too_long")
        # A big file near the store's cap is refused before it is downloaded: stored, it could fill the store, and
        # then no note at all gets in. The decision is kept like any refusal, so nothing of it is stored later.
        if media.size is not None and not await self.room.admits(media.size, media.duration):
            return await refuse("store_full", limited="storage")
        source: Source | None = None
        try:
            try:
                with step("telegram download", stage="download", kind=SpanKind.CLIENT) as download:
                    source = await self._download(media.file_id)
                    download.set_attribute("voice_insight.audio.size_bytes", source.size)
            except FileTooBig:
                return await refuse("too_big")
            except DownloadFailed as failed:
                log.warning("%s: download failed (%s)", cid, failed.kind)
                return await refuse("download_failed")
            if source.size > (media.size or 0) and not await self.room.admits(source.size, media.duration):
                return await refuse("store_full", limited="storage")  # bigger than Telegram said (or it did not)

            event = AudioReceived(
                correlation_id=cid,
                origin=Origin(
                    chat_id=message.chat.id,
                    message_id=message.message_id,
                    status_message_id=status_id,
                    ui_language=lang,
                    language_hint=message.from_user.language_code if message.from_user else None,
                    thread_id=message.message_thread_id if message.is_topic_message else None,
                    transcript_view=settings.transcript,
                    follow_speech=settings.language == "speech",
                    analyses_follow_speech=settings.analyses_follow_speech,
                    chat_key=chat_key(self.key, message.chat.id),
                    modes_off=settings.modes_off,
                    speaker=speaker_of(message),
                ),
                audio=AudioRef(
                    object_name=cid,
                    kind=media.kind,
                    mime_type=media.mime_type,
                    size=source.size,
                    duration_hint=float(media.duration) if media.duration is not None else None,
                    fingerprint=file_fingerprint(self.key, media.unique_id) if media.unique_id else None,
                ),
                modes=(),
                received_at=taken_in,
                user_key=user,
                vocabulary=settings.vocabulary or None,
            )
            await self._hand_over(event, source, settings)
        finally:
            if source is not None:
                source.close()
        await write_record(intake, cid, msgspec.structs.replace(record, handed_over=True))
        log.info("%s: accepted %s, %d bytes", cid, media.kind, source.size)

    async def _decline(self, message: Message, cid: str, lang: str, span: Span) -> None:
        """A file that is plainly not sound gets its answer at once, with no "Listening…" before it and nothing
        downloaded, stored or counted against the sender. That answer is the note's one status message, claimed
        like any, so a redelivered update does not say it twice."""
        intake = await self.bus.kv(BUCKET_INTAKE)

        async def send_answer() -> int:
            return (await message.reply(text("not_audio", lang))).message_id

        record, _ = await claim_status(intake, cid, send_answer)
        if record.refused is None:
            await write_record(intake, cid, msgspec.structs.replace(record, refused="not_audio"))
        log.info("%s: declined at intake: not sound by its type", cid)
        span.set_attribute("voice_insight.declined", "not_audio")
        await self._mark_refused(message, cid, record.taken_at or time.time())

    async def answered(self, message: Message) -> Literal["answered", "forgotten"] | None:
        """Whether this note is answered already (taken in again it would not be: one who asks for it again is told
        where its answer is), or was, and then erased by its chat's `/forget` (its mark keeps it answered for the
        mark's day: one who asks for it is told to send it anew)."""
        mark, _ = await read_mark(
            await self.bus.kv(BUCKET_ANSWERED), correlation_id(self.key, message.chat.id, message.message_id)
        )
        if not isinstance(mark, Sent):
            return None
        return "forgotten" if mark.outcome == "forgotten" else "answered"

    async def abandon(self, message: Message) -> bool:
        """Intake failed for good: turn the note's status message into an apology, unless it already holds the
        answer (a refusal). False if no status message was sent."""
        cid = correlation_id(self.key, message.chat.id, message.message_id)
        record = await read_record(await self.bus.kv(BUCKET_INTAKE), cid)
        if record is None:  # never claimed, or answered and then forgotten with its chat: nothing to say then
            return await is_answered(await self.bus.kv(BUCKET_ANSWERED), cid)
        if record.handed_over:
            return True
        if not record.status_message_id:
            return False  # claimed, but its status never went out
        if await is_answered(await self.bus.kv(BUCKET_ANSWERED), cid):
            return True
        lang = ui_language(message.from_user.language_code if message.from_user else None)
        await self.bot.edit_message_text(
            text=text("internal", lang), chat_id=message.chat.id, message_id=record.status_message_id
        )
        await self._mark_refused(message, cid, record.taken_at or None)
        return True

    async def _over_limit(self, user: str, media: Media) -> tuple[str, str, dict[str, str]] | None:
        """The first of this user's limits the note would pass, if any (see `infra.domain.limits`): the message to
        show, the metric's label, and the numbers the message names."""
        limits = self.limits
        if limits.max_pending and (pending := await self.ledger.pending(user)) > limits.max_pending:
            return "busy", "pending", {"count": str(pending - 1)}
        if limits.per_minute and await self.ledger.recent(user) > limits.per_minute:
            return "slow_down", "per_minute", {}
        used = await DailyCounter(await self.bus.kv(BUCKET_QUOTA)).get(user)
        if used + float(media.duration or 0) > limits.daily_minutes * 60:
            return "quota", "quota", {"count": f"{limits.daily_minutes:g}"}
        return None

    async def _count_user(self, user: str) -> None:
        """Active users are counted from keyed hashes under a 24 h TTL: countable, never reversible."""
        try:
            users = await self.bus.kv(BUCKET_USERS)
            await users.put(user, b"")
        except Exception as exc:
            log.warning("could not count an active user (%s)", type(exc).__name__)

    async def _mark_refused(self, message: Message, cid: str, taken_in: float | None) -> bool:
        """A note refused here is answered too: a repeated update must not be refused a second time. Filed under
        its chat first, so `/forget` finds it (`gateway.forget`). False if its chat said `/forget` since the note
        was taken in (`taken_in`): then nothing of it is kept, and its mark says only that it was forgotten."""
        chat = chat_key(self.key, message.chat.id)
        await file_refused(self.bus, chat, cid)
        kept = not await forget_refused_if_asked(self.bus, chat, cid, message.message_id, taken_in)
        if kept:
            answered = await self.bus.kv(BUCKET_ANSWERED)
            await answered.put(cid, encode_mark(Sent(outcome="refused")))
        await note_finished(self.bus, cid)
        return kept

    async def _download(self, file_id: str) -> Source:
        """The file, spooled from the Bot API (memory, then disk) or, from a local Bot API server, opened where
        it lies; transient failures are retried a few times before giving up.

        Errors are reduced to their kind: aiohttp's messages quote the file URL, and that URL holds the token.
        """
        for attempt in range(DOWNLOAD_ATTEMPTS):
            asked = time.monotonic()
            try:
                file = await self.bot.get_file(
                    file_id, request_timeout=LOCAL_GET_FILE_TIMEOUT if self.local_files else None
                )
                if file.file_size is not None and file.file_size > self.download_limit:
                    raise FileTooBig()
                if file.file_path is None:
                    raise DownloadFailed("no_file_path")
                if self.local_files and os.path.isabs(file.file_path):
                    try:
                        return await asyncio.to_thread(LocalFile, file.file_path, self.download_limit)
                    except FileNotFoundError:
                        raise DownloadFailed("local_file_not_shared") from None  # the volume is not mounted here
                    except PermissionError:
                        # TDLib keeps the server's files 0600 in 0700 folders: only its user may read them.
                        log.error(
                            "the local Bot API server's file is not readable by uid %d: run the gateway as the "
                            "server's user (compose: 101:101, as the aiogram/telegram-bot-api image runs it)",
                            os.getuid(),
                        )
                        raise DownloadFailed("local_file_unreadable") from None
                spool = CappedSpool(self.download_limit)
                try:
                    await self.bot.download_file(file.file_path, destination=spool, timeout=DOWNLOAD_TIMEOUT)  # type: ignore[arg-type]
                except BaseException:
                    spool.close()
                    raise
                return spool
            except (FileTooBig, DownloadFailed):
                raise
            except TelegramBadRequest as exc:
                if "too big" in exc.message.lower():
                    raise FileTooBig() from None
                raise DownloadFailed("bad_request") from None
            except TelegramRetryAfter as exc:
                kind, delay = "flood_control", float(exc.retry_after)
            except aiohttp.ClientResponseError as exc:
                if exc.status < 500 and exc.status != 429:
                    raise DownloadFailed(f"http_{exc.status}") from None
                kind, delay = f"http_{exc.status}", 1.0 * 2**attempt
            except (TimeoutError, TelegramAPIError, aiohttp.ClientError, OSError) as exc:
                if self.local_files and time.monotonic() - asked >= LOCAL_GET_FILE_TIMEOUT - 1:
                    raise DownloadFailed("local_download_timeout") from None  # an hour: another would be hours
                kind, delay = type(exc).__name__, 1.0 * 2**attempt
            if attempt == DOWNLOAD_ATTEMPTS - 1:
                raise DownloadFailed(kind)
            await asyncio.sleep(delay)
        raise DownloadFailed("no_attempt")

    async def _hand_over(self, event: AudioReceived, spool: Source, settings: ChatSettings) -> None:
        """Store the bytes, then publish; retried while NATS is briefly away (restart, leader change).

        If NATS stays away, the exception reaches the update consumer and the update is redelivered later:
        the note waits, it is not refused.
        """
        deadline = asyncio.get_running_loop().time() + PUBLISH_PATIENCE
        delay = 0.25
        while True:
            try:
                store = await self.bus.audio_store()
                attributes: Attributes = {
                    "voice_insight.bucket": BUCKET_AUDIO,
                    "voice_insight.audio.size_bytes": spool.size,
                }
                with step("object_store put", kind=SpanKind.CLIENT, attributes=attributes):
                    spool.seek(0)
                    # Read in chunks, never whole (nats-py takes any reader; its annotation says less).
                    await store.put(event.audio.object_name, spool.file)  # type: ignore[arg-type]
                modes = [m for m in await live_modes(self.bus) if settings.wants(m.mode)]
                own = [
                    m
                    for m in await chat_modes.for_note(self.bus, event.origin.chat_key)
                    if settings.wants(mode_id(m.name))
                ]
                ready = msgspec.structs.replace(
                    event,
                    modes=(*(m.mode for m in modes), *(mode_id(m.name) for m in own)),
                    titles={**mode_titles(modes), **chat_modes.note_titles(own)},
                )
                subject = SUBJECT_AUDIO
                # Fair order: a user's notes beyond their share (this one included) wait behind everyone
                # else's first ones.
                if event.user_key and await self.ledger.pending(event.user_key) > FAIR_SHARE:
                    subject = SUBJECT_AUDIO_QUEUED
                await self.bus.publish(subject, ready, msg_id=event.correlation_id)
                return
            except Exception as exc:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                log.warning("%s: bus unavailable (%s); retrying", event.correlation_id, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)
