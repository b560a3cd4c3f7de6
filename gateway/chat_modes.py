"""A chat's own modes from the chat: `/newmode`, `/chatmodes`, `/dropmode`, and what the registrar made of them.

`/newmode NAME Title` with the instruction on the next lines asks the registrar to try it and keep it
(`ChatModeChange` on `chatmode.change`; `analyzers.chat_desk`); its answer (`chatmode.changed`)
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
from gateway.chats import ChatSettingsStore, chat_key
from gateway.intake import correlation_id
from gateway.requests import over_the_limit, refuse, reply_to, request_id
from infra.bus import Bus, Delivery, consumes
from infra.bus.names import (
    BUCKET_ANSWERED,
    CONSUMER_GATEWAY_CHAT_MODES,
    STREAM_CHAT_MODES,
    SUBJECT_CHAT_MODE_CHANGE,
    SUBJECT_CHAT_MODE_CHANGED,
)
from infra.domain.answers import Sent, encode_mark, is_answered
from infra.domain.chat_modes import NAME, mode_id, modes_of, problem_of, read_policy
from infra.domain.contracts import ChatModeChange, ChatModeChangeResult
from infra.runtime.settings import Limits
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
    await bus.publish(SUBJECT_CHAT_MODE_CHANGE, change, msg_id=change.request_id, stream=STREAM_CHAT_MODES)


async def on_new_mode(
    message: Message,
    command: CommandObject,
    lang: str,
    bot: Bot,
    bus: Bus,
    key: bytes,
    limits: Limits,
    analyses_on: bool,
) -> None:
    cid = request_id(key, message)
    answered = await bus.kv(BUCKET_ANSWERED)
    if await is_answered(answered, cid):
        return  # a repeated update: asked already
    if not await _may_change(message, lang, bot, analyses_on):
        return
    if not (await read_policy(bus)).enabled:
        return await refuse(answered, cid, message, text("chatmode_refused_off", lang))
    asked = parse_definition(command.args)
    if asked is None:
        return await refuse(answered, cid, message, text("chatmode_usage", lang))
    if found := problem_of(asked.name, asked.title, asked.instruction):  # said now, no canary needed to know
        return await refuse(answered, cid, message, text(f"chatmode_refused_{found[0]}", lang, **found[1]))
    if await over_the_limit(bus, key, message, cid, limits):  # each one costs a canary call
        return await refuse(answered, cid, message, text("ask_slow_down", lang))
    quiet = message.chat.type != ChatType.PRIVATE  # a status: in a group, nobody's news
    await message.reply(text("chatmode_checking", lang, title=html.escape(asked.title)), disable_notification=quiet)
    change = ChatModeChange(
        request_id=cid,
        action="define",
        chat_key=chat_key(key, message.chat.id),
        name=asked.name,
        title=asked.title,
        instruction=asked.instruction,
        requested_by="chat",
        reply=reply_to(message, lang),
    )
    await _ask(bus, change)
    await answered.put(cid, encode_mark(Sent(outcome="answered")))  # its answer is the registrar's, below


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
        lines.append(f"<i>{html.escape(_cut(mode.instruction, PREVIEW))}</i>")
    if not policy.enabled:
        lines.append("\n" + text("chatmode_refused_off", lang))
    await message.reply("\n".join(lines))


async def on_drop_mode(
    message: Message, command: CommandObject, lang: str, bot: Bot, bus: Bus, key: bytes, analyses_on: bool
) -> None:
    if not await _may_change(message, lang, bot, analyses_on):
        return
    name = (command.args or "").strip().upper()
    if not NAME.fullmatch(name):
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
    # Read after the chat's /forget mark is written (`ask_to_forget`): a mode the registrar stores after this read
    # finds the mark when it looks again after writing, and takes itself out (`analyzers.chat_desk`). A chat with
    # no modes asks nothing, so nothing naming it waits for a registrar (a bot without an LLM runs none).
    had = bool((await modes_of(bus, keyed)).modes)
    if had:
        forget = ChatModeChange(
            request_id=correlation_id(key, chat_id, message_id), action="forget", chat_key=keyed, requested_by="chat"
        )
        await _ask(bus, forget)
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
    """The registrar's answers to chats (and to admins' policy changes), said where they were asked, once: a
    result redelivered after its reply went out finds its mark. A mode defined or dropped is switched on in the
    chat's settings, so a name the chat switched off once starts afresh when defined again."""

    def __init__(self, bot: Bot, bus: Bus, chats: ChatSettingsStore) -> None:
        self.bot = bot
        self.bus = bus
        self.chats = chats

    @consumes(
        SUBJECT_CHAT_MODE_CHANGED, CONSUMER_GATEWAY_CHAT_MODES, stage="admin", stream=STREAM_CHAT_MODES, max_attempts=8
    )
    async def on_result(self, result: ChatModeChangeResult, delivery: Delivery) -> None:
        if result.reply is None:
            return
        answered = await self.bus.kv(BUCKET_ANSWERED)
        mark = f"{result.request_id}.result"
        if await is_answered(answered, mark):
            return
        if result.accepted and result.action in ("define", "drop"):
            settings = await self.chats.get(result.reply.chat_id)
            if not settings.wants(mode := mode_id(result.name)):
                await self.chats.put(result.reply.chat_id, settings.toggled(mode))
        await self.bot.send_message(
            chat_id=result.reply.chat_id,
            message_thread_id=result.reply.thread_id,
            text=said(result),
            reply_parameters=ReplyParameters(message_id=result.reply.message_id, allow_sending_without_reply=True),
        )
        await answered.put(mark, encode_mark(Sent(outcome="answered")))


PREVIEW = 200
"""Characters of each instruction `/chatmodes` shows: the most modes a chat may have, with their titles, still fit
one message."""


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def build_chat_modes_router() -> Router:
    router = Router(name="chat-modes")
    router.message.register(on_new_mode, Command("newmode"))
    router.message.register(on_chat_modes, Command("chatmodes"))
    router.message.register(on_drop_mode, Command("dropmode"))
    return router
