"""The chat mode desk: a chat's own modes, and the bot admins' policy for them, changed in one place, validated.

The registrar takes each `ChatModeChange` (durable `chatmode-registrar`, shared by its replicas) and is the one
writer of `voice-chat-modes`, so no chat mode reaches a note without having been seen to work: a definition is
checked (its name, title and instruction), then tried on the policy's model with a canary call
(`analyzers.validation.canary`), exactly as the chat modes' analyzer will call it. The chat's entry is written
with compare-and-set, so the policy's limit holds when two of a chat's admins define modes at the same moment.

A refusal says why in a code the gateway words in the chat's language: the instruction's fault (`refused`: the
model would not follow it, or gave nothing usable) is told apart from the server's (`unchecked`: try again).
"""

from __future__ import annotations

import logging
import time

import msgspec
import nats.js.errors

from analyzers.budget import TokenBudget
from analyzers.llm import ChatLLM
from analyzers.validation import canary
from infra.bus import Bus, Delivery, change_key, consumes
from infra.bus.names import (
    BUCKET_ANSWERED,
    BUCKET_CHAT_MODES,
    CONSUMER_CHAT_MODE_REGISTRAR,
    STREAM_CHAT_MODES,
    SUBJECT_CHAT_MODE_CHANGE,
    SUBJECT_CHAT_MODE_CHANGED,
)
from infra.domain.chat_modes import (
    MAX_PER_CHAT,
    POLICY_KEY,
    SAMPLE_INSTRUCTION,
    ChatMode,
    ChatModePolicy,
    ChatModes,
    definition_of,
    model_for,
    modes_of,
    problem_of,
    read_policy,
)
from infra.domain.contracts import ChatModeChange, ChatModeChangeResult, ChatModeRefusal
from infra.domain.definitions import ModeDefinition
from infra.domain.forgotten import forget_mark
from infra.runtime.metrics import MODE_CHANGES

log = logging.getLogger("voice_insight.modes")

INSTRUCTION_FAULTS = frozenset({"refused", "invalid_structured_output", "empty", "truncated"})
"""A canary's failures that say the instruction cannot be followed, not that the server is away."""


class Refused(Exception):
    def __init__(self, refusal: ChatModeRefusal, **values: object) -> None:
        super().__init__(refusal)
        self.refusal = refusal
        self.values = {k: str(v) for k, v in values.items()}


