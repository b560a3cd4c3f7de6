"""The contract for analyzers written elsewhere: published as files that cannot drift from the code, an example
analyzer that uses nothing of this project, and a conformance check that tells a good one from a bad one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import jsonschema
import msgspec
import pytest

from infra.bus import Bus
from infra.bus.names import BUCKET_MODES
from infra.domain.schemas import CONTRACT, documents
from tests.support import NatsServer, Speech, Stack, answer_of, fresh, new_chat, wait_for_modes
from voice_insight.doubles.telegram_api import TelegramDouble

REPO = Path(__file__).parent.parent
EXAMPLE = REPO / "examples" / "words_analyzer.py"


def test_the_published_schemas_and_examples_are_what_the_code_says() -> None:
    published = REPO / "docs" / "contracts"
    for name, content in documents().items():
        assert (published / name).read_text(encoding="utf-8") == content, (
            f"{name} is stale: run `.venv/bin/python -m infra.domain.schemas docs/contracts`"
        )
    for subject, (_, kind, example) in CONTRACT.items():
        schema = json.loads((published / f"{subject}.schema.json").read_text())
        wire = json.loads((published / f"{subject}.example.json").read_text())
        jsonschema.validate(wire, schema)  # the example is valid by the schema...
        assert msgspec.convert(wire, kind) == example  # ...and by the types the services decode with


def test_the_example_analyzer_uses_nothing_of_this_project() -> None:
    source = EXAMPLE.read_text()
    for package in ("infra", "gateway", "transcriber", "analyzers", "formatter"):
        assert f"from {package}" not in source and f"import {package}" not in source


async def conformance(env: dict[str, str], mode: str, timeout: float = 20) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voice_insight", "conformance", mode, "--timeout", str(timeout),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout + 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@asynccontextmanager
async def words_analyzer(nats_url: str, bus: Bus, login: dict[str, str] | None = None) -> AsyncIterator[None]:
    """The example analyzer as its own process (logging in with `login`'s NATS_USER and NATS_PASSWORD_FILE),
    announced on `bus`; stopped and forgotten afterwards."""
    env = {"PATH": os.environ["PATH"], "NATS_URL": nats_url, **(login or {})}
    outsider = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        await wait_for_modes(bus, {"WORDS"}, timeout=30)
        yield
    finally:
        outsider.send_signal(signal.SIGTERM)
        await asyncio.wait_for(outsider.wait(), 20)
        await (await bus.kv(BUCKET_MODES)).delete("WORDS")  # later notes must not wait for it
    assert outsider.returncode == 0


@pytest.mark.slow  # processes of their own
async def test_the_conformance_check_passes_a_good_analyzer_and_fails_a_missing_one(private_bus: Bus) -> None:
    """Against a NATS of its own, as the check asks: its sample transcript reaches every analyzer there."""
    url = f"nats://{private_bus.nc.connected_url.netloc}"  # type: ignore[union-attr]
    env = {"PATH": os.environ["PATH"], "NATS_URL": url}
    async with words_analyzer(url, private_bus):
        code, report = await conformance(env, "WORDS")
    assert code == 0, report
    assert "✓ it was published with Nats-Msg-Id" in report and "✓ the announcement is fresh" in report
    code, report = await conformance(env, "NOBODY", timeout=2)
    assert code == 1 and "✗ an announcement under key NOBODY" in report


@pytest.mark.slow
async def test_an_analyzer_written_elsewhere_joins_by_subscribing(
    stack: Stack, nats_server: NatsServer, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    async with words_analyzer(nats_server.url, bus, nats_server.logins.env("analyzer-WORDS")):
        await wait_for_modes(bus, {"DEFAULT", "TONE", "WORDS"})
        chat = new_chat()
        await telegram.send_media(chat, speech.say(fresh("The launch moves to Friday.")), duration=6)
        text = (await answer_of(telegram, chat)).text
    assert "🔢 Words" in text and "Length:" in text and "words" in text
    assert "📌 The gist" in text and "🎭 Tone" in text
