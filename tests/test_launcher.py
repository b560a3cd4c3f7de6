"""`voice-insight up` on its own: embedded nats-server, every service, a real answer, a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analyzers.desk import ModeDesk
from analyzers.llm import ChatLLM, make_client
from infra.bus import Bus
from infra.domain.contracts import ModeChange
from infra.domain.modes import live_modes
from infra.domain.registry import ModeRegistry
from tests.support import (
    DECIDED,
    OPENAI_KEY,
    NatsServer,
    Speech,
    admin_bus,
    answered,
    answered_once,
    embedded_nats,
    eventually,
    in_progress,
    stack_env,
    start_up,
    wait_for_modes,
)
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = pytest.mark.timeout(300)


async def test_up_embeds_nats_answers_and_stops_cleanly_on_sigterm(
    openai_double: OpenAIDouble, model_dir: Path, speech: Speech, tmp_path: Path
) -> None:
    telegram = TelegramDouble("987654321:BBHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw2")  # its own bot: its own updates
    await telegram.start()
    env = stack_env(NatsServer(0, tmp_path), telegram, openai_double, model_dir, tmp_path / "state")
    del env["NATS_URL"]
    env["TELEGRAM_TOKEN"] = telegram.token
    proc, log = start_up(env, tmp_path)
    bus = None
    try:
        found = await embedded_nats(proc, log)
        assert Path(found.group(2)) == (tmp_path / "state" / "nats").resolve()
        # Its server has an account per service, passwords in the state folder: the test looks on as admin.
        with pytest.raises(ConnectionError, match="refused the login"):
            await Bus.connect([found.group(1)], name="nobody", wait=5)
        bus = await admin_bus(found.group(1), tmp_path / "state", "test-up")
        await wait_for_modes(bus, {"DEFAULT", "TONE"})

        await telegram.send_media(1, speech.say("The budget meeting is on Thursday."), duration=3)
        await telegram.wait_for(lambda: answered(telegram, 1), 120)
        assert "budget" in telegram.messages(1)[0].text.lower()

        # Analyzers follow the registry: a disabled mode's process stops, an enabled one starts, nothing else.
        registry = await ModeRegistry.open(bus)
        read = await registry.get("TONE")
        await registry.write(read.definition.successor("cli", "off for a while", enabled=False), read)
        await eventually(lambda: "mode TONE disabled: stopping analyzer-tone" in log.read_text(), 60, 0.1)
        assert "TONE" not in [m.mode for m in await live_modes(bus)]
        read = await registry.get("TONE")
        await registry.write(read.definition.successor("cli", "back on", enabled=True), read)
        await eventually(lambda: log.read_text().count("mode TONE: starting analyzer-tone") == 2, 60, 0.1)
        await wait_for_modes(bus, {"DEFAULT", "TONE"})

        # A mode added as data (validated by the desk, as `/add_mode` or `modes add` do) is in the next note.
        desk = ModeDesk(registry, ChatLLM(make_client(OPENAI_KEY, openai_double.base_url)))
        change = ModeChange(request_id="launcher-add", action="add", mode="", definition=DECIDED, requested_by="cli")
        assert (await desk.apply(change)).accepted
        await wait_for_modes(bus, {"DEFAULT", "TONE", "DECIDED"})
        await telegram.send_media(2, speech.say("We decided to ship on Monday."), duration=3)
        await telegram.wait_for(lambda: answered(telegram, 2), 120)
        assert "🧭 Decided" in telegram.messages(2)[0].text
    finally:
        if bus:
            await bus.close(grace=1)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
        await telegram.stop()
    output = log.read_text()
    assert code == 0, output[-3000:]
    # Every service said goodbye through its own drain, and nothing was left running.
    for service in ("gateway", "transcriber", "analyzer-default", "analyzer-tone", "analyzer-decided", "formatter"):
        assert f"{service:<14}| " in output
    assert "restarting" not in output
    # Each ran as its own account, the added mode's too (the server reloaded its accounts), and none was refused.
    assert "Violation" not in output and "refused the login" not in output
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "state")], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "the embedded nats-server outlived `up`"


async def test_a_stop_with_a_note_in_flight_finishes_it_after_the_restart(
    openai_double: OpenAIDouble, model_dir: Path, speech: Speech, tmp_path: Path
) -> None:
    """Every deploy and every Ctrl-C: a note between "Listening…" and the hand-over is finished, not lost."""
    telegram = TelegramDouble("987654322:BBHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw4")
    await telegram.start()
    env = stack_env(NatsServer(0, tmp_path), telegram, openai_double, model_dir, tmp_path / "state")
    del env["NATS_URL"]
    env["TELEGRAM_TOKEN"] = telegram.token
    env["METRICS_PORT"] = "0"  # no side doors at all: nothing listens
    log = tmp_path / "up.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as sink:
            return subprocess.Popen(
                [sys.executable, "-m", "voice_insight", "up"],
                env=env,
                cwd=tmp_path,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    async def ready(proc: subprocess.Popen[bytes], times: int) -> None:
        deadline = time.monotonic() + 120
        while log.read_text().count("gateway voice_insight.gateway: ready") < times:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.2)

    proc = start()
    try:
        await ready(proc, 1)
        assert "/metrics and /health: off (METRICS_PORT=0)" in log.read_text()
        telegram.download_delay = 3.0
        await telegram.send_media(1, speech.say("The budget meeting is on Thursday."), duration=3)
        await telegram.wait_for(lambda: bool(telegram.messages(1)), 60)
        proc.send_signal(signal.SIGTERM)  # while the gateway is still downloading the note
        assert await exited(proc, 120) == 0
        # The drain took the note in; the services stopping after the gateway may even have answered it.
        status = telegram.messages(1)[0].text
        assert in_progress(status) or status.startswith("📝 Transcript"), status
        telegram.download_delay = 0.0

        proc = start()  # and a restart neither loses it nor answers it twice
        await ready(proc, 2)
        await telegram.wait_for(lambda: answered(telegram, 1), 180)
        await asyncio.sleep(3)
        assert "budget" in telegram.messages(1)[0].text.lower()
        assert len(telegram.messages(1)) == 1 and answered_once(telegram.messages(1)[0])

        # The embedded nats-server dies: `up` starts it again on the same store, and notes flow again.
        pids = subprocess.run(
            ["pgrep", "-f", f"nats-server -c {tmp_path}"], capture_output=True, text=True
        ).stdout.split()
        assert len(pids) == 1
        os.kill(int(pids[0]), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while "nats          | exited with -9; restarting" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
        await telegram.send_media(2, speech.say("Call the supplier about the delayed shipment today."), duration=3)
        await telegram.wait_for(lambda: answered(telegram, 2), 180)
        assert "supplier" in telegram.messages(2)[0].text.lower()
    finally:
        proc.send_signal(signal.SIGTERM)
        await exited(proc, 120)
        await telegram.stop()
    assert "metrics and health on" not in log.read_text()


async def exited(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for a process without blocking the event loop (the doubles it talks to live on this loop)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("the process did not exit")
        await asyncio.sleep(0.1)
    return proc.returncode


@pytest.mark.slow  # the whole stack, and the packaged model assembled on first use
async def test_with_only_a_bot_token_up_is_a_transcription_bot_on_the_packaged_model(
    speech: Speech, tmp_path: Path
) -> None:
    """Issue 11: the first run needs a token and nothing else: Whisper is local, from PyPI packages (no model hub);
    with no OPENAI_API_KEY the analyses are off, and the bot says how to turn them on. Issue 19: every word it says
    matches that (/start promises no analyses, /privacy sends the text nowhere, an admin's mode change is answered
    at once instead of waiting on "Checking…" for analyzers that do not run)."""
    telegram = TelegramDouble("918273645:CCHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw3")
    await telegram.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NATS_", "TELEGRAM_", "OPENAI_"))}
    env.update(
        TELEGRAM_TOKEN=telegram.token,
        TELEGRAM_API_BASE=telegram.base_url,
        WHISPER_DEVICE="cpu",
        VOICE_INSIGHT_STATE_DIR=str(tmp_path / "state"),
        METRICS_PORT="0",
        ALLOWED_USERS="open",
        ADMIN_USER_IDS="1",
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",  # a download from the model hub would fail here
    )
    env.pop("WHISPER_MODEL", None)
    proc, log = start_up(env, tmp_path)
    try:
        await eventually(lambda: "voice_insight.gateway: ready" in log.read_text() or proc.poll() is not None, 180, 0.2)
        output = log.read_text()
        assert proc.poll() is None, output[-3000:]
        assert f"Whisper model: {(tmp_path / 'state' / 'models' / 'whisper-base').resolve()}" in output
        assert "analyses are off: no OPENAI_API_KEY" in output and "starting analyzer" not in output

        await telegram.send_media(1, speech.say("The budget meeting is on Thursday."), duration=3)
        await telegram.wait_for(lambda: answered(telegram, 1), 120)
        answer = telegram.messages(1)[0].text
        assert "budget" in answer.lower() and "Missing" not in answer, "a transcript, and no promise broken"
        await telegram.send_text(1, "/help")
        await telegram.wait_for(lambda: len(telegram.messages(1)) == 2, 30)
        assert "Analyses are off" in telegram.messages(1)[1].text and "OPENAI_API_KEY" in telegram.messages(1)[1].text

        async def said_to(command: str) -> str:
            count = len(telegram.messages(1))
            await telegram.send_text(1, command)
            await telegram.wait_for(lambda: len(telegram.messages(1)) > count, 30)
            return telegram.messages(1)[count].text

        start = await said_to("/start")
        assert "transcript" in start and "are off on this bot" in start and "hidden intentions" not in start
        privacy = await said_to("/privacy")
        assert "sends the text nowhere" in privacy and "LLM provider" not in privacy
        change = await said_to("/set_model DEFAULT gpt-4o")
        assert "Analyses are off on this bot" in change and "Checking" not in change
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
        await telegram.stop()
    assert code == 0, log.read_text()[-3000:]