class ChatModeDesk:
    def __init__(self, bus: Bus, llm: ChatLLM, daily_tokens: int = 0) -> None:
        self.bus = bus
        self.llm = llm
        self.budget = TokenBudget(bus, daily_tokens)
        """A chat's mode is tried on the bot's tokens: anyone may ask, so the canaries count like analyses."""

    async def apply(self, change: ChatModeChange) -> ChatModeChangeResult:
        """Carry out one change; the result says what happened, or why not."""
        try:
            result = await self._apply(change)
        except Refused as refused:
            MODE_CHANGES.labels(f"chat_{change.action}", "refused").inc()
            log.info("chat mode: %s refused (%s)", change.action, refused.refusal)
            return refusal(change, refused.refusal, refused.values)
        MODE_CHANGES.labels(f"chat_{change.action}", "applied").inc()
        log.info("chat mode: %s applied", change.action)
        return result

    async def _apply(self, change: ChatModeChange) -> ChatModeChangeResult:
        match change.action:
            case "define":
                return await self._define(change)
            case "drop":
                return await self._drop(change)
            case "forget":
                await self.bus.erase(BUCKET_CHAT_MODES, change.chat_key)
                return self._done(change)
            case "policy":
                return await self._policy(change)

    def _done(self, change: ChatModeChange, **fields: object) -> ChatModeChangeResult:
        return ChatModeChangeResult(
            request_id=change.request_id,
            action=change.action,
            name=change.name,
            accepted=True,
            reply=change.reply,
            **fields,  # type: ignore[arg-type]
        )

    async def _define(self, change: ChatModeChange) -> ChatModeChangeResult:
        policy = await read_policy(self.bus)
        if not policy.enabled:
            raise Refused("off")
        name, title, instruction = change.name, " ".join(change.title.split()), change.instruction.strip()
        if found := problem_of(name, title, instruction):
            raise Refused(found[0], **found[1])
        await self._not_forgotten(change)
        chat = await modes_of(self.bus, change.chat_key)
        existing = chat.get(name)
        if existing is None:
            self._room_for_one(chat, policy)  # before a canary is spent
        if await self.budget.used_up():
            raise Refused("budget")
        candidate = ChatMode(
            name=name,
            title=title,
            instruction=instruction,
            version=existing.version + 1 if existing else 1,
            defined_at=time.time(),
        )
        model = await model_for(self.bus, policy)
        await self._try(definition_of(candidate, model))
        # Kept only if the chat said no /forget meanwhile: its mark is written before anything is erased, so a
        # /forget after this check finds the mode and erases it.
        await self._not_forgotten(change)
        replaced = False

        def store(current: bytes | None) -> bytes:
            nonlocal replaced
            now = msgspec.json.decode(current, type=ChatModes) if current else ChatModes()
            there = now.get(name)
            replaced = there is not None
            if there is None:
                self._room_for_one(now, policy)
                kept = (*now.modes, candidate)
            else:
                again = msgspec.structs.replace(candidate, version=max(candidate.version, there.version + 1))
                kept = tuple(again if m.name == name else m for m in now.modes)
            return msgspec.json.encode(ChatModes(modes=kept))

        await change_key(await self.bus.kv(BUCKET_CHAT_MODES), change.chat_key, store)
        try:
            await self._not_forgotten(change)  # the /forget came in the moment between the check and the write
        except Refused:
            await self._remove(change.chat_key, name)
            raise
        return self._done(change, replaced=replaced, model=model, values={"title": title})

    async def _not_forgotten(self, change: ChatModeChange) -> None:
        """Refuse a definition the chat's `/forget` came after (sent later: a larger message ID)."""
        mark = await forget_mark(await self.bus.kv(BUCKET_ANSWERED), change.chat_key)
        if mark is not None and change.reply is not None and mark.message_id > change.reply.message_id:
            raise Refused("forgotten")

    @staticmethod
    def _room_for_one(chat: ChatModes, policy: ChatModePolicy) -> None:
        if len(chat.modes) >= policy.per_chat:
            raise Refused("too_many", count=policy.per_chat)

    async def _try(self, definition: ModeDefinition) -> None:
        """The canary: the model answers the sample in the mode's fields, in time; else why not."""
        problem = await canary(definition, self.llm, self.budget.spend)
        if problem is None:
            return
        log.info("chat mode: canary failed (%s %s)", problem.kind, problem.reason)
        if problem.kind == "no_fields" or (problem.kind == "failed" and problem.reason in INSTRUCTION_FAULTS):
            raise Refused("refused", reason=problem.reason or "no_fields")
        raise Refused("unchecked", reason=problem.reason or problem.kind)

    async def _drop(self, change: ChatModeChange) -> ChatModeChangeResult:
        if not await self._remove(change.chat_key, change.name):
            raise Refused("unknown")
        return self._done(change)

    async def _remove(self, chat_key: str, name: str) -> bool:
        """Take one mode out of the chat's entry (the entry itself, with the chat's last); whether it was there."""
        kv = await self.bus.kv(BUCKET_CHAT_MODES)
        while True:
            try:
                entry = await kv.get(chat_key)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                return False
            current = msgspec.json.decode(entry.value, type=ChatModes) if entry.value else ChatModes()
            if current.get(name) is None:
                return False
            kept = tuple(m for m in current.modes if m.name != name)
            try:
                if kept:
                    await kv.update(chat_key, msgspec.json.encode(ChatModes(modes=kept)), last=entry.revision)
                else:  # the chat's last: nothing of it is left but the delete marker
                    await kv.delete(chat_key, last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone wrote in between: read again
            return True

    async def _policy(self, change: ChatModeChange) -> ChatModeChangeResult:
        if change.per_chat is not None and not 1 <= change.per_chat <= MAX_PER_CHAT:
            raise Refused("limit", max=MAX_PER_CHAT)
        if change.model:  # a model named is tried first; "" goes back to the DEFAULT mode's
            sample = ChatMode(name="SAMPLE", title="Sample", instruction=SAMPLE_INSTRUCTION)
            try:
                await self._try(definition_of(sample, change.model.strip()))
            except Refused as refused:  # the admin's model, not a chat's instruction, is what failed
                raise Refused("model", model=change.model, reason=refused.values.get("reason", "")) from None

        def changed(current: bytes | None) -> bytes:
            was = msgspec.json.decode(current, type=ChatModePolicy) if current else ChatModePolicy()
            return msgspec.json.encode(
                ChatModePolicy(
                    enabled=was.enabled if change.enabled is None else change.enabled,
                    model=was.model if change.model is None else change.model.strip(),
                    per_chat=was.per_chat if change.per_chat is None else change.per_chat,
                )
            )

        stored = await change_key(await self.bus.kv(BUCKET_CHAT_MODES), POLICY_KEY, changed)
        wanted = msgspec.json.decode(stored, type=ChatModePolicy)
        model = await model_for(self.bus, wanted)
        return self._done(change, enabled=wanted.enabled, model=model, per_chat=wanted.per_chat)


def refusal(change: ChatModeChange, why: ChatModeRefusal, values: dict[str, str]) -> ChatModeChangeResult:
    return ChatModeChangeResult(
        request_id=change.request_id,
        action=change.action,
        name=change.name,
        accepted=False,
        refusal=why,
        values=values,
        reply=change.reply,
    )


class ChatModeRegistrar:
    """The bus side of the desk: one change at a time per process, the result published for the gateway."""

    def __init__(self, bus: Bus, desk: ChatModeDesk) -> None:
        self.bus = bus
        self.desk = desk

    @consumes(
        SUBJECT_CHAT_MODE_CHANGE,
        CONSUMER_CHAT_MODE_REGISTRAR,
        stage="register",
        stream=STREAM_CHAT_MODES,
        ack_wait=60.0,
        max_attempts=10,  # a /forget's erasing must not be given up on over a NATS hiccup
        give_up="give_up",
    )
    async def handle(self, change: ChatModeChange, delivery: Delivery) -> None:
        await self._answer(await self.desk.apply(change))

    async def give_up(self, change: ChatModeChange, exc: BaseException) -> None:
        log.error("chat mode: %s not carried out after every attempt (%s)", change.action, type(exc).__name__)
        if change.action == "policy":
            await self._answer(refusal(change, "model", {"model": change.model or "…", "reason": type(exc).__name__}))
        else:
            await self._answer(refusal(change, "unchecked", {"reason": type(exc).__name__}))

    async def _answer(self, result: ChatModeChangeResult) -> None:
        if result.reply is None:
            return  # nobody to tell: a chat's /forget, which the formatter answers
        await self.bus.publish(
            SUBJECT_CHAT_MODE_CHANGED, result, msg_id=f"{result.request_id}.result", stream=STREAM_CHAT_MODES
        )
