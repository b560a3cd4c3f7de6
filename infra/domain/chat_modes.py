"""A chat's own modes: an analysis a chat wrote for itself, shown in its answers and in no other chat's.

`/newmode NAME Title` and an instruction define one (the user in a private chat, the admins in a group); the
registrar validates it with a canary call, as it does an admin's mode, and keeps the chat's modes in one entry of
`voice-chat-modes` under the chat's key, so a chat's limit holds under compare-and-set. The bot's admins set the
policy (`POLICY_KEY`): whether chats may have modes, the model they run on, and how many a chat may have.

In a note a chat mode is `chat.<NAME>` (`mode_id`): it cannot be a registry mode's name (those are capitals with
no dot), so a chat's DATES never meets another chat's, nor the bot's. Its analysis comes on one subject for all
chat modes (`voice.analysis.chat`): a chat's words never name a subject, a metric label or a span attribute.

A definition is configuration the chat chose, like its settings, not something it said: it stays until dropped
or `/forget`.
"""

from __future__ import annotations

import logging
import re

import msgspec
import nats.errors
import nats.js.errors

from infra.bus import Bus
from infra.bus.names import BUCKET_CHAT_MODES, BUCKET_MODES, CHAT_MODES_ANNOUNCEMENT
from infra.domain.contracts import ChatModeRefusal, ModeInfo
from infra.domain.definitions import LANGUAGES, TRANSCRIPT_PLACE, AnswerField, ModeDefinition
from infra.domain.registry import ModeRegistry, UnknownMode

log = logging.getLogger("voice_insight.modes")

PREFIX = "chat."
NAME = re.compile(r"[A-Z][A-Z0-9_]{0,23}")
TITLE_CHARS = 60
INSTRUCTION_CHARS = (20, 1500)
PER_CHAT = 3
"""How many modes a chat may have until the bot's admins say otherwise (`/chatmode_policy limit N`)."""
MAX_PER_CHAT = 10
POLICY_KEY = "policy"
"""The policy's key in `voice-chat-modes`; every other key is a chat's (32 hex digits)."""
FALLBACK_MODEL = "gpt-4o-mini"
"""The model when the policy names none and the registry has no DEFAULT mode to borrow one from."""
TIMEOUT = 15.0
MAX_TOKENS = 800


