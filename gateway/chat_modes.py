"""A chat's own modes from the chat: `/newmode`, `/chatmodes`, `/dropmode`, and what the registrar made of them.

`/newmode NAME Title` with the instruction on the next lines asks the registrar to try it and keep it
(`ChatModeChange` on `admin.chatmode.change`; `analyzers.chat_desk`); its answer (`admin.chatmode.changed`)
comes back here (`ChatModeReplies`) and is said in the chat's language. In a private chat the user decides; in a
group, its admins, as for its settings. The request's ID derives from the Telegram message, so a redelivered
update asks once. `/chatmodes` reads the chat's modes; anyone in the chat may look.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from aiogram import Bot, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import Message, ReplyParameters

from gateway.chat_settings import may_change
from gateway.chats import chat_key
from gateway.intake import correlation_id
from gateway.requests import reply_to, request_id
from infra.bus import Bus, Delivery, consumes
from infra.bus.names import (
    CONSUMER_GATEWAY_CHAT_MODES,
    STREAM_ADMIN,
    SUBJECT_CHAT_MODE_CHANGE,
    SUBJECT_CHAT_MODE_CHANGED,
)
from infra.domain.chat_modes import modes_of, read_policy
from infra.domain.contracts import ChatModeChange, ChatModeChangeResult
from infra.voice.texts import text


@dataclass(frozen=True)
class Definition:
    name: str
    title: str
    instruction: str


def parse_definition(args: str | None) -> Definition | None:
    """`NAME Title` on the first line, the instruction after it; None when a part is missing. The name is
    upper-cased (people type `dates`); whether it is a valid name is the registrar's to say."""
    head, _, instruction = (args or "").strip().partition("\n")
    name, _, title = head.strip().partition(" ")
    if not name or not title.strip() or not instruction.strip():
        return None
    return Definition(name.upper(), title.strip(), instruction.strip())


async def _may_change(message: Message, lang: str, bot: Bot, analyses_on: bool) -> bool:
    """Whether the sender may change the chat's modes (a bot without an LLM runs none); if not, they are told."""
    if not analyses_on:
        await message.reply(text("analyses_off", lang))
        return False
    if not await may_change(bot, message.chat, message.from_user, message.sender_chat):
        await message.reply(text("settings_admins_only", lang))
        return False
    return True


async def _ask(bus: Bus, change: ChatModeChange) -> None:
    await bus.publish(SUBJECT_CHAT_MODE_CHANGE, change, msg_id=change.request_id, stream=STREAM_ADMIN)


async def on_new_mode(
    message: Message, command: CommandObject, lang: str, bot: Bot, bus: Bus, key: bytes, analyses_on: bool
) -> None:
    if not await _may_change(message, lang, bot, analyses_on):
        return
    if not (await read_policy(bus)).enabled:
        await message.reply(text("chatmode_refused_off", lang))
        return
    asked = parse_definition(command.args)
    if asked is None:
        await message.reply(text("chatmode_usage", lang))
        return
    change = ChatModeChange(
        request_id=request_id(key, message),
        action="define",
        chat_key=chat_key(key, message.chat.id),
        name=asked.name,
        title=asked.title,
        instruction=asked.instruction,
        requested_by="chat",
        reply=reply_to(message, lang),
    )
    await _ask(bus, change)
    quiet = message.chat.type != ChatType.PRIVATE  # a status: in a group, nobody's news
    await message.reply(text("chatmode_checking", lang, title=html.escape(asked.title)), disable_notification=quiet)


async def on_chat_modes(message: Message, lang: str, bus: Bus, key: bytes, analyses_on: bool) -> None:
    """The chat's modes, with their instructions: they are the chat's own words, shown to the chat."""
    if not analyses_on:
        await message.reply(text("analyses_off", lang))
        return
    policy = await read_policy(bus)
    chat = await modes_of(bus, chat_key(key, message.chat.id))
    if not chat.modes:
        said = text("chatmode_refused_off", lang) if not policy.enabled else text("chatmodes_none", lang)
        await message.reply(f"{said}\n\n{text('chatmode_usage', lang)}" if policy.enabled else said)
        return
    lines = [text("chatmodes_header", lang, count=len(chat.modes), limit=policy.per_chat)]
    for mode in chat.modes:
        lines.append(f"\n<b>{html.escape(mode.title)}</b> · <code>{mode.name}</code>")
        lines.append(f"<i>{html.escape(_cut(mode.instruction, 300))}</i>")
    if not policy.enabled:
        lines.append("\n" + text("chatmode_refused_off", lang))
    await message.reply("\n".join(lines))


async def on_drop_mode(
    message: Message, command: CommandObject, lang: str, bot: Bot, bus: Bus, key: bytes, analyses_on: bool
) -> None:
    if not await _may_change(message, lang, bot, analyses_on):
        return
    name = (command.args or "").strip().upper()
    if not name or " " in name:
        await message.reply(text("admin_usage", lang, usage="/dropmode NAME"))
        return
    change = ChatModeChange(
        request_id=request_id(key, message),
        action="drop",
        chat_key=chat_key(key, message.chat.id),
        name=name,
        requested_by="chat",
        reply=reply_to(message, lang),
    )
    await _ask(bus, change)


async def forget_chat_modes(bus: Bus, key: bytes, chat_id: int, message_id: int) -> bool:
    """`/forget`: the registrar erases the chat's modes (it alone writes them); whether there were any."""
    keyed = chat_key(key, chat_id)
    had = bool((await modes_of(bus, keyed)).modes)
    if had:
        request_id = correlation_id(key, chat_id, message_id)
        await _ask(bus, ChatModeChange(request_id=request_id, action="forget", chat_key=keyed, requested_by="chat"))
    return had


def said(result: ChatModeChangeResult) -> str:
    """What the chat is told of its change, in its language."""
    assert result.reply is not None
    lang = result.reply.ui_language
    name = html.escape(result.name)
    if result.accepted:
        match result.action:
            case "drop":
                return text("chatmode_dropped", lang, name=name)
            case "policy":
                return policy_said(result.enabled, result.model, result.per_chat, lang)
        title = html.escape(result.values.get("title", "") or result.name)
        return text("chatmode_replaced" if result.replaced else "chatmode_defined", lang, name=name, title=title)
    values = {k: html.escape(v) for k, v in result.values.items()}
    return text(f"chatmode_refused_{result.refusal or 'unchecked'}", lang, name=name, **values)


def policy_said(enabled: bool, model: str, per_chat: int, lang: str) -> str:
    state = text("chatmode_state_on" if enabled else "chatmode_state_off", lang)
    return text("chatmode_policy", lang, state=state, model=html.escape(model), limit=per_chat)


class ChatModeReplies:
    """The registrar's answers to chats (and to admins' policy changes), said where they were asked."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    @consumes(
        SUBJECT_CHAT_MODE_CHANGED, CONSUMER_GATEWAY_CHAT_MODES, stage="admin", stream=STREAM_ADMIN, max_attempts=8
    )
    async def on_result(self, result: ChatModeChangeResult, delivery: Delivery) -> None:
        if result.reply is None:
            return
        await self.bot.send_message(
            chat_id=result.reply.chat_id,
            message_thread_id=result.reply.thread_id,
            text=said(result),
            reply_parameters=ReplyParameters(message_id=result.reply.message_id, allow_sending_without_reply=True),
        )


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def build_chat_modes_router() -> Router:
    router = Router(name="chat-modes")
    router.message.register(on_new_mode, Command("newmode"))
    router.message.register(on_chat_modes, Command("chatmodes"))
    router.message.register(on_drop_mode, Command("dropmode"))
    return router
