"""The Telegram double answers the calls issue 23 added as the Bot API does: `deleteMessage`, `disable_notification`,
`allowed_updates` (a type not asked for is never delivered), per-language command menus, and `my_chat_member`.
The real client (aiogram) talks to it, so what passes here is what the bot will meet."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import BotCommand

from tests.support import (
    TOKEN,
    telegram_of_its_own,  # noqa: F401  (the `telegram` fixture here: a double of the test's own)
)
from voice_insight.doubles.telegram_api import TelegramDouble

BOT_ID = TelegramDouble.BOT_USER["id"]


@pytest.fixture
async def bot(telegram: TelegramDouble) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url))
    client = Bot(TOKEN, session=session, default=DefaultBotProperties(parse_mode="HTML"))
    yield client
    await client.session.close()


async def test_a_deleted_message_leaves_the_chat_and_cannot_be_deleted_twice(
    telegram: TelegramDouble, bot: Bot
) -> None:
    sent = await bot.send_message(42, "🎧 Listening…")
    assert await bot.delete_message(42, sent.message_id)
    assert telegram.messages(42) == [] and len(telegram.all_messages(42)) == 1
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(42, sent.message_id)


async def test_a_silent_message_does_not_notify_and_an_edit_never_does(telegram: TelegramDouble, bot: Bot) -> None:
    quiet = await bot.send_message(-100500, "🎧 Listening…", disable_notification=True)
    await bot.edit_message_text("The answer", chat_id=-100500, message_id=quiet.message_id)
    loud = await bot.send_message(-100500, "The answer, anew")
    assert [m.message_id for m in telegram.notified(-100500)] == [loud.message_id]


async def test_updates_of_a_type_not_asked_for_are_never_delivered(telegram: TelegramDouble, bot: Bot) -> None:
    await telegram.bot_added(-100501)
    assert await bot.get_updates(timeout=0, allowed_updates=["message", "callback_query"]) == []
    await telegram.bot_status(-100501, "administrator")
    updates = await bot.get_updates(timeout=0, allowed_updates=["message", "callback_query", "my_chat_member"])
    assert len(updates) == 1 and updates[0].my_chat_member is not None
    change = updates[0].my_chat_member
    assert (change.old_chat_member.status, change.new_chat_member.status) == ("member", "administrator")
    assert change.new_chat_member.user.id == BOT_ID


async def test_the_bot_can_read_its_own_membership_and_whether_privacy_mode_is_on(
    telegram: TelegramDouble, bot: Bot
) -> None:
    assert (await bot.get_me()).can_read_all_group_messages is False
    await telegram.bot_added(-100502)
    assert (await bot.get_chat_member(-100502, BOT_ID)).status == "member"
    telegram.privacy_mode = False
    assert (await bot.get_me()).can_read_all_group_messages is True


async def test_command_menus_are_kept_per_language_and_bad_ones_refused(telegram: TelegramDouble, bot: Bot) -> None:
    await bot.set_my_commands([BotCommand(command="help", description="How it works")])
    await bot.set_my_commands([BotCommand(command="help", description="Wie es geht")], language_code="de")
    assert telegram.commands[("default", "de")][0]["description"] == "Wie es geht"
    assert telegram.commands[("default", "")][0]["description"] == "How it works"
    with pytest.raises(TelegramBadRequest, match="BOT_COMMANDS_INVALID"):
        await bot.set_my_commands([BotCommand(command="Help-Me", description="no")])
    with pytest.raises(TelegramBadRequest, match="LANG_CODE_INVALID"):
        await bot.set_my_commands([BotCommand(command="help", description="x")], language_code="deu")
