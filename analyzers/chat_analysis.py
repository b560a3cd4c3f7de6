"""The chat modes' analyzer: `Transcript` in, one `Analysis` per chat mode the note asked for out.

An analyzer like any mode's, subscribed to the text subject with a durable of its own (`asker-chat-modes`); it
runs in the asker's process, which answers the chats' other requests of the LLM. A note names its chat's modes
(`chat.<NAME>`, `infra.domain.chat_modes`); their definitions are read from `voice-chat-modes` by the note's chat
key, each run on the model the bot's admins chose for chat modes, all at once, through the same call as a
registry mode's (the chat's instruction as the prompt, the transcript fenced as data, long ones condensed). Every
analysis comes on `voice.analysis.chat`, and a failed one too (`error` set), so the formatter answers at once.

The token budget covers them, and `/stats` counts them per chat mode under the chat's short key and the mode's
name, never its instruction.
"""

from __future__ import annotations

import asyncio
import logging

from analyzers.budget import TokenBudget
from analyzers.llm import ChatLLM, LLMFailure
from analyzers.service import analyse, clean, clean_sections, no_longer_awaited
from infra.bus import Bus, Delivery, consumes
from infra.bus.names import (
    CONSUMER_ASKER_CHAT_MODES,
    SUBJECT_CHAT_ANALYSIS,
    SUBJECT_TRANSCRIPT,
)
from infra.domain import usage
from infra.domain.chat_modes import (
    ChatMode,
    ChatModePolicy,
    announcement,
    definition_of,
    is_chat_mode,
    mode_id,
    model_for,
    modes_of,
    name_of,
    read_policy,
    usage_key,
)
from infra.domain.contracts import Analysis, ModeInfo, Section, Transcript
from infra.runtime.metrics import LIMITED, MODE_CALLS, MODE_LATENCY, SKIPPED, TOKENS

log = logging.getLogger("voice_insight.analyzer")

LABEL = "chat"
"""Every chat mode's name in metrics: a chat's words are no label."""


class ChatModeAnalyzer:
    def __init__(self, bus: Bus, llm: ChatLLM, join_timeout: float = 90.0, daily_tokens: int = 0) -> None:
        self.bus = bus
        self.llm = llm
        self.join_timeout = join_timeout
        self.budget = TokenBudget(bus, daily_tokens)

    async def info(self) -> ModeInfo | None:
        """The announcement that chat modes are run here; none while the bot's admins have them off."""
        policy = await read_policy(self.bus)
        return announcement(await model_for(self.bus, policy)) if policy.enabled else None

    # Every transcript from when chat modes were first run; most ask for none, and are acked at once.
    @consumes(
        SUBJECT_TRANSCRIPT,
        CONSUMER_ASKER_CHAT_MODES,
        stage="analyze",
        mode=LABEL,
        ack_wait=60.0,
        max_attempts=5,
        concurrency=8,
        deliver_new_only=True,
        give_up="give_up",
    )
    async def handle(self, transcript: Transcript, delivery: Delivery) -> None:
        asked = [name_of(m) for m in transcript.modes or () if is_chat_mode(m)]
        if not asked:
            return
        if why := await no_longer_awaited(self.bus, transcript, self.join_timeout):
            log.info("%s: chat modes skipped (%s)", transcript.correlation_id, why)
            SKIPPED.labels(LABEL, why).inc()
            return
        chat = await modes_of(self.bus, transcript.chat_key)
        policy = await read_policy(self.bus)
        model = await model_for(self.bus, policy)
        done = await asyncio.gather(
            *(self.one(transcript, name, chat.get(name), policy, model) for name in asked), return_exceptions=True
        )
        # One chat mode that broke is said as failed; the others are not run (and paid for) again on a redelivery.
        for name, outcome in zip(asked, done, strict=True):
            if isinstance(outcome, BaseException):
                log.error("%s: a chat mode broke (%s)", transcript.correlation_id, type(outcome).__name__)
                await self._failed(transcript.correlation_id, name, "internal", model=model)

    async def one(
        self, transcript: Transcript, name: str, mode: ChatMode | None, policy: ChatModePolicy, model: str
    ) -> None:
        """One chat mode on one transcript: its analysis, or why there is none, published either way."""
        cid = transcript.correlation_id
        title = mode.title if mode is not None else name
        version = mode.version if mode is not None else 0

        async def failed(reason: str) -> None:
            await self._failed(cid, name, reason, title=title, model=model, version=version)

        if mode is None:
            return await failed("dropped")  # the chat dropped it after the note came
        if not policy.enabled:
            return await failed("disabled")
        if await self.budget.used_up():
            LIMITED.labels("budget").inc()
            return await failed("budget_exhausted")
        d = definition_of(mode, model)
        key = usage_key(transcript.chat_key or "", name)
        try:
            done, spent = await analyse(self.llm, d, transcript.text, transcript.ui_language, cid)
        except LLMFailure as failure:
            log.warning("%s: a chat mode failed: %s", cid, failure.reason)
            await self._count(key, version, "error", error=failure.reason)
            return await failed(failure.reason)
        await self.budget.spend(spent)
        TOKENS.labels(LABEL, d.model, "input").inc(spent.input_tokens)
        TOKENS.labels(LABEL, d.model, "output").inc(spent.output_tokens)
        MODE_LATENCY.labels(LABEL, "0").observe(done.latency)
        await self._count(
            key, version, "ok", input_tokens=spent.input_tokens, output_tokens=spent.output_tokens, latency=done.latency
        )
        found = shown(done.parsed)
        analysis = Analysis(
            correlation_id=cid,
            mode=mode_id(name),
            title=mode.title,
            model=done.model,
            sections=found,
            text=None if found or done.parsed is not None else clean(done.content),
            usage=spent,
            latency=round(done.latency, 3),
            mode_version=version,
        )
        log.info("%s: a chat mode done in %.2fs", cid, done.latency)
        await self._publish(analysis)

    async def give_up(self, transcript: Transcript, exc: BaseException) -> None:
        """Every attempt failed: each chat mode the note waits for says so, so the formatter answers now."""
        for name in [name_of(m) for m in transcript.modes or () if is_chat_mode(m)]:
            await self._failed(transcript.correlation_id, name, "internal")

    async def _count(self, key: str, version: int, outcome: str, **figures: object) -> None:
        MODE_CALLS.labels(LABEL, "0", outcome).inc()
        try:
            await usage.record(self.bus, key, version, **figures)  # type: ignore[arg-type]
        except Exception as exc:
            log.warning("usage not recorded (%s)", type(exc).__name__)

    async def _failed(
        self, cid: str, name: str, reason: str, title: str = "", model: str = "", version: int = 0
    ) -> None:
        """No analysis of this chat mode for this note, and why (`Analysis.error`): the formatter answers now."""
        failure = Analysis(
            correlation_id=cid, mode=mode_id(name), title=title or name, model=model, error=reason, mode_version=version
        )
        await self._publish(failure)

    async def _publish(self, analysis: Analysis) -> None:
        await self.bus.publish(
            SUBJECT_CHAT_ANALYSIS, analysis, msg_id=f"{analysis.correlation_id}.analysis.{analysis.mode}"
        )


def shown(parsed: object) -> tuple[Section, ...]:
    """A chat mode's answer as one section under its title: the points, and the sentence, if any."""
    if parsed is None:
        return ()
    items = tuple(str(i) for i in getattr(parsed, "points", ()) if str(i).strip())
    body = str(getattr(parsed, "note", "") or "")
    if not items and not body.strip():
        return ()
    return clean_sections((Section(heading="", body=body, items=items[:15]),))
