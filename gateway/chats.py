"""What a chat chose: answer language, modes, how the transcript comes, vocabulary, when a group is answered.

Settings are configuration, not what anybody said, so they have no 24 h expiry: they stay until the chat changes
them or says `/forget`. They are kept under a keyed hash of the chat id (`chat_key`), so the bucket reveals no
chat, and the same key names the chat's answered notes in `voice-notes`.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

import msgspec
import nats.js.errors

from infra.bus import Bus
from infra.bus.names import BUCKET_CHATS
from infra.voice.texts import ui_language

AnswerLanguage = Literal["user", "ru", "en", "speech"]
TranscriptView = Literal["message", "file", "off"]
Trigger = Literal["every", "request"]

VOCABULARY_LIMIT = 300
"""Characters of vocabulary: Whisper's prompt holds about 220 tokens, and the note's own words need room."""


class ChatSettings(msgspec.Struct, frozen=True, kw_only=True):
    language: AnswerLanguage = "user"
    """`user`: the sender's Telegram language (Russian or English); `speech`: the language spoken in the note."""
    modes_off: tuple[str, ...] = ()
    """Live modes this chat does not want; a mode added later runs until switched off here."""
    transcript: TranscriptView = "message"
    vocabulary: str = ""
    trigger: Trigger = "every"
    """In a group: every voice note, or only on request (`/transcribe` in reply, or a mention)."""

    def words_language(self, language_code: str | None) -> str:
        """The language of the bot's own words: the chat's Russian or English, else the user's Telegram language.
        (A chat that follows the speech gets the bot's words in the user's language, the analyses in the speech's.)"""
        return self.language if self.language in ("ru", "en") else ui_language(language_code)

    def wants(self, mode: str) -> bool:
        return mode not in self.modes_off

    def toggled(self, mode: str) -> ChatSettings:
        off = set(self.modes_off) ^ {mode}
        return msgspec.structs.replace(self, modes_off=tuple(sorted(off)))


def chat_key(key: bytes, chat_id: int) -> str:
    """A chat as the bus may know it: stable, and revealing nothing of Telegram's id."""
    return hmac.new(key, f"chat:{chat_id}".encode(), hashlib.sha256).hexdigest()[:32]


def clean_vocabulary(value: str) -> str:
    """Words separated by commas, one space each, within `VOCABULARY_LIMIT`."""
    words = [" ".join(w.split()) for w in value.replace("\n", ",").split(",")]
    joined = ", ".join(w for w in words if w)
    return joined[:VOCABULARY_LIMIT].rstrip(", ")


_decode = msgspec.json.Decoder(ChatSettings).decode


class ChatSettingsStore:
    def __init__(self, bus: Bus, key: bytes) -> None:
        self.bus = bus
        self.key = key

    async def get(self, chat_id: int) -> ChatSettings:
        kv = await self.bus.kv(BUCKET_CHATS)
        try:
            entry = await kv.get(chat_key(self.key, chat_id))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return ChatSettings()
        return _decode(entry.value) if entry.value else ChatSettings()

    async def put(self, chat_id: int, settings: ChatSettings) -> None:
        kv = await self.bus.kv(BUCKET_CHATS)
        await kv.put(chat_key(self.key, chat_id), msgspec.json.encode(settings))

    async def forget(self, chat_id: int) -> bool:
        """Erase the chat's settings; whether there were any."""
        had = await self.get(chat_id) != ChatSettings()
        await self.bus.erase(BUCKET_CHATS, chat_key(self.key, chat_id))
        return had
