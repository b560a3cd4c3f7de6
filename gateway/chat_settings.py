"""`/settings`: one message with an inline keyboard, edited in place as buttons are pressed; and `/vocabulary`.

In a private chat the user decides; in a group, its admins (an anonymous admin posting as the group counts).
Each button cycles one setting or switches one mode; the message always shows what is set now.
"""

from __future__ import annotations

import html
from typing import Any, get_args

import msgspec
from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Chat, InlineKeyboardButton, InlineKeyboardMarkup, Message, User

from gateway.chats import (
    LANGUAGE_CHOICES,
    VOCABULARY_LIMIT,
    ChatSettings,
    ChatSettingsStore,
    TranscriptView,
    Trigger,
    chat_key,
    fit_vocabulary,
)
from gateway.digests import DigestSchedules
from infra.bus import Bus
from infra.domain import chat_modes
from infra.domain.chat_modes import mode_id
from infra.domain.modes import live_modes
from infra.voice.languages import LANGUAGES, language_name, own_name
from infra.voice.telegram import answer_press
from infra.voice.texts import text

ANONYMOUS_ADMIN = 1087968824
"""`GroupAnonymousBot`: the sender Telegram shows for an admin who posts as the group."""
VIEWS: tuple[TranscriptView, ...] = get_args(TranscriptView)
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)


async def may_change(bot: Bot, chat: Chat, user: User | None, sender_chat: Chat | None = None) -> bool:
    """Anyone in a private chat; in a group, its creator and administrators."""
    if chat.type == ChatType.PRIVATE:
        return True
    if sender_chat is not None and sender_chat.id == chat.id:
        return True  # an anonymous admin, posting as the group
    if user is None or user.id == ANONYMOUS_ADMIN:
        return False
    member = await bot.get_chat_member(chat.id, user.id)
    return member.status in ("creator", "administrator")


async def switchable_modes(bus: Bus, chat: Chat, lang: str, key: bytes | None) -> list[tuple[str, str]]:
    """The modes a chat may switch, each as (mode, title): the live ones, then the chat's own (`key`: the bot's,
    to find them by; none while chat modes are off or nobody runs them)."""
    modes = [(m.mode, m.titles.get(lang) or m.title) for m in await live_modes(bus)]
    if key is not None:
        modes += [(mode_id(m.name), m.title) for m in await chat_modes.for_note(bus, chat_key(key, chat.id))]
    return modes


async def render_settings(
    bus: Bus, settings: ChatSettings, chat: Chat, lang: str, digests: bool = True, key: bytes | None = None
) -> tuple[str, InlineKeyboardMarkup]:
    """`digests`: the daily digest is offered (a bot without an LLM writes none); `key`: the chat's own modes are
    listed too."""
    modes = await switchable_modes(bus, chat, lang, key)
    group = chat.type != ChatType.PRIVATE
    listed = " · ".join(f"{'✅' if settings.wants(mode) else '⬜'} {html.escape(title)}" for mode, title in modes)
    body = text(
        "settings",
        lang,
        language=language_label(settings.language, lang),
        modes=listed or text("none", lang),
        transcript=text(f"transcript_{settings.transcript}", lang),
        vocabulary=html.escape(settings.vocabulary) or text("none", lang),
        group=text("settings_group", lang, trigger=text(f"trigger_{settings.trigger}", lang)) if group else "",
    )
    if digests:
        body += "\n" + text("settings_digest", lang, value=digest_label(settings.digest_hour, lang))
    rows = [
        [
            InlineKeyboardButton(
                text=text("button_language", lang, value=language_label(settings.language, lang)),
                callback_data="s:lang",
            )
        ],
        *[
            [
                InlineKeyboardButton(
                    text=f"{'✅' if settings.wants(mode) else '⬜'} {title}", callback_data=f"s:m:{mode}"
                )
            ]
            for mode, title in modes
        ],
        [
            InlineKeyboardButton(
                text=text("button_transcript_view", lang, value=text(f"transcript_{settings.transcript}", lang)),
                callback_data="s:tr",
            )
        ],
    ]
    if group:
        rows.append(
            [
                InlineKeyboardButton(
                    text=text("button_trigger", lang, value=text(f"trigger_{settings.trigger}", lang)),
                    callback_data="s:trig",
                )
            ]
        )
    if digests:
        label = text("button_digest", lang, value=digest_label(settings.digest_hour, lang))
        rows.append([InlineKeyboardButton(text=label, callback_data="s:dig")])
    rows.append([InlineKeyboardButton(text=text("button_vocabulary", lang), callback_data="s:voc")])
    return body, InlineKeyboardMarkup(inline_keyboard=rows)


def digest_label(hour: int | None, lang: str) -> str:
    return text("digest_off", lang) if hour is None else text("digest_at", lang, time=f"{hour:02d}:00")


