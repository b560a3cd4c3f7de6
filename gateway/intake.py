"""Taking a voice note in: status reply, limits, download, object store, `AudioReceived`.

The status message goes out first, so the user sees "listening…" within a second whatever happens next. Every
early failure edits that same message into a clear answer. A note is identified by a keyed hash of its chat
and message ids: the same Telegram message always gets the same correlation ID (so a repeated update is
dropped by the stream's duplicate window and by the formatter's answered mark), and the ID reveals neither.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import time
from dataclasses import dataclass

import msgspec
import nats.js.errors
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramNetworkError, TelegramServerError
from aiogram.types import Message
from opentelemetry.trace import Span, SpanKind

from infra.bus import BUCKET_ANSWERED, BUCKET_AUDIO, BUCKET_USERS, SUBJECT_AUDIO, Bus
from infra.contracts import AudioReceived, AudioRef, Origin
from infra.metrics import ERRORS, PROCESSED, STAGE_SECONDS
from infra.modes import live_modes
from infra.telemetry import record_failure, tracer
from infra.telegram import DOWNLOAD_LIMIT
from infra.texts import duration_limit, text, ui_language

log = logging.getLogger("voice_insight.gateway")

PUBLISH_PATIENCE = 30.0
"""How long a note waits for NATS (restarting, failing over) before the user is told to retry."""


class FileTooBig(Exception):
    """Telegram reports a size over the Bot API's download limit."""


@dataclass(frozen=True)
class Media:
    kind: str
    file_id: str
    size: int | None
    duration: float | None
    mime_type: str | None


def media_of(message: Message) -> Media | None:
    if message.voice:
        v = message.voice
        return Media("voice", v.file_id, v.file_size, v.duration, v.mime_type)
    if message.audio:
        a = message.audio
        return Media("audio", a.file_id, a.file_size, a.duration, a.mime_type)
    if message.video_note:
        n = message.video_note
        return Media("video_note", n.file_id, n.file_size, n.duration, "video/mp4")
    if message.video:
        v = message.video
        return Media("document", v.file_id, v.file_size, v.duration, v.mime_type)
    if message.document:
        d = message.document
        return Media("document", d.file_id, d.file_size, None, d.mime_type)
    return None


def correlation_key(token: str) -> bytes:
    return hashlib.sha256(b"voice-insight/correlation/" + token.encode()).digest()


def correlation_id(key: bytes, chat_id: int, message_id: int) -> str:
    return hmac.new(key, f"{chat_id}:{message_id}".encode(), hashlib.sha256).hexdigest()[:32]


