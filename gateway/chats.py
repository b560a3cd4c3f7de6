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
from infra.voice.languages import LANGUAGES, ui_language

TranscriptView = Literal["message", "file", "off"]
Trigger = Literal["every", "request"]

VOCABULARY_LIMIT = 300
"""Characters of vocabulary: Whisper's prompt holds about 220 tokens, and the note's own words need room."""


LANGUAGE_CHOICES: tuple[str, ...] = ("auto", "user", "speech", *LANGUAGES)
"""What a chat may choose as its language (`ChatSettings.language`)."""


class ChatSettings(msgspec.Struct, frozen=True, kw_only=True):
    language: str = "auto"
    """`auto`: the bot's words in the sender's Telegram language, the analyses in the language spoken (a German
    note read by someone whose Telegram is in English: an English frame, German analyses); `user`: everything in
    the sender's Telegram language; `speech`: everything in the language spoken; a code of `LANGUAGES`: everything
    in that language. (Chats that chose before `auto` existed have `user`, what they had.)"""
    modes_off: tuple[str, ...] = ()
    """Live modes this chat does not want; a mode added later runs until switched off here."""
    transcript: TranscriptView = "message"
    vocabulary: str = ""
    trigger: Trigger = "every"
    """In a group: every voice note, or only on request (`/transcribe` in reply, or a mention)."""
    digest_hour: int | None = None
    """The hour (UTC) of the chat's daily digest of its voice notes; None: none (`gateway.digests`)."""

    def words_language(self, language_code: str | None) -> str:
        """The language of the bot's own words: the chat's own choice of one, else the sender's Telegram language
        (when the answer follows the speech, its words follow too, but only once it is known: `Origin`)."""
        return self.language if self.language in LANGUAGES else ui_language(language_code)

    @property
    def analyses_follow_speech(self) -> bool:
        return self.language in ("auto", "speech")

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
    return fit_vocabulary(value)[0]


def fit_vocabulary(value: str) -> tuple[str, str]:
    """The vocabulary as kept (`clean_vocabulary`), whole words only, and what did not fit (empty when it all
    did), so the user can be told where it was cut."""
    words = [" ".join(w.split()) for w in value.replace("\n", ",").split(",")]
    joined = ", ".join(w for w in words if w)
    if len(joined) <= VOCABULARY_LIMIT:
        return joined, ""
    head = joined[: VOCABULARY_LIMIT + 1]
    kept = (head.rsplit(" ", 1)[0] if " " in head else joined[:VOCABULARY_LIMIT]).rstrip(", ")
    return kept, joined[len(kept) :].lstrip(", ")


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
