"""The bot's own membership of a group (`my_chat_member`): what it tells the group when it is added, and when what
it can see there changes.

Added, it says once what it does, how to use it in this group, and whether it can see voice notes at all: with
privacy mode on, Telegram shows a bot in a group only commands and mentions of it unless it is an admin, so a
group set to answer every note would wait for answers that never come. Made an admin, or no longer one, it says
what that changes, quietly, and only when it changes anything: with privacy mode off it saw everything anyway, and
a group that answers on request is answered the same either way. Removed, it cannot say anything.

A private bot (`ALLOWED_USERS`) serves a group whose own id is let in, and anywhere the people who are let in; a
group added by one of them, but not let in itself, is told that only they are answered there (and how the owner
lets the whole group in), and its notices promise answers to them alone, as `gateway.access` holds it to.

Each change is said once: updates come through a durable consumer and may be redelivered, or come again from
Telegram under another update id, so the message is claimed in `voice-intake` as a note's status message is, under
a keyed hash of the chat and the change (never the chat's id).
"""

from __future__ import annotations

import hashlib
import hmac

from aiogram import Bot, F, Router
from aiogram.enums import ChatMemberStatus, ChatType
from aiogram.filters import (
    ADMINISTRATOR,
    JOIN_TRANSITION,
    MEMBER,
    RESTRICTED,
    ChatMemberUpdatedFilter,
)
from aiogram.types import ChatMemberUpdated

from gateway.chats import ChatSettings
from gateway.intake import claim_status
from infra.bus import Bus
from infra.bus.names import BUCKET_INTAKE
from infra.runtime.settings import Limits
from infra.voice.texts import text

STAYED_AND_PROMOTED = (MEMBER | +RESTRICTED) >> ADMINISTRATOR
STAYED_AND_DEMOTED = ADMINISTRATOR >> (MEMBER | +RESTRICTED)


def change_key(key: bytes, change: ChatMemberUpdated) -> str:
    """One change of the bot's membership, however often it is delivered: the same chat, moment and statuses."""
    moment = int(change.date.timestamp())
    what = f"member:{change.chat.id}:{moment}:{change.old_chat_member.status}:{change.new_chat_member.status}"
    return hmac.new(key, what.encode(), hashlib.sha256).hexdigest()[:32]


async def say_once(
    bus: Bus, bot: Bot, key: bytes, change: ChatMemberUpdated, words: str, *, quietly: bool = False
) -> None:
    """Post `words` in the group unless this change has been told already."""

    async def send() -> int:
        sent = await bot.send_message(change.chat.id, words, disable_notification=quietly)
        return sent.message_id

    await claim_status(await bus.kv(BUCKET_INTAKE), change_key(key, change), send)


async def sees_everything(bot: Bot, status: str) -> bool:
    """Whether the bot gets every message of a group it is in with `status`: as its admin, or with privacy mode
    off. Asked afresh each time (not aiogram's cached `me`): privacy mode is switched in @BotFather meanwhile."""
    return status == ChatMemberStatus.ADMINISTRATOR or bool((await bot.get_me()).can_read_all_group_messages)


async def on_added(
    change: ChatMemberUpdated,
    bot: Bot,
    bus: Bus,
    key: bytes,
    lang: str,
    chat_settings: ChatSettings,
    analyses_on: bool,
    limits: Limits,
) -> None:
    """Added to a group: what the bot does, how to use it here, and whether it can see voice notes (and how to let
    it). The one message of the bot that may notify: the group has just met it."""
    group = change.chat.id
    adder = change.from_user.id if change.from_user else None
    if not limits.admits(adder, group):
        await say_once(bus, bot, key, change, text("group_closed", lang, id=group))
        return
    every = chat_settings.trigger == "every"
    deaf = every and not await sees_everything(bot, change.new_chat_member.status)
    notes = (text("group_deaf", lang) if deaf else "") + (  # each a paragraph of its own, after `how`
        "" if let_in(limits, group) else text("group_members_only", lang, id=group)
    )
    words = text(
        "group_hello" if analyses_on else "group_hello_transcripts_only",
        lang,
        how=text("group_how_every" if every else "group_how_request", lang),
        deaf=notes,
    )
    await say_once(bus, bot, key, change, words)


async def on_promoted(
    change: ChatMemberUpdated, bot: Bot, bus: Bus, key: bytes, lang: str, chat_settings: ChatSettings, limits: Limits
) -> None:
    """Made an admin: with privacy mode on, the group's voice notes reach the bot from now on (those of the people
    let in, in a group that is not)."""
    if chat_settings.trigger != "every" or await sees_everything(bot, ChatMemberStatus.MEMBER):
        return  # nothing it hears changes
    words = "group_hears_now" if let_in(limits, change.chat.id) else "group_hears_now_members"
    await say_once(bus, bot, key, change, text(words, lang), quietly=True)


async def on_demoted(
    change: ChatMemberUpdated, bot: Bot, bus: Bus, key: bytes, lang: str, chat_settings: ChatSettings, limits: Limits
) -> None:
    """No longer an admin: with privacy mode on, the bot sees voice notes only when it is asked about them."""
    if chat_settings.trigger != "every" or await sees_everything(bot, change.new_chat_member.status):
        return
    words = "group_on_request_now" if let_in(limits, change.chat.id) else "group_on_request_now_members"
    await say_once(bus, bot, key, change, text(words, lang), quietly=True)


def let_in(limits: Limits, group: int) -> bool:
    """Whether the group itself is let in, so every member is answered: its own id in `ALLOWED_USERS` (or an open
    bot). Being added by someone let in is not enough: the owner's list says who may spend the bot's minutes and
    LLM budget, and one person let in must not open it to a group of strangers without the owner knowing."""
    return limits.admits(None, group)


def build_membership_router() -> Router:
    """Changes of the bot's own membership in groups; in a private chat (the user blocked or unblocked the bot) or a
    channel there is nobody to tell. Leaving needs no handler: the bot cannot speak where it is no more."""
    router = Router(name="membership")
    router.my_chat_member.filter(F.chat.type.in_({ChatType.GROUP, ChatType.SUPERGROUP}))
    router.my_chat_member.register(on_added, ChatMemberUpdatedFilter(JOIN_TRANSITION))
    router.my_chat_member.register(on_promoted, ChatMemberUpdatedFilter(STAYED_AND_PROMOTED))
    router.my_chat_member.register(on_demoted, ChatMemberUpdatedFilter(STAYED_AND_DEMOTED))
    return router
