"""The mode desk: every change to the registry goes through here, validated, whoever asks.

Admins in the bot send `ModeChange` requests over the bus; the registrar (`analyzers/registrar.py`, an account of
its own, the one that may write every mode's definition) takes each one (the durable `mode-registrar` is shared
by its replicas, so exactly one does), applies it and publishes the result for the gateway to pass
on. The command line calls the same desk in-process. A change that adds or alters an analysis (a new mode, a
model, a prompt, a replaced definition) is validated first (`analyzers.validation`) and never stored if any
check fails; switching a mode on or off and rolling back to a version that already ran are not re-validated,
so that the way back is always open.
"""

from __future__ import annotations

import logging

from analyzers.llm import ChatLLM
from analyzers.validation import validate
from infra.bus import Bus, Delivery, consumes
from infra.bus.names import CONSUMER_REGISTRAR, STREAM_ADMIN, SUBJECT_MODE_CHANGE, SUBJECT_MODE_CHANGED
from infra.domain.contracts import ModeChange, ModeChangeResult
from infra.domain.definitions import ModeDefinition, load
from infra.domain.registry import ModeRegistry, RegistryConflict, Stored, UnknownMode, analysis_of, same_analysis
from infra.runtime.metrics import MODE_CHANGES

log = logging.getLogger("voice_insight.modes")


class Refused(Exception):
    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ModeDesk:
    def __init__(self, registry: ModeRegistry, llm: ChatLLM) -> None:
        self.registry = registry
        self.llm = llm

    async def apply(self, change: ModeChange) -> ModeChangeResult:
        """Validate and store one change; the result says what happened, or every reason it did not."""
        try:
            stored = await self._apply(change)
        except Refused as refused:
            MODE_CHANGES.labels(change.action, "refused").inc()
            log.info("mode %s: %s refused: %s", change.mode, change.action, "; ".join(refused.problems))
            return result_of(change, refused.problems)
        MODE_CHANGES.labels(change.action, "applied").inc()
        log.info("mode %s: %s applied by %s: v%d", stored.name, change.action, change.requested_by, stored.version)
        return result_of(change, (), stored)

    async def _apply(self, change: ModeChange) -> ModeDefinition:
        by = change.requested_by
        if change.action == "add":
            candidate = _parse(change.definition)
            try:
                await self.registry.get(candidate.name)
            except UnknownMode:
                return await self._store(candidate.successor(by, "added"), None, check=True)
            raise Refused(f"the mode {candidate.name} exists already; replace it, or choose another name")
        read = await self._read(change.mode)
        current = read.definition
        match change.action:
            case "replace":
                candidate = _parse(change.definition)
                if candidate.name != current.name:
                    raise Refused(f"the definition is for {candidate.name}, not {current.name}")
                candidate = current.successor(by, "replaced", **analysis_of(candidate))
            case "set_model":
                if not change.model:
                    raise Refused("name the model")
                candidate = current.successor(by, f"model {current.model} → {change.model}", model=change.model)
            case "edit_prompt":
                if not change.prompt:
                    raise Refused("send the new prompt")
                candidate = current.successor(by, "prompt edited", prompt=change.prompt)
            case "enable" | "disable":
                enabled = change.action == "enable"
                if current.enabled == enabled:
                    return current
                return await self._store(current.successor(by, change.action + "d", enabled=enabled), read, check=False)
            case "rollback":
                target = await self._target(change.mode, current, change.version)
                note = f"rolled back from v{current.version} to v{target.version}"
                return await self._store(target.successor(by, note, enabled=current.enabled), read, check=False)
        if same_analysis(candidate, current):
            return current
        return await self._store(candidate, read, check=True)

    async def _store(self, candidate: ModeDefinition, read: Stored | None, check: bool) -> ModeDefinition:
        """Write `candidate` over what was read; `check`: validate it first, and refuse it with every reason."""
        if check and (problems := await validate(candidate, self.llm)):
            raise Refused(*problems)
        try:
            return await self.registry.write(candidate, read)
        except RegistryConflict:
            raise Refused("someone changed this mode at the same moment; look at it again and retry") from None

    async def _read(self, mode: str) -> Stored:
        try:
            return await self.registry.get(mode.upper())
        except UnknownMode:
            known = ", ".join(d.name for d in await self.registry.all())
            raise Refused(f"there is no mode {mode!r}; the modes are {known}") from None

    async def _target(self, mode: str, current: ModeDefinition, version: int | None) -> ModeDefinition:
        """The version to roll back to: the one named, or the last one before the current that differs."""
        history = await self.registry.history(mode)
        if version is not None:
            for old in reversed(history):
                if old.version == version:
                    return old
            kept = sorted({d.version for d in history})
            raise Refused(f"{mode} has no version {version} any more; kept: {', '.join(map(str, kept))}")
        for old in reversed(history):
            if old.version != current.version:
                return old
        raise Refused(f"{mode} has no earlier version to go back to")


def _parse(text: str | None) -> ModeDefinition:
    if not text:
        raise Refused("send the definition (TOML)")
    try:
        return load(text)
    except ValueError as exc:
        raise Refused(f"the definition cannot be read: {exc}") from None


def result_of(change: ModeChange, problems: tuple[str, ...], stored: ModeDefinition | None = None) -> ModeChangeResult:
    """The answer to `change`: refused with `problems`, or applied as `stored`."""
    return ModeChangeResult(
        request_id=change.request_id,
        action=change.action,
        mode=stored.name if stored else change.mode,
        accepted=stored is not None,
        problems=problems,
        version=stored.version if stored else None,
        model=stored.model if stored else None,
        reply=change.reply,
    )


class Registrar:
    """The bus side of the desk: one request at a time per process, the result published for the gateway."""

    def __init__(self, bus: Bus, desk: ModeDesk) -> None:
        self.bus = bus
        self.desk = desk

    # A canary takes seconds; a request that keeps failing is answered with a refusal, not dropped.
    @consumes(
        SUBJECT_MODE_CHANGE,
        CONSUMER_REGISTRAR,
        stage="register",
        stream=STREAM_ADMIN,
        ack_wait=60.0,
        max_attempts=3,
        give_up="give_up",
    )
    async def handle(self, change: ModeChange, delivery: Delivery) -> None:
        await self._answer(await self.desk.apply(change))

    async def give_up(self, change: ModeChange, exc: BaseException) -> None:
        problem = f"the change could not be applied ({type(exc).__name__}); nothing was changed"
        await self._answer(result_of(change, (problem,)))

    async def _answer(self, result: ModeChangeResult) -> None:
        await self.bus.publish(SUBJECT_MODE_CHANGED, result, msg_id=f"{result.request_id}.result", stream=STREAM_ADMIN)
