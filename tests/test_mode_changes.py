"""Changing modes safely: every change validated against the real OpenAI client and its double, or refused
with the reason; the way back (disable, rollback) always open; the command line on the same desk."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import uuid
from pathlib import Path
from subprocess import PIPE

import pytest

from analyzers.desk import ModeDesk
from analyzers.llm import ChatLLM, make_client
from infra.bus import Bus
from infra.domain.contracts import ModeAction, ModeChange
from infra.domain.definitions import dump
from infra.domain.registry import ModeRegistry
from tests.support import DECIDED, OPENAI_KEY, SHIPPED
from voice_insight.doubles.openai_api import OpenAIDouble

_n = itertools.count(1)


def decisions(name: str | None = None) -> str:
    return DECIDED.replace('name = "DECIDED"', f'name = "{name or f"DECISIONS_{next(_n)}"}"')


async def ask(bus: Bus, double: OpenAIDouble, action: ModeAction, mode: str = "", **fields: object):  # type: ignore[no-untyped-def]
    desk = ModeDesk(await ModeRegistry.open(bus), ChatLLM(make_client(OPENAI_KEY, double.base_url)))
    change = ModeChange(request_id=uuid.uuid4().hex, action=action, mode=mode, requested_by="cli", **fields)  # type: ignore[arg-type]
    return await desk.apply(change)


async def test_a_mode_added_as_a_definition_is_validated_with_a_canary_then_stored(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    before = len(openai_double.requests)
    result = await ask(private_bus, openai_double, "add", definition=decisions())
    assert result.accepted and result.version == 1 and result.model == "gpt-4o-mini", result.problems
    canary = openai_double.requests[before:]
    assert len(canary) == 1 and canary[0]["response_format"]["json_schema"]["strict"] is True
    stored = (await (await ModeRegistry.open(private_bus)).get(result.mode)).definition
    assert stored.changed_by == "cli" and stored.change == "added" and stored.enabled

    again = await ask(private_bus, openai_double, "add", definition=decisions(result.mode))
    assert not again.accepted and "exists already" in again.problems[0]


async def test_set_model_to_a_model_the_server_does_not_have_is_refused_and_the_old_one_stays(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    before = len(openai_double.requests)
    result = await ask(private_bus, openai_double, "set_model", "TONE", model="gpt-7-imaginary")
    assert not result.accepted
    assert result.problems == ("the model 'gpt-7-imaginary' does not exist on the configured server",)
    assert len(openai_double.requests) == before, "refused before any canary"
    assert (await (await ModeRegistry.open(private_bus)).get("TONE")).definition.model == "gpt-4o"


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("legacy-chat", "not in the mode's fields"),  # a model without structured output
        ("o4-mini", None),  # a reasoning model: max_completion_tokens, no temperature; accepted
    ],
)
async def test_the_canary_decides_what_the_models_list_cannot(
    private_bus: Bus, openai_double: OpenAIDouble, model: str, why: str | None
) -> None:
    added = await ask(private_bus, openai_double, "add", definition=decisions())
    result = await ask(private_bus, openai_double, "set_model", added.mode, model=model)
    if why is None:
        assert result.accepted and result.version == 2, result.problems
        assert "temperature" not in openai_double.requests[-1] and "max_completion_tokens" in openai_double.requests[-1]
    else:
        assert not result.accepted and why in result.problems[0]


async def test_a_model_that_fails_its_canary_is_never_activated(private_bus: Bus, openai_double: OpenAIDouble) -> None:
    added = await ask(private_bus, openai_double, "add", definition=decisions())
    openai_double.break_model("gpt-4.1", status=500)
    try:
        result = await ask(private_bus, openai_double, "set_model", added.mode, model="gpt-4.1")
    finally:
        openai_double.heal()
    assert not result.accepted and result.problems == ("the canary call to gpt-4.1 failed: http_500",)
    assert (await (await ModeRegistry.open(private_bus)).get(added.mode)).definition.version == 1


async def test_a_prompt_without_the_placeholder_is_refused(private_bus: Bus, openai_double: OpenAIDouble) -> None:
    result = await ask(
        private_bus, openai_double, "edit_prompt", "DEFAULT", prompt="Summarise the note briefly, please."
    )
    assert not result.accepted and "{text} exactly once (found 0)" in result.problems[0]
    broken = decisions().replace("prompt = '''", "prompt = 'oops'\nnothing = '''")
    result = await ask(private_bus, openai_double, "add", definition=broken)
    assert not result.accepted and result.problems[0].startswith("the definition cannot be read")


async def test_rollback_by_hand_and_to_a_named_version_and_switching_off_and_on(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    mode = (await ask(private_bus, openai_double, "add", definition=decisions())).mode
    assert (await ask(private_bus, openai_double, "set_model", mode, model="gpt-4o")).version == 2
    assert (await ask(private_bus, openai_double, "set_model", mode, model="gpt-4.1")).version == 3
    back = await ask(private_bus, openai_double, "rollback", mode)
    assert (back.accepted, back.version, back.model) == (True, 2, "gpt-4o")
    named = await ask(private_bus, openai_double, "rollback", mode, version=1)
    assert (named.version, named.model) == (1, "gpt-4o-mini")
    assert not (await ask(private_bus, openai_double, "rollback", mode, version=9)).accepted
    off = await ask(private_bus, openai_double, "disable", mode)
    registry = await ModeRegistry.open(private_bus)
    assert off.accepted and not (await registry.get(mode)).definition.enabled
    await ask(private_bus, openai_double, "enable", mode)
    history = await registry.history(mode)
    assert [(d.version, d.change) for d in history][-3:] == [
        (1, "rolled back from v2 to v1"),
        (1, "disabled"),
        (1, "enabled"),
    ]


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`voice-insight modes ...` as a process; asynchronously, since the OpenAI double answers on this loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voice_insight", "modes", *args, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


@pytest.mark.slow  # processes of their own
async def test_the_command_line_lists_shows_changes_exports_and_imports(
    private_bus: Bus, openai_double: OpenAIDouble, tmp_path: Path
) -> None:
    url = f"nats://{private_bus.nc.connected_url.netloc}"  # type: ignore[union-attr]
    env = {
        "PATH": os.environ["PATH"],
        "NATS_URL": url,
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": openai_double.base_url,
    }
    listed = await cli(env, "list")
    assert listed.returncode == 0 and "DEFAULT" in listed.stdout and "TONE" in listed.stdout

    (tmp_path / "new.toml").write_text(decisions("FROM_FILE"))
    assert (await cli(env, "add", str(tmp_path / "new.toml"))).returncode == 0
    refused = await cli(env, "set-model", "FROM_FILE", "nope-model")
    assert refused.returncode == 1 and "does not exist on the configured server" in refused.stderr
    assert (await cli(env, "set-model", "FROM_FILE", "gpt-4o")).returncode == 0

    shown = await cli(env, "show", "FROM_FILE")
    assert 'model = "gpt-4o"' in shown.stdout and "v2" in shown.stdout and "model gpt-4o-mini → gpt-4o" in shown.stdout

    exported = tmp_path / "export"
    assert (await cli(env, "export", str(exported))).returncode == 0
    assert {p.name for p in exported.iterdir()} >= {"DEFAULT.toml", "TONE.toml", "FROM_FILE.toml"}
    assert (exported / "TONE.toml").read_text() == dump(
        (await (await ModeRegistry.open(private_bus)).get("TONE")).definition
    )

    # An edited export comes back in as a new version; an unchanged one changes nothing.
    edited = (exported / "FROM_FILE.toml").read_text().replace("max_tokens = 300", "max_tokens = 400")
    (exported / "FROM_FILE.toml").write_text(edited)
    imported = await cli(env, "import", str(exported / "FROM_FILE.toml"), str(exported / "TONE.toml"))
    assert imported.returncode == 0, imported.stderr
    assert "FROM_FILE: replace done: v3" in imported.stdout and "TONE: replace done: v1" in imported.stdout

    # `edit` opens the definition in $EDITOR and brings back what was saved, validated like anything else.
    env["EDITOR"] = "sed -i s/max_tokens\\ =\\ 400/max_tokens\\ =\\ 450/"
    edited = await cli(env, "edit", "FROM_FILE")
    assert edited.returncode == 0 and "FROM_FILE: replace done: v4" in edited.stdout, edited.stderr
    assert (await (await ModeRegistry.open(private_bus)).get("FROM_FILE")).definition.max_tokens == 450

    assert SHIPPED["TONE"].version == 1
