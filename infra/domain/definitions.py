"""A mode is data: a typed definition from which the model's JSON schema and the answer's sections both follow.

A definition names the model, the prompt (the transcript's place marked once with `{text}`), and the answer's
fields: each a name, a heading per language, text or a list, and how many items to show. From the fields come
the result type the answer is validated against (and its JSON schema, with each field's description, for
structured output) and the rendering into sections, so a new mode needs no code at all. DEFAULT and TONE ship
as TOML files in `infra/config/modes/`; from then on the registry (`infra/domain/registry.py`) is the source of truth.

`problems()` is the static half of validating a candidate (name, prompt, fields, limits); the other half (the
model exists, accepts the parameters, answers a canary within the timeout) needs the LLM and lives with it.
"""

from __future__ import annotations

import re
import time
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from infra.domain.contracts import Section

SHIPPED = Path(__file__).parent.parent / "config" / "modes"
"""The definitions that ship with the project, seeded into the registry on first start."""

MODE_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
"""A mode's name: it becomes a subject token and a KV key, and users see it."""
FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
TRANSCRIPT_PLACE = "{text}"
LANGUAGES = ("ru", "en")
PROMPT_CHARS = (20, 4000)
MAX_FIELDS = 8
MAX_TOKENS = (50, 8000)
TIMEOUT_SECONDS = (1.0, 20.0)
"""An analysis must fit, with a retry, inside the analyzer's budget (25 s)."""