class Intake:
    def __init__(self, bus: Bus, bot: Bot, key: bytes, max_audio_seconds: float) -> None:
        self.bus = bus
        self.bot = bot
        self.key = key
        self.max_audio_seconds = max_audio_seconds

    async def accept(self, message: Message, media: Media) -> None:
        """Take one voice note in; the root span of its trace."""
        attributes = {
            "voice_insight.media.kind": media.kind,
            "voice_insight.audio.size_bytes": media.size or 0,
            "voice_insight.audio.duration_hint_seconds": float(media.duration or 0),
        }
        with tracer().start_as_current_span("voice_note receive", kind=SpanKind.SERVER, attributes=attributes) as span:
            await self._accept(message, media, span)
        PROCESSED.labels("gateway", "").inc()

    async def _accept(self, message: Message, media: Media, span: Span) -> None:
        arrived = time.time()
        lang = ui_language(message.from_user.language_code if message.from_user else None)
        cid = correlation_id(self.key, message.chat.id, message.message_id)
        span.set_attribute("voice_insight.correlation_id", cid)
        if await self._already_taken(cid):
            log.info("%s: repeated update for a note already taken in; ignored", cid)
            span.set_attribute("voice_insight.duplicate", True)
            return
        status = await message.reply(text("listening", lang))
        if message.from_user:
            await self._count_user(message.from_user.id)

        async def refuse(reason: str) -> None:
            log.info("%s: refused at intake: %s", cid, reason)
            ERRORS.labels("gateway", "", reason).inc()
            record_failure(span, reason)
            await status.edit_text(text(reason, lang, limit=duration_limit(self.max_audio_seconds, lang)))
            await self._mark_answered(cid)

        if media.size is not None and media.size > DOWNLOAD_LIMIT:
            return await refuse("too_big")
        if media.duration is not None and media.duration > self.max_audio_seconds:
            return await refuse("too_long")
        try:
            started = time.perf_counter()
            with tracer().start_as_current_span("telegram download", kind=SpanKind.CLIENT) as download:
                data = await self._download(media.file_id)
                download.set_attribute("voice_insight.audio.size_bytes", len(data))
            STAGE_SECONDS.labels("download", "").observe(time.perf_counter() - started)
        except FileTooBig:
            return await refuse("too_big")
        except TelegramBadRequest as exc:
            return await refuse("too_big" if "too big" in exc.message.lower() else "download_failed")
        except (TelegramNetworkError, TelegramServerError, asyncio.TimeoutError):
            return await refuse("download_failed")
        if len(data) > DOWNLOAD_LIMIT:
            return await refuse("too_big")

        event = AudioReceived(
            correlation_id=cid,
            origin=Origin(
                chat_id=message.chat.id,
                message_id=message.message_id,
                status_message_id=status.message_id,
                ui_language=lang,
                language_hint=message.from_user.language_code if message.from_user else None,
            ),
            audio=AudioRef(
                object_name=cid, kind=media.kind, mime_type=media.mime_type, size=len(data),  # type: ignore[arg-type]
                duration_hint=float(media.duration) if media.duration is not None else None,
            ),
            modes=(),
            received_at=arrived,
        )
        try:
            await self._hand_over(event, data)
        except Exception as exc:
            log.error("%s: could not hand the note to the bus: %r", cid, exc)
            return await refuse("internal")
        log.info("%s: accepted %s, %d bytes", cid, media.kind, len(data))

    async def _already_taken(self, cid: str) -> bool:
        """Telegram repeats an update when the bot stopped before confirming it; the note may be in flight.

        If NATS cannot be asked right now, the note is treated as new: a rare duplicate status message is
        better than a user left without an answer.
        """
        try:
            answered = await self.bus.kv(BUCKET_ANSWERED)
            try:
                await answered.get(cid)
                return True
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                pass
            store = await self.bus.audio_store()
            try:
                await store.get_info(cid, show_deleted=True)
                return True
            except nats.js.errors.NotFoundError:
                return False
        except Exception as exc:
            log.warning("%s: could not check for a repeated update (%s)", cid, type(exc).__name__)
            return False

    async def _count_user(self, user_id: int) -> None:
        """Active users are counted from keyed hashes under a 24 h TTL: countable, never reversible."""
        digest = hmac.new(self.key, f"user:{user_id}".encode(), hashlib.sha256).hexdigest()[:32]
        try:
            users = await self.bus.kv(BUCKET_USERS)
            await users.put(digest, b"")
        except Exception as exc:
            log.warning("could not count an active user (%s)", type(exc).__name__)

    async def _mark_answered(self, cid: str) -> None:
        """A note refused here is answered too: a repeated update must not be refused a second time."""
        try:
            answered = await self.bus.kv(BUCKET_ANSWERED)
            await answered.put(cid, b"sent")
        except Exception as exc:
            log.warning("%s: could not mark the refusal as answered (%s)", cid, type(exc).__name__)

    async def _download(self, file_id: str) -> bytes:
        file = await self.bot.get_file(file_id)
        if file.file_size is not None and file.file_size > DOWNLOAD_LIMIT:
            raise FileTooBig()
        assert file.file_path is not None
        buffer = await self.bot.download_file(file.file_path, destination=io.BytesIO(), timeout=60)
        assert buffer is not None
        return buffer.getvalue()

    async def _hand_over(self, event: AudioReceived, data: bytes) -> None:
        """Store the bytes, then publish; retried while NATS is briefly away (restart, leader change)."""
        deadline = asyncio.get_running_loop().time() + PUBLISH_PATIENCE
        delay = 0.25
        while True:
            try:
                store = await self.bus.audio_store()
                attributes = {"voice_insight.bucket": BUCKET_AUDIO, "voice_insight.audio.size_bytes": len(data)}
                with tracer().start_as_current_span("object_store put", kind=SpanKind.CLIENT, attributes=attributes):
                    await store.put(event.audio.object_name, data)
                modes = tuple(m.mode for m in await live_modes(self.bus))
                ready = msgspec.structs.replace(event, modes=modes)
                await self.bus.publish(SUBJECT_AUDIO, ready, msg_id=event.correlation_id)
                return
            except Exception as exc:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                log.warning("%s: bus unavailable (%s); retrying", event.correlation_id, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)
