"""Modes as data: definitions, the registry with its versions, and analyzers that follow it without a restart."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import msgspec
import pytest

from analyzers.service import AnalyzerService
from analyzers.validation import validate
from infra.bus import Bus, deliver, encode
from infra.bus.names import STREAM, analysis_subject
from infra.domain.contracts import Analysis, ModeInfo
from infra.domain.definitions import AnswerField, ModeDefinition, dump, load, problems, result_type, sections, shipped
from infra.domain.modes import live_modes
from infra.domain.registry import ModeRegistry, RegistryConflict
from tests.support import SHIPPED, a_transcript, an_analyzer, eventually, first_delivery
from voice_insight.doubles.openai_api import OpenAIDouble

_n = itertools.count(1)
FIRST = first_delivery(AnalyzerService.handle)


def a_mode(name: str | None = None, **changes: object) -> ModeDefinition:
    """A custom mode, built only from data."""
    definition = ModeDefinition(
        name=name or f"CUSTOM_{next(_n)}",
        titles={"ru": "🧭 Решения", "en": "🧭 Decisions"},
        model="gpt-4o-mini",
        prompt="List the decisions made and who owns each one.\n\nText: {text}",
        fields=(
            AnswerField(name="decisions", headings={"ru": "Решения", "en": "Decisions"}, kind="list", max_items=2),
            AnswerField(name="owner", headings={"ru": "Ответственный", "en": "Owner"}, description="who decides"),
        ),
        max_tokens=300,
        temperature=0.2,
        timeout=8.0,
    )
    return msgspec.structs.replace(definition, **changes)


def test_the_shipped_modes_are_files_that_read_back_as_written() -> None:
    assert [d.name for d in shipped()] == ["DEFAULT", "TONE"]
    for definition in shipped():
        assert problems(definition) == []
        assert load(dump(definition)) == definition
    assert SHIPPED["DEFAULT"].model == "o3" and SHIPPED["TONE"].model == "gpt-4o"
    assert SHIPPED["TONE"].max_tokens == 500 and SHIPPED["TONE"].temperature == 0.7


def test_the_schema_and_the_sections_follow_from_the_fields() -> None:
    mode = a_mode()
    schema = msgspec.json.schema(result_type(mode))
    root = next(iter(schema["$defs"].values()))
    assert root["required"] == ["decisions", "owner"] and root["additionalProperties"] is False
    assert root["properties"]["decisions"]["type"] == "array"
    assert root["properties"]["owner"] == {"type": "string", "description": "who decides"}

    answer = msgspec.json.decode(
        b'{"decisions": ["ship", " ", "hire", "move"], "owner": " Anna "}', type=result_type(mode)
    )
    shown = sections(mode, answer, "ru")
    assert [(s.heading, s.body, s.items) for s in shown] == [
        ("Решения", "", ("ship", "hire")),  # blanks dropped, at most max_items
        ("Ответственный", "Anna", ()),
    ]
    empty = msgspec.json.decode(b'{"decisions": [], "owner": ""}', type=result_type(mode))
    assert sections(mode, empty, "en") == (), "empty parts are left out"


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"name": "bad name"}, "the name"),
        ({"prompt": "Summarise the note, please, in a few words."}, "exactly once"),
        ({"prompt": "Compare {text} with {text} and answer briefly."}, "(found 2)"),
        ({"prompt": "{text}"}, "characters long"),
        ({"titles": {"en": "Only English"}}, "titles: missing ru"),
        ({"fields": ()}, "at least one field"),
        ({"fields": (AnswerField(name="a", headings={"ru": "А", "en": "A"}),) * 2}, "unique: a"),
        ({"fields": (AnswerField(name="Bad-Name", headings={"ru": "А", "en": "A"}),)}, "lower_snake_case"),
        ({"max_tokens": 10}, "max_tokens"),
        ({"timeout": 60.0}, "timeout"),
    ],
)
def test_a_candidate_with_a_static_flaw_is_told_exactly_why(changes: dict[str, object], complaint: str) -> None:
    found = problems(a_mode(**changes))
    assert any(complaint in line for line in found), found


def test_a_file_that_is_not_a_definition_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="TOML"):
        load("name = ")
    with pytest.raises(ValueError, match="model"):
        load('name = "X"\nprompt = "p {text}"\nfields = []\n[titles]\nen = "x"\n')


async def test_the_registry_is_seeded_once_and_versions_name_what_an_analysis_does(private_bus: Bus) -> None:
    registry = await ModeRegistry.open(private_bus)
    assert await registry.seed(shipped()) == [], "already seeded: a file never overwrites the registry"
    mode = a_mode()
    first = await registry.write(mode, None)
    assert first.version == 1
    with pytest.raises(RegistryConflict):
        await registry.write(mode, None)

    read = await registry.get(mode.name)
    second = await registry.write(read.definition.successor("cli", "a cheaper model", model="gpt-4o"), read)
    assert second.version == 2 and second.changed_by == "cli" and second.change == "a cheaper model"
    stale = read
    with pytest.raises(RegistryConflict):
        await registry.write(stale.definition.successor("admin:x", "racing"), stale)

    read = await registry.get(mode.name)
    disabled = await registry.write(read.definition.successor("cli", "off", enabled=False), read)
    assert disabled.version == 2 and not disabled.enabled, "switching a mode off is not a new analysis"

    read = await registry.get(mode.name)
    restored = await registry.write((await registry.version(mode.name, 1)).successor("cli", "back to v1"), read)
    assert restored.version == 1 and restored.model == "gpt-4o-mini", "content seen before keeps its number"
    assert [d.version for d in await registry.history(mode.name)] == [1, 2, 2, 1]
    assert await registry.seed([a_mode(mode.name, model="o3")]) == []
    assert (await registry.get(mode.name)).definition.model == "gpt-4o-mini"


async def test_an_upgrade_gives_registered_modes_the_words_of_new_languages_and_keeps_the_admins(
    private_bus: Bus,
) -> None:
    """The registry is seeded once; a bot that learnt German since must still title its analyses in German. The
    words an admin chose stay, the analysis and so its version do not change, and a second run changes nothing."""
    registry = await ModeRegistry.open(private_bus)
    before = a_mode()
    await registry.write(before, None)
    read = await registry.get(before.name)
    mine = {"ru": "🧭 Решения", "en": "🧭 What we decided"}
    await registry.write(read.definition.successor("admin:x", "my title", titles=mine), read)
    version = (await registry.get(before.name)).definition.version

    fields = tuple(msgspec.structs.replace(f, headings={**f.headings, "de": f"DE {f.name}"}) for f in before.fields)
    newer = msgspec.structs.replace(before, titles={**before.titles, "de": "🧭 Beschlüsse"}, fields=fields)
    assert await registry.add_languages([newer, a_mode("NEVER_REGISTERED")]) == [before.name]
    now = (await registry.get(before.name)).definition
    assert now.titles == {**mine, "de": "🧭 Beschlüsse"} and now.version == version
    assert [f.headings["de"] for f in now.fields] == ["DE decisions", "DE owner"]
    assert now.fields[0].headings["en"] == "Decisions"
    assert await registry.add_languages([newer]) == [], "nothing new the second time"
    assert all(d.titles.get("de") for d in await registry.all() if d.name in ("DEFAULT", "TONE"))


async def last_analysis(bus: Bus, mode: str, cid: str) -> Analysis:
    stored = await bus.js.get_last_msg(STREAM, analysis_subject(mode))
    analysis = msgspec.json.decode(stored.data, type=Analysis)
    assert analysis.correlation_id == cid
    return analysis


async def test_a_new_version_applies_to_the_next_transcript_and_work_in_flight_keeps_its_own(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    registry = await ModeRegistry.open(private_bus)
    mode = await registry.write(a_mode(), None)
    analyzer = await an_analyzer(private_bus, openai_double.base_url, mode.name)

    # A transcript in the LLM's hands while an admin changes the model: it finishes on version 1.
    before = len(openai_double.requests)
    openai_double.latency = 0.5
    try:
        in_flight = asyncio.create_task(analyzer.handle(a_transcript("flight-1", "We decided to ship."), FIRST))
        await eventually(lambda: len(openai_double.requests) > before)
        read = await registry.get(mode.name)
        await registry.write(read.definition.successor("cli", "a bigger model", model="gpt-4.1"), read)
        await in_flight
    finally:
        openai_double.latency = 0.0
    old = await last_analysis(private_bus, mode.name, "flight-1")
    assert (old.mode_version, openai_double.requests[before]["model"]) == (1, "gpt-4o-mini")
    assert [s.heading for s in old.sections] == ["Decisions", "Owner"], "rendered from the fields, no code"

    # The next one, with no restart, on version 2.
    await analyzer.handle(a_transcript("flight-2", "We decided to hire."), FIRST)
    new = await last_analysis(private_bus, mode.name, "flight-2")
    assert (new.mode_version, openai_double.requests[-1]["model"]) == (2, "gpt-4.1")
    info = await analyzer.info()
    assert info is not None and (info.version, info.model) == (2, "gpt-4.1")


async def test_a_disabled_mode_stops_being_waited_for_at_once_and_answers_no_more(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    registry = await ModeRegistry.open(private_bus)
    mode = await registry.write(a_mode(), None)
    analyzer = await an_analyzer(private_bus, openai_double.base_url, mode.name)
    info = await analyzer.info()
    assert info is not None
    await (await private_bus.kv("voice-modes")).put(mode.name, encode(info))  # its heartbeat, once
    assert mode.name in [m.mode for m in await live_modes(private_bus)]

    read = await registry.get(mode.name)
    await registry.write(read.definition.successor("cli", "off", enabled=False), read)
    assert mode.name not in [m.mode for m in await live_modes(private_bus)], "the registry decides, not the beat"
    assert await analyzer.info() is None, "its heartbeat withdraws the announcement"

    before = len(openai_double.requests)
    verdict = await deliver(analyzer.handle, a_transcript("off-1", "Anything."), FIRST)
    assert (verdict.outcome, verdict.reason) == ("failed", "disabled")
    assert len(openai_double.requests) == before, "no tokens for a disabled mode"
    assert (await last_analysis(private_bus, mode.name, "off-1")).error == "disabled"


async def test_an_analyzer_written_elsewhere_still_joins_by_its_announcement(private_bus: Bus) -> None:
    outsider = ModeInfo(
        mode="OUTSIDE", title="Outside", model="-", max_tokens=0, temperature=None, timeout=5, structured_output=False
    )
    await (await private_bus.kv("voice-modes")).put("OUTSIDE", encode(outsider))
    assert "OUTSIDE" in [m.mode for m in await live_modes(private_bus)]
    assert time.time() - outsider.announced_at < 60


async def test_the_same_transcript_by_the_same_version_within_the_hour_costs_no_llm_call(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    registry = await ModeRegistry.open(private_bus)
    mode = await registry.write(a_mode(), None)
    analyzer = await an_analyzer(private_bus, openai_double.base_url, mode.name)
    text = "We decided to move the launch to Friday, and Anna owns it."

    before = len(openai_double.requests)
    await analyzer.handle(a_transcript("cache-1", text), FIRST)
    await analyzer.handle(a_transcript("cache-2", text), FIRST)  # another note, the same words
    assert len(openai_double.requests) == before + 1
    first = await last_analysis_of(private_bus, mode.name, "cache-1")
    second = await last_analysis_of(private_bus, mode.name, "cache-2")
    assert second.sections == first.sections and second.mode_version == first.mode_version == 1

    await analyzer.handle(a_transcript("cache-3", text, ui_language="ru"), FIRST)  # an answer in another language
    read = await registry.get(mode.name)
    await registry.write(read.definition.successor("cli", "new model", model="gpt-4.1"), read)
    await analyzer.handle(a_transcript("cache-4", text), FIRST)  # a new version asks the model again
    assert len(openai_double.requests) == before + 3


async def last_analysis_of(bus: Bus, mode: str, cid: str) -> Analysis:
    """The analysis of note `cid`, wherever it is in the stream."""
    info = await bus.js.stream_info(STREAM)
    for seq in range(info.state.last_seq, info.state.first_seq - 1, -1):
        try:
            stored = await bus.js.get_msg(STREAM, seq)
        except Exception:
            continue
        if stored.subject == analysis_subject(mode):
            analysis = msgspec.json.decode(stored.data, type=Analysis)
            if analysis.correlation_id == cid:
                return analysis
    raise AssertionError(f"no analysis of {cid}")


def test_the_readme_example_is_a_valid_definition() -> None:
    """ "Add a mode in one minute" must work as written."""
    readme = (Path(__file__).parent.parent / "docs" / "modes.md").read_text(encoding="utf-8")
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    example = load(block)
    assert example.name == "DECISIONS" and problems(example) == []


async def test_a_busy_registry_never_reads_as_empty_or_cut_short(private_bus: Bus) -> None:
    """Many readers at once (the gateway per note, every analyzer per transcript), each on its own connection:
    nats-py's watcher-based `keys()` and `history()` now and then answer "nothing" for a full bucket
    (nats-io/nats.py#842)."""
    url = f"nats://{private_bus.nc.connected_url.netloc}"  # type: ignore[union-attr]
    readers = [await Bus.connect([url], name=f"reader-{n}") for n in range(40)]
    try:

        async def read(bus: Bus) -> list[tuple[set[str], int]]:
            registry = await ModeRegistry.open(bus)
            return [({d.name for d in await registry.all()}, len(await registry.history("TONE"))) for _ in range(25)]

        seen = [reading for readings in await asyncio.gather(*map(read, readers)) for reading in readings]
    finally:
        await asyncio.gather(*(bus.close(grace=0) for bus in readers))
    assert all(names >= {"DEFAULT", "TONE"} for names, _ in seen)
    assert len({length for _, length in seen}) == 1


async def test_a_model_the_llm_server_lacks_is_said_with_the_models_it_has(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    """Issue 11: a local server (Ollama, vLLM) without the mode's model is named at once, never a silent miss."""
    analyzer = await an_analyzer(private_bus, openai_double.base_url, "TONE")
    analyzer.definition = msgspec.structs.replace(analyzer.definition, model="llama3.2")
    problem = await analyzer.model_problem(analyzer.definition)
    assert "model llama3.2 is not on the LLM server, which has: gpt-4.1, gpt-4o, gpt-4o-mini" in problem
    assert "/set_model TONE <model>" in problem and "MODEL_TONE=<model>" in problem
    assert await analyzer.model_problem(await analyzer.refresh()) == "", "the registry's gpt-4o is there"


async def test_a_model_named_as_ollama_resolves_it_is_on_the_server(private_bus: Bus) -> None:
    """Issue 19: Ollama lists tagged ids (`llama3.2:latest`) and takes `llama3.2` to mean `llama3.2:latest`, so the
    README's `MODEL_DEFAULT=llama3.2` names a model the server has; validation compared ids exactly and refused it."""
    ollama = OpenAIDouble.ollama("llama3.2:latest", "qwen2.5:3b-instruct")
    await ollama.start()
    try:
        analyzer = await an_analyzer(private_bus, ollama.base_url, "TONE")
        assert await analyzer.model_problem(msgspec.structs.replace(analyzer.definition, model="llama3.2")) == ""
        assert await analyzer.model_problem(msgspec.structs.replace(analyzer.definition, model="qwen2.5:3b")), (
            "another tag is another model"
        )
        candidate = msgspec.structs.replace(analyzer.definition, model="llama3.2", timeout=20.0)
        assert await validate(candidate, analyzer.llm) == [], "the canary runs, and passes, on the resolved model"
        assert ollama.requests[-1]["model"] == "llama3.2"
    finally:
        await ollama.stop()