def digest_menu(settings: ChatSettings, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    """When the daily digest comes: off, or an hour of the day (UTC, which Telegram gives no chat's zone of)."""
    mark = "✅ "
    off = InlineKeyboardButton(
        text=f"{mark if settings.digest_hour is None else ''}{text('digest_off', lang)}", callback_data="s:dig:off"
    )
    hours = [
        InlineKeyboardButton(text=f"{mark if settings.digest_hour == h else ''}{h:02d}:00", callback_data=f"s:dig:{h}")
        for h in range(24)
    ]
    rows = [[off]] + [hours[i : i + 6] for i in range(0, 24, 6)]
    rows.append([InlineKeyboardButton(text=text("language_back", lang), callback_data="s:back")])
    return text("digest_pick", lang), InlineKeyboardMarkup(inline_keyboard=rows)


def language_label(choice: str, lang: str) -> str:
    """A chat's language choice as the settings name it: a language by its name, never its code."""
    if choice in ("auto", "user", "speech"):
        return text(f"language_{choice}", lang)
    return language_name(choice, lang)


def language_menu(settings: ChatSettings, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    """Every language a chat may choose, the ways of following its people first, then each language by its own
    name (as language menus do: a reader finds "Deutsch" whatever the menu's language)."""
    ways = [
        InlineKeyboardButton(
            text=f"{'✅ ' if settings.language == choice else ''}{text(f'language_{choice}', lang)}",
            callback_data=f"s:lang:{choice}",
        )
        for choice in ("auto", "user", "speech")
    ]
    named = [
        InlineKeyboardButton(
            text=f"{'✅ ' if settings.language == code else ''}{own_name(code)}", callback_data=f"s:lang:{code}"
        )
        for code in LANGUAGES
    ]
    rows = [[way] for way in ways] + [named[i : i + 3] for i in range(0, len(named), 3)]
    rows.append([InlineKeyboardButton(text=text("language_back", lang), callback_data="s:back")])
    return text("language_pick", lang), InlineKeyboardMarkup(inline_keyboard=rows)


def _next(options: tuple[str, ...], current: str) -> Any:
    return options[(options.index(current) + 1) % len(options)]


def pressed(settings: ChatSettings, data: str) -> ChatSettings | None:
    """The settings after a button press (None: the press changes nothing, e.g. the vocabulary help)."""
    match data.split(":", 2):
        case ["s", "lang", choice] if choice in LANGUAGE_CHOICES:
            return msgspec.structs.replace(settings, language=choice)
        case ["s", "tr"]:
            return msgspec.structs.replace(settings, transcript=_next(VIEWS, settings.transcript))
        case ["s", "trig"]:
            return msgspec.structs.replace(settings, trigger=_next(TRIGGERS, settings.trigger))
        case ["s", "m", mode] if mode:
            return settings.toggled(mode)
        case ["s", "dig", "off"]:
            return msgspec.structs.replace(settings, digest_hour=None)
        case ["s", "dig", hour] if hour.isdigit() and 0 <= int(hour) < 24:
            return msgspec.structs.replace(settings, digest_hour=int(hour))
    return None


async def on_settings(
    message: Message, lang: str, bus: Bus, chat_settings: ChatSettings, analyses_on: bool, key: bytes
) -> None:
    own = key if analyses_on else None
    body, keyboard = await render_settings(bus, chat_settings, message.chat, lang, digests=analyses_on, key=own)
    await message.answer(body, reply_markup=keyboard)


async def on_settings_press(
    query: CallbackQuery,
    bot: Bot,
    lang: str,
    bus: Bus,
    chats: ChatSettingsStore,
    chat_settings: ChatSettings,
    schedules: DigestSchedules,
    analyses_on: bool,
    key: bytes,
) -> None:
    message = query.message
    own = key if analyses_on else None
    assert isinstance(message, Message) and query.data is not None
    if query.data == "s:voc":
        await answer_press(query)
        await message.answer(text("vocabulary_usage", lang))
        return
    if not await may_change(bot, message.chat, query.from_user):
        await answer_press(query, text("settings_admins_only", lang), alert=True)
        return
    if query.data in ("s:lang", "s:dig", "s:back"):  # a menu opened, or left: nothing changes yet
        if query.data == "s:lang":
            body, keyboard = language_menu(chat_settings, lang)
        elif query.data == "s:dig" and analyses_on:
            body, keyboard = digest_menu(chat_settings, lang)
        else:
            body, keyboard = await render_settings(bus, chat_settings, message.chat, lang, digests=analyses_on, key=own)
        await message.edit_text(body, reply_markup=keyboard)
        await answer_press(query)
        return
    changed = pressed(chat_settings, query.data)
    if changed is None:
        await answer_press(query)
        return
    lang = changed.words_language(query.from_user.language_code)  # the menu speaks the language just chosen
    if query.data.startswith("s:dig:"):  # the schedule first: a press redelivered after it sees no change
        await schedules.set(message, changed.digest_hour, lang)
    await chats.put(message.chat.id, changed)
    body, keyboard = await render_settings(bus, changed, message.chat, lang, digests=analyses_on, key=own)
    await message.edit_text(body, reply_markup=keyboard)
    await answer_press(query)


async def on_vocabulary(
    message: Message, command: CommandObject, bot: Bot, lang: str, chats: ChatSettingsStore, chat_settings: ChatSettings
) -> None:
    if not command.args:
        current = html.escape(chat_settings.vocabulary) or text("none", lang)
        await message.answer(f"{text('vocabulary_set', lang, words=current)}\n\n{text('vocabulary_usage', lang)}")
        return
    if not await may_change(bot, message.chat, message.from_user, message.sender_chat):
        await message.answer(text("settings_admins_only", lang))
        return
    words, cut = ("", "") if command.args.strip() == "-" else fit_vocabulary(command.args)
    await chats.put(message.chat.id, msgspec.structs.replace(chat_settings, vocabulary=words))
    answer = text("vocabulary_set", lang, words=html.escape(words)) if words else text("vocabulary_cleared", lang)
    if cut:  # never cut silently: what was kept is above, where it ends here
        first = cut.split(",")[0].split()[0]
        first = first if len(first) <= 40 else f"{first[:40]}…"
        answer += "\n" + text("vocabulary_cut", lang, count=VOCABULARY_LIMIT, first=html.escape(first))
    await message.answer(answer)


def build_settings_router() -> Router:
    router = Router(name="settings")
    router.message.register(on_settings, Command("settings"))
    router.message.register(on_vocabulary, Command("vocabulary"))
    router.callback_query.register(on_settings_press, F.data.startswith("s:"))
    return router