class ChatMode(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    title: str
    instruction: str
    version: int = 1
    """1, and one more each time the chat defines it anew: its `/stats` figures per version."""
    defined_at: float = 0.0


class ChatModes(msgspec.Struct, frozen=True, kw_only=True):
    """One chat's modes, in the order they were defined."""

    modes: tuple[ChatMode, ...] = ()

    def get(self, name: str) -> ChatMode | None:
        return next((m for m in self.modes if m.name == name), None)


class ChatModePolicy(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool = True
    model: str = ""
    """Empty: the DEFAULT mode's model, whatever it is now."""
    per_chat: int = PER_CHAT


_decode_modes = msgspec.json.Decoder(ChatModes).decode
_decode_policy = msgspec.json.Decoder(ChatModePolicy).decode


def mode_id(name: str) -> str:
    """A chat mode as a note names it."""
    return f"{PREFIX}{name}"


def is_chat_mode(mode: str) -> bool:
    return mode.startswith(PREFIX)


def name_of(mode: str) -> str:
    return mode.removeprefix(PREFIX)


def telemetry_name(mode: str) -> str:
    """A mode as logs, metrics and spans may name it: a chat's own by what it is, never by the chat's words."""
    return "chat" if is_chat_mode(mode) else mode


def usage_key(chat_key: str, name: str) -> str:
    """Where `/stats` counts a chat mode (`infra.domain.usage`): the chat by the start of its keyed hash."""
    return f"{PREFIX}{chat_key[:12]}.{name}"


def problem_of(name: str, title: str, instruction: str) -> tuple[ChatModeRefusal, dict[str, str]] | None:
    """What is wrong with a definition before any model is asked (a refusal and the values its words name); None
    when nothing is. The gateway says it at once; the registrar checks again, as it trusts no asker."""
    if not NAME.fullmatch(name):
        return "name", {}
    if not title.strip() or len(title.strip()) > TITLE_CHARS:
        return "title", {"max": str(TITLE_CHARS)}
    if not INSTRUCTION_CHARS[0] <= len(instruction.strip()) <= INSTRUCTION_CHARS[1]:
        return "instruction", {"min": str(INSTRUCTION_CHARS[0]), "max": str(INSTRUCTION_CHARS[1])}
    return None


async def read_policy(bus: Bus) -> ChatModePolicy:
    try:
        entry = await (await bus.kv(BUCKET_CHAT_MODES)).get(POLICY_KEY)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return ChatModePolicy()
    return _decode_policy(entry.value) if entry.value else ChatModePolicy()


async def modes_of(bus: Bus, chat_key: str | None) -> ChatModes:
    if not chat_key:
        return ChatModes()
    try:
        entry = await (await bus.kv(BUCKET_CHAT_MODES)).get(chat_key)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return ChatModes()
    return _decode_modes(entry.value) if entry.value else ChatModes()


async def model_for(bus: Bus, policy: ChatModePolicy) -> str:
    """The model chat modes run on: the policy's, else the DEFAULT mode's."""
    if policy.model:
        return policy.model
    try:
        return (await (await ModeRegistry.open(bus)).get("DEFAULT")).definition.model
    except UnknownMode:
        return FALLBACK_MODEL


async def analyzer_present(bus: Bus) -> bool:
    """Whether the chat modes' analyzer has announced itself within the TTL: without it, a note would wait for
    its chat's modes until the deadline."""
    try:
        entry = await (await bus.kv(BUCKET_MODES)).get(CHAT_MODES_ANNOUNCEMENT)
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return False
    return bool(entry.value)


async def for_note(bus: Bus, chat_key: str | None) -> list[ChatMode]:
    """The chat's modes a note of it waits for now: none while chat modes are off or nobody runs them."""
    if not chat_key:
        return []
    try:
        chat = await modes_of(bus, chat_key)
        if not chat.modes:
            return []
        policy = await read_policy(bus)
        if not policy.enabled or not await analyzer_present(bus):
            return []
    except (nats.errors.Error, TimeoutError, msgspec.MsgspecError) as exc:  # never hold a note up over them
        log.warning("a chat's own modes not readable (%s); the note goes without them", type(exc).__name__)
        return []
    return list(chat.modes[: policy.per_chat])  # a limit lowered since: the first ones the chat defined


def note_titles(modes: list[ChatMode]) -> dict[str, dict[str, str]]:
    """As `infra.domain.modes.mode_titles`: the chat's title in every language (it wrote one)."""
    return {mode_id(m.name): {"en": m.title} for m in modes}


def announcement(model: str) -> ModeInfo:
    return ModeInfo(mode=CHAT_MODES_ANNOUNCEMENT, title="chat modes", model=model)


SAMPLE_INSTRUCTION = "List every request, deadline and commitment mentioned, with who made it."
"""What a model chosen for chat modes is tried on, as a chat's would be."""


def definition_of(mode: ChatMode, model: str) -> ModeDefinition:
    """The chat mode as a mode definition: the chat's instruction as the prompt, and one answer shape for any
    instruction (points, or a sentence when the instruction asks for one or the recording has nothing for it),
    shown under the chat's title (the headings are for validation's sake: the chat modes' analyzer shows none)."""
    instruction = mode.instruction.replace(TRANSCRIPT_PLACE, "the transcript")
    return ModeDefinition(
        name=mode.name,
        titles=dict.fromkeys(LANGUAGES, mode.title),
        model=model,
        prompt=f"Do what this chat asks of every voice note it gets:\n{instruction}\n\n{TRANSCRIPT_PLACE}",
        fields=(
            AnswerField(
                name="points",
                headings=dict.fromkeys(LANGUAGES, mode.title),
                kind="list",
                description="What the instruction asks for, one item each; empty when it asks for prose.",
                max_items=15,
            ),
            AnswerField(
                name="note",
                headings=dict.fromkeys(LANGUAGES, mode.title),
                description="The answer when the instruction asks for prose, or one sentence saying that the "
                "recording has nothing for it; else empty.",
            ),
        ),
        max_tokens=MAX_TOKENS,
        temperature=0.3,
        timeout=TIMEOUT,
        version=mode.version,
    )
