"""The command menu Telegram shows beside the input field, one per language the bot speaks.

Telegram picks the menu by the user's own `language_code` (`set_my_commands(language_code=...)`), falling back to
the one set without a language: English here. A menu in two languages at once ("How it works / Как пользоваться")
is what this replaces.
"""

from __future__ import annotations

from aiogram import Bot
from aiogram.types import BotCommand

from infra.voice.languages import DEFAULT_LANGUAGE, LANGUAGES
from infra.voice.texts import text

MENU = ("help", "settings", "transcribe", "digest", "chatmodes", "vocabulary", "list_modes", "privacy", "forget")
"""The commands everyone may use, in the menu's order (the admins' commands are not advertised)."""


def menu(lang: str) -> list[BotCommand]:
    return [BotCommand(command=name, description=text(f"command_{name}", lang)) for name in MENU]


async def set_menus(bot: Bot) -> None:
    """Every language's menu, and English for everyone else; setting one again is harmless, so a restart does it."""
    await bot.set_my_commands(menu(DEFAULT_LANGUAGE))
    for lang in LANGUAGES:
        await bot.set_my_commands(menu(lang), language_code=lang)