class AnswerField(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One part of a mode's answer: a key in the model's JSON, a section in the reply."""

    name: str
    headings: dict[str, str]
    """The section's heading per language (`ru`, `en`)."""
    kind: Literal["text", "list"] = "text"
    description: str = ""
    """What the model should put here; it goes into the JSON schema."""
    max_items: int = 0
    """A list shows at most this many items; 0: all of them."""

    def heading(self, lang: str) -> str:
        return self.headings.get(lang) or self.headings.get("en") or self.name


class ModeDefinition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One version of one mode, as stored in the registry and in a TOML file."""

    name: str
    titles: dict[str, str]
    """The answer's title for this mode per language (`ru`, `en`)."""
    model: str
    prompt: str
    fields: tuple[AnswerField, ...]
    max_tokens: int = 1000
    temperature: float = 0.7
    """Sent to classic models only: reasoning models take none."""
    timeout: float = 10.0
    context_tokens: int = 0
    """The model's context window in tokens; 0: known for OpenAI's models, 8192 for any other. A longer
    transcript is condensed part by part first (`analyzers.longtext`)."""
    enabled: bool = True
    version: int = 1
    changed_at: float = 0.0
    changed_by: str = ""
    """Who made this version: `shipped`, `cli`, or `admin:<keyed hash>` (never a raw user id)."""
    change: str = ""
    """What this version changed, in a few words."""

    def title(self, lang: str) -> str:
        return self.titles.get(lang) or self.titles.get("en") or self.name

    def successor(self, by: str, change: str, **changes: Any) -> ModeDefinition:
        """The next version: `changes` applied, stamped with who and what (the version is set by the registry)."""
        return msgspec.structs.replace(self, **changes, changed_by=by, change=change, changed_at=time.time())


def load(text: str) -> ModeDefinition:
    """A definition from TOML; raises `ValueError` with the reason if it cannot be read."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    try:
        return msgspec.convert(raw, ModeDefinition)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None


def load_file(path: Path) -> ModeDefinition:
    return load(path.read_text(encoding="utf-8"))


def shipped() -> list[ModeDefinition]:
    found = [load_file(path) for path in sorted(SHIPPED.glob("*.toml"))]
    if not found:  # an installation without its data files: say so, rather than seed an empty registry
        raise FileNotFoundError(f"no shipped mode definitions in {SHIPPED}")
    return found


def dump(definition: ModeDefinition) -> str:
    """The definition as TOML, readable and editable, and read back by `load` to the same definition."""
    raw = msgspec.to_builtins(definition)
    fields = raw.pop("fields")
    titles = raw.pop("titles")
    prompt = raw.pop("prompt")
    lines = [f"{key} = {_toml_value(value)}" for key, value in raw.items()]
    lines.append(f"prompt = {_toml_text(prompt)}")
    lines += ["", "[titles]", *(f"{k} = {_toml_value(v)}" for k, v in titles.items())]
    for field in fields:
        headings = field.pop("headings")
        lines += ["", "[[fields]]", *(f"{k} = {_toml_value(v)}" for k, v in field.items())]
        lines += ["[fields.headings]", *(f"{k} = {_toml_value(v)}" for k, v in headings.items())]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return msgspec.json.encode(str(value)).decode()  # a JSON string is a valid TOML basic string


def _toml_text(value: str) -> str:
    """Multi-line text as a TOML literal block when it can be one (nothing to escape), else a basic string."""
    if "\n" in value and "'''" not in value and not value.endswith("'"):
        return f"'''\n{value}'''"
    return _toml_value(value)


# --- what follows from the fields ---------------------------------------------------------------


def result_type(definition: ModeDefinition) -> type[msgspec.Struct]:
    """The answer's type: one attribute per field, each described, nothing else allowed."""
    return _result_type(definition.name, msgspec.json.encode(definition.fields))


@cache
def _result_type(name: str, encoded_fields: bytes) -> type[msgspec.Struct]:
    attributes: list[tuple[str, Any]] = []
    for field in msgspec.json.decode(encoded_fields, type=tuple[AnswerField, ...]):
        kind: Any = str if field.kind == "text" else list[str]
        if field.description:
            kind = Annotated[kind, msgspec.Meta(description=field.description)]
        attributes.append((field.name, kind))
    type_name = "".join(part.title() for part in name.split("_")) + "Answer"
    return msgspec.defstruct(type_name, attributes, frozen=True, forbid_unknown_fields=True)


def sections(definition: ModeDefinition, result: msgspec.Struct, lang: str) -> tuple[Section, ...]:
    """The answer as rendering-neutral sections in the user's language; empty parts are left out."""
    out: list[Section] = []
    for field in definition.fields:
        value = getattr(result, field.name)
        if field.kind == "text":
            if body := str(value).strip():
                out.append(Section(heading=field.heading(lang), body=body))
            continue
        items = tuple(item.strip() for item in value if item.strip())
        if field.max_items:
            items = items[: field.max_items]
        if items:
            out.append(Section(heading=field.heading(lang), items=items))
    return tuple(out)


# --- static validation --------------------------------------------------------------------------


def problems(definition: ModeDefinition) -> list[str]:
    """What is wrong with a candidate before any model is asked; empty when nothing is."""
    found: list[str] = []
    d = definition
    if not MODE_NAME.fullmatch(d.name):
        found.append(f"the name {d.name!r} must be 1-32 capital letters, digits or _, starting with a letter")
    for what, texts in (("titles", d.titles), *((f"headings of {f.name}", f.headings) for f in d.fields)):
        if missing := [lang for lang in LANGUAGES if not texts.get(lang, "").strip()]:
            found.append(f"{what}: missing {', '.join(missing)}")
    places = d.prompt.count(TRANSCRIPT_PLACE)
    if places != 1:
        found.append(
            f"the prompt must mark the transcript's place with {TRANSCRIPT_PLACE} exactly once (found {places})"
        )
    if not PROMPT_CHARS[0] <= len(d.prompt) <= PROMPT_CHARS[1]:
        found.append(f"the prompt must be {PROMPT_CHARS[0]}-{PROMPT_CHARS[1]} characters long (it is {len(d.prompt)})")
    if not d.fields:
        found.append("the answer needs at least one field")
    if len(d.fields) > MAX_FIELDS:
        found.append(f"the answer may have at most {MAX_FIELDS} fields")
    names = [f.name for f in d.fields]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        found.append(f"field names must be unique: {', '.join(duplicates)}")
    if bad := [n for n in names if not FIELD_NAME.fullmatch(n)]:
        found.append(f"field names must be lower_snake_case: {', '.join(bad)}")
    if bad := [f.name for f in d.fields if f.max_items < 0 or (f.kind == "text" and f.max_items)]:
        found.append(f"max_items is for lists, and not negative: {', '.join(bad)}")
    if not d.model.strip() or len(d.model) > 100:
        found.append("the model must be named")
    if not MAX_TOKENS[0] <= d.max_tokens <= MAX_TOKENS[1]:
        found.append(f"max_tokens must be {MAX_TOKENS[0]}-{MAX_TOKENS[1]}")
    if d.context_tokens and d.context_tokens < d.max_tokens + 2000:
        found.append("context_tokens, when set, must leave room for the prompt and a transcript: max_tokens + 2000")
    if not 0.0 <= d.temperature <= 2.0:
        found.append("temperature must be 0-2")
    if not TIMEOUT_SECONDS[0] <= d.timeout <= TIMEOUT_SECONDS[1]:
        found.append(f"timeout must be {TIMEOUT_SECONDS[0]:g}-{TIMEOUT_SECONDS[1]:g} seconds")
    return found
