"""The bot's router: small handlers with typed arguments, filters and middlewares that hand them their context.

`HasMedia` passes the note's `media` to the handler that takes it; `EveryNote` and `MentionsMe` say when a group
is answered (every note, or on request); the middlewares of `gateway.context` give every handler `lang` and
`chat_settings`.
"""

from __future__ import annotations

import html
from typing import Any

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandStart, Filter
from aiogram.types import Message

from gateway.chat_modes import forget_chat_modes
from gateway.chat_settings import may_change
from gateway.chats import ChatSettings, ChatSettingsStore, chat_key
from gateway.digests import DigestSchedules, on_digest
from gateway.forget import ask_to_forget
from gateway.intake import Intake, Media, media_of
from gateway.questions import AsksAboutNote, on_question
from infra.bus import Bus
from infra.domain.chat_modes import modes_of
from infra.domain.contracts import ForgetChat
from infra.domain.limits import user_key
from infra.domain.modes import live_modes
from infra.voice.texts import duration_limit, text


class HasMedia(Filter):
    """Something we can transcribe: a voice note, audio, a video note, a video or a file; passed on as `media`."""

    async def __call__(self, message: Message) -> bool | dict[str, Any]:
        media = media_of(message)
        return {"media": media} if media is not None else False


class EveryNote(Filter):
    """A note the chat wants answered unasked. In a private chat, whatever was sent: sending it was the asking. In
    a group that answers every note, only sound by its type (`Media.sound`): a video or a file there is the
    group's conversation until somebody asks for it, and is never answered, not even with "not sound"."""

    async def __call__(self, message: Message, chat_settings: ChatSettings, media: Media) -> bool:
        if message.chat.type == ChatType.PRIVATE:
            return True
        return chat_settings.trigger == "every" and media.sound


class MentionsMe(Filter):
    """A message that mentions the bot by its @username (what privacy mode still lets a bot see in a group)."""

    async def __call__(self, message: Message, bot: Bot) -> bool:
        me = await bot.me()
        body = message.text or message.caption or ""
        entities = message.entities or message.caption_entities or []
        return bool(me.username) and any(
            e.type == "mention" and body[e.offset : e.offset + e.length].lower() == f"@{me.username}".lower()
            for e in entities
        )


async def on_start(message: Message, lang: str, analyses_on: bool) -> None:
    """What this deployment offers, not what the bot could: without an LLM it is a transcription bot."""
    await message.answer(text("start" if analyses_on else "start_transcripts_only", lang))


async def on_help(message: Message, lang: str, max_audio_seconds: float, analyses_on: bool) -> None:
    """How to use it, and asking about a recording where there is an LLM to answer."""
    said = text("help", lang, limit=duration_limit(max_audio_seconds, lang))
    more = (
        "\n\n".join(text(part, lang) for part in ("help_ask", "help_digest", "help_chat_modes"))
        if analyses_on
        else text("analyses_off", lang)
    )
    await message.answer(f"{said}\n\n{more}")


async def on_list_modes(message: Message, lang: str, bus: Bus, analyses_on: bool) -> None:
    modes = await live_modes(bus)
    if not modes:
        await message.answer(text("modes_none", lang) if analyses_on else text("analyses_off", lang))
        return
    lines = [text("modes_header", lang)]
    lines += [
        f"• <b>{html.escape(m.titles.get(lang) or m.title)}</b>"  # as people know it: its title, not its name
        + (f" · <code>{html.escape(m.model)}</code>" if m.model else "")
        + (f" · v{m.version}" if m.version else "")
        + (f"\n  ⚠️ {html.escape(m.problem)}" if m.problem else "")
        for m in modes
    ]
    await message.answer("\n".join(lines))


async def on_media(message: Message, media: Media, intake: Intake, chat_settings: ChatSettings) -> None:
    await intake.accept(message, media, chat_settings)


async def on_request(message: Message, lang: str, intake: Intake, chat_settings: ChatSettings) -> None:
    """`/transcribe` (or a mention) in reply to a voice note, a video or a file, or in the caption of one: that
    note is taken in, and answered in its place (a file that is plainly not sound, with just that)."""
    asked = [(m, media_of(m)) for m in (message.reply_to_message, message) if m is not None]
    target, media = next(((m, found) for m, found in asked if found is not None), (None, None))
    if target is None or media is None:
        await message.reply(text("transcribe_usage", lang))
        return
    match await intake.answered(target):  # asked again: not silence, but where its answer is, or how to have it
        case "forgotten":
            await message.reply(text("note_forgotten", lang))
            return
        case "answered":
            await message.reply(text("note_answered_already", lang))
            return
    await intake.accept(target, media, chat_settings)


async def on_forget(
    message: Message,
    lang: str,
    bot: Bot,
    bus: Bus,
    chats: ChatSettingsStore,
    key: bytes,
    schedules: DigestSchedules,
) -> None:
    """Everything kept about this chat, deleted; in a group only its admins may ask. The settings and the
    person's counters go here and now; the notes are the formatter's, which answers with what it deleted."""
    if not await may_change(bot, message.chat, message.from_user, message.sender_chat):
        await message.answer(text("settings_admins_only", lang))
        return
    sender = message.from_user if message.chat.type == ChatType.PRIVATE else None  # in a group, not one user's
    request = ForgetChat(
        chat_key=chat_key(key, message.chat.id),
        chat_id=message.chat.id,
        thread_id=message.message_thread_id if message.is_topic_message else None,
        ui_language=lang,
        settings=await chats.get(message.chat.id) != ChatSettings()
        or bool((await modes_of(bus, chat_key(key, message.chat.id))).modes),
    )
    # Asked first, erased after: a redelivered /forget asks once (the same ID) and says what there was.
    await ask_to_forget(bus, request, user_key(key, sender.id) if sender else None, message.message_id)
    await chats.forget(message.chat.id)
    await schedules.forget(message.chat.id)
    await forget_chat_modes(bus, key, message.chat.id, message.message_id)


async def on_privacy(message: Message, lang: str, llm_provider: str, analyses_on: bool) -> None:
    who = (
        text("privacy_who_llm", lang, provider=html.escape(llm_provider))
        if analyses_on
        else text("privacy_who_nobody", lang)
    )
    await message.answer(text("privacy_text", lang, who=who))


async def on_anything_else(message: Message, lang: str) -> None:
    await message.answer(text("unsupported", lang))


def build_router() -> Router:
    """The bot's router: each handler with the filter that says what it takes; the first match wins."""
    router = Router(name="voice-insight")
    router.message.register(on_start, CommandStart())
    router.message.register(on_help, Command("help"))
    router.message.register(on_list_modes, Command("list_modes"))
    router.message.register(on_request, Command("transcribe"))
    router.message.register(on_forget, Command("forget"))
    router.message.register(on_digest, Command("digest"))
    router.message.register(on_privacy, Command("privacy"))
    router.message.register(on_media, HasMedia(), EveryNote())
    router.message.register(on_question, AsksAboutNote())
    router.message.register(on_request, MentionsMe())
    router.message.register(on_anything_else, F.chat.type == ChatType.PRIVATE)  # in a group, chatter is not ours
    return router
