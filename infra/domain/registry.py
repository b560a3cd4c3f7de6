"""The mode registry: every mode's definition, with its history, in a KV bucket that is the source of truth.

Seeded once from the shipped files (`infra/config/modes/`): a mode already in the bucket is never overwritten
by a file, so what admins changed survives upgrades. Each write is compare-and-set on the revision the writer
read, so two admins (or an admin and an automatic rollback) cannot overwrite each other unknowingly.

A version names an analysis: the model, prompt, fields and parameters. A write that changes any of them gets
the next number; enabling, disabling or restoring keep the number of the content they carry, so figures per
version stay meaningful after a rollback. The bucket keeps `REGISTRY_HISTORY` revisions per mode: what rollback can
reach, and what `/mode` shows of who changed what, when.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from infra.bus import Bus
from infra.bus.names import BUCKET_REGISTRY
from infra.domain.definitions import ModeDefinition

_decode = msgspec.json.Decoder(ModeDefinition).decode

_AUDIT = ("enabled", "version", "changed_at", "changed_by", "change")
"""Fields that say who did what; everything else is the analysis itself."""


def analysis_of(definition: ModeDefinition) -> dict[str, object]:
    """What a definition analyses with (its name aside): everything but who changed it, when, and its switch."""
    return {f: getattr(definition, f) for f in definition.__struct_fields__ if f not in (*_AUDIT, "name")}


class RegistryConflict(Exception):
    """Someone else changed the mode since it was read: read again and decide again."""


class UnknownMode(LookupError):
    pass


@dataclass(frozen=True)
class Stored:
    definition: ModeDefinition
    revision: int


def with_languages_of(stored: ModeDefinition, shipped: ModeDefinition) -> ModeDefinition:
    """`stored` with the titles and headings of `shipped` in languages it has none in, its own kept."""
    headings = {f.name: f.headings for f in shipped.fields}
    fields = tuple(
        msgspec.structs.replace(f, headings={**headings.get(f.name, {}), **f.headings}) for f in stored.fields
    )
    return msgspec.structs.replace(stored, titles={**shipped.titles, **stored.titles}, fields=fields)


def same_analysis(a: ModeDefinition, b: ModeDefinition) -> bool:
    """Whether two definitions analyse alike (the same version number is right for both)."""
    return a.name == b.name and analysis_of(a) == analysis_of(b)


class ModeRegistry:
    def __init__(self, bus: Bus, kv: KeyValue) -> None:
        self.bus = bus
        self.kv = kv

    @classmethod
    async def open(cls, bus: Bus) -> ModeRegistry:
        return cls(bus, await bus.kv(BUCKET_REGISTRY))

    async def seed(self, definitions: list[ModeDefinition]) -> list[str]:
        """Create the modes that were never registered; returns their names."""
        created = []
        for definition in definitions:
            try:
                await self.kv.create(definition.name, msgspec.json.encode(definition))
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            created.append(definition.name)
        return created

    async def add_languages(self, definitions: list[ModeDefinition]) -> list[str]:
        """Give registered modes the titles and headings in languages their shipped files have and they lack (a
        bot that learnt German keeps its admins' words and gains the German ones); returns the modes given any.
        What the mode analyses is unchanged, so its version number is too; a title or heading already there, or
        a field an admin renamed, is left as the registry has it."""
        given = []
        for shipped_one in definitions:
            try:
                read = await self.get(shipped_one.name)
            except UnknownMode:
                continue
            stored = read.definition
            wider = with_languages_of(stored, shipped_one)
            if wider == stored:
                continue
            added = sorted(set(wider.titles) - set(stored.titles)) or ["headings"]
            wider = msgspec.structs.replace(
                wider, changed_at=time.time(), changed_by="shipped", change=f"words in {', '.join(added)}"
            )
            try:
                await self.kv.update(stored.name, msgspec.json.encode(wider), last=read.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # changed meanwhile: the next provisioning looks again
            given.append(stored.name)
        return given

    async def get(self, name: str) -> Stored:
        try:
            entry = await self.kv.get(name)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            raise UnknownMode(name) from None
        assert entry.value is not None and entry.revision is not None
        return Stored(_decode(entry.value), entry.revision)

    async def all(self) -> list[ModeDefinition]:
        """Every registered mode, enabled or not, DEFAULT first."""
        found = []
        for name in await self.bus.kv_keys(BUCKET_REGISTRY):
            try:
                found.append((await self.get(name)).definition)
            except UnknownMode:
                continue
        return sorted(found, key=lambda d: (d.name != "DEFAULT", d.name))

    async def history(self, name: str) -> list[ModeDefinition]:
        """The mode's revisions, oldest first (as many as the bucket keeps)."""
        values = await self.bus.kv_history(BUCKET_REGISTRY, name)
        if not values:
            raise UnknownMode(name)
        return [_decode(value) for value in values]

    async def version(self, name: str, version: int) -> ModeDefinition:
        for definition in reversed(await self.history(name)):
            if definition.version == version:
                return definition
        raise UnknownMode(f"{name} v{version}")

    async def write(self, candidate: ModeDefinition, read: Stored | None) -> ModeDefinition:
        """Store `candidate` over what was `read` (None: a new mode). It gets the next version number if it
        analyses differently from what it replaces, and keeps its own number otherwise. Raises
        `RegistryConflict` if the mode changed since it was read."""
        if read is None:
            stored = msgspec.structs.replace(candidate, version=1)
            try:
                await self.kv.create(candidate.name, msgspec.json.encode(stored))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise RegistryConflict(candidate.name) from None
            return stored
        if same_analysis(candidate, read.definition):
            number = read.definition.version
        else:
            history = await self.history(candidate.name)
            earlier = next((old for old in reversed(history) if same_analysis(candidate, old)), None)
            # Content seen before (a rollback) keeps the number it had; new content gets the next one.
            number = earlier.version if earlier else max([d.version for d in history] + [read.definition.version]) + 1
        stored = msgspec.structs.replace(candidate, version=number)
        try:
            await self.kv.update(candidate.name, msgspec.json.encode(stored), last=read.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise RegistryConflict(candidate.name) from None
        return stored
