"""The Bot API client, built one way for every service that talks to Telegram.

`TELEGRAM_API_BASE` points aiogram at the public Bot API, a self-hosted Bot API server, or the test double;
the rest of the code never knows which.
"""

from __future__ import annotations

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode

from infra.settings import Settings

MESSAGE_LIMIT = 4096
"""Telegram's limit on one message's text, counted after entity parsing."""
DOWNLOAD_LIMIT = 20 * 1024 * 1024
"""The public Bot API refuses `getFile` for anything bigger."""


def make_bot(settings: Settings) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_base))
    return Bot(
        token=settings.telegram_token,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )
