"""Analysis modes: a prompt, a model, a result shape, and how that shape reads in each language.

A mode's result type is a msgspec Struct; its JSON schema is what we ask the model for (structured output)
and what we validate the answer against. `sections()` turns a result into rendering-neutral sections in the
user's language, so the formatter renders any mode without knowing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from infra.contracts import Section

DEFAULT_PROMPT = """Проанализируй следующий текст и верни результат в формате:

РЕЗЮМЕ: [1-2 предложения]
ОСНОВНЫЕ ПУНКТЫ:
• [пункт 1]
• [пункт 2]
• [пункт 3-5]
ДЕЙСТВИЯ: [если есть конкретные действия]

Текст: {text}"""

TONE_PROMPT = """Определи психологические характеристики следующего текста:

СКРЫТЫЕ НАМЕРЕНИЯ: [что на самом деле хочет автор]
ДОМИНИРУЮЩАЯ ЭМОЦИЯ: [основная эмоция]
СТИЛЬ ВЗАИМОДЕЙСТВИЯ: [как лучше отвечать этому человеку]

Текст: {text}"""


class DefaultResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """РЕЗЮМЕ, ОСНОВНЫЕ ПУНКТЫ, ДЕЙСТВИЯ."""

    summary: str
    key_points: list[str]
    actions: list[str]


class ToneResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """СКРЫТЫЕ НАМЕРЕНИЯ, ДОМИНИРУЮЩАЯ ЭМОЦИЯ, СТИЛЬ ВЗАИМОДЕЙСТВИЯ."""

    hidden_intentions: str
    dominant_emotion: str
    how_to_reply: str


_HEADINGS = {
    "summary": {"ru": "Резюме", "en": "Summary"},
    "key_points": {"ru": "Основные пункты", "en": "Key points"},
    "actions": {"ru": "Действия", "en": "Actions"},
    "hidden_intentions": {"ru": "Скрытые намерения", "en": "Hidden intentions"},
    "dominant_emotion": {"ru": "Доминирующая эмоция", "en": "Dominant emotion"},
    "how_to_reply": {"ru": "Как лучше ответить", "en": "How best to reply"},
}


def _h(field: str, lang: str) -> str:
    return _HEADINGS[field]["ru" if lang == "ru" else "en"]


def _default_sections(result: DefaultResult, lang: str) -> tuple[Section, ...]:
    sections = [
        Section(heading=_h("summary", lang), body=result.summary.strip()),
        Section(heading=_h("key_points", lang), items=tuple(p.strip() for p in result.key_points[:5] if p.strip())),
    ]
    actions = tuple(a.strip() for a in result.actions if a.strip())
    if actions:
        sections.append(Section(heading=_h("actions", lang), items=actions))
    return tuple(sections)


def _tone_sections(result: ToneResult, lang: str) -> tuple[Section, ...]:
    return tuple(
        Section(heading=_h(name, lang), body=getattr(result, name).strip())
        for name in ("hidden_intentions", "dominant_emotion", "how_to_reply")
    )


@dataclass(frozen=True)
class ModeSpec:
    name: str
    titles: dict[str, str]
    model: str
    prompt: str
    """Marks the transcript's place with `{text}` once; its format lines double as field descriptions."""
    result_type: type[msgspec.Struct]
    to_sections: Callable[..., tuple[Section, ...]]
    max_tokens: int
    temperature: float
    timeout: float

    def title(self, lang: str) -> str:
        return self.titles["ru" if lang == "ru" else "en"]


MODES: dict[str, ModeSpec] = {
    "DEFAULT": ModeSpec(
        name="DEFAULT",
        titles={"ru": "📌 Суть", "en": "📌 The gist"},
        model="o3",
        prompt=DEFAULT_PROMPT,
        result_type=DefaultResult,
        to_sections=_default_sections,
        max_tokens=1000,
        temperature=0.3,
        timeout=10.0,
    ),
    "TONE": ModeSpec(
        name="TONE",
        titles={"ru": "🎭 Тон", "en": "🎭 Tone"},
        model="gpt-4o",
        prompt=TONE_PROMPT,
        result_type=ToneResult,
        to_sections=_tone_sections,
        max_tokens=500,
        temperature=0.7,
        timeout=8.0,
    ),
}
