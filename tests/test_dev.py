"""`voice-insight dev`: the whole stack with the Telegram and OpenAI doubles and no token, and `voice-insight dev
send FILE`, which plays a user sending a voice note and prints the answer as the chat shows it.

Both run as a person runs them: separate processes in a folder of their own, with a HOME of their own (no `.env`
of the machine's is read), the sender finding the stack through the state folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import free_port

LEAKY = ("OTEL_", "NATS_", "TELEGRAM_", "OPENAI_", "MODEL_", "WEBHOOK_", "VOICE_INSIGHT_", "WHISPER_", "METRICS_")
"""Settings of the machine's own that must not reach the stack under test."""


def dev_env(folder: Path, **extra: str) -> dict[str, str]:
    home = folder / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY) and k not in ("ALLOWED_USERS",)}
    env.update(HOME=str(home), VOICE_INSIGHT_STATE_DIR=str(folder / "state"), PYTHONUNBUFFERED="1", **extra)
    return env


def voice_insight(*args: str, env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voice_insight", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while not re.search(r"^dev +\| ready", output := log.read_text(errors="replace"), re.M):
        assert proc.poll() is None, f"`voice-insight dev` exited:\n{output[-5000:]}"
        assert time.monotonic() < deadline, f"`voice-insight dev` never got ready:\n{output[-5000:]}"
        time.sleep(0.2)
    return output


@pytest.mark.slow  # real Whisper, real speech, the whole stack
@pytest.mark.timeout(600)
def test_dev_answers_a_local_file_with_both_shipped_modes_and_the_buttons(model_dir: Path, tmp_path: Path) -> None:
    env = dev_env(tmp_path, WHISPER_MODEL=str(model_dir), WHISPER_DEVICE="cpu")
    # A WAV, not a voice note: `dev send` encodes it as Telegram stores voice notes (OGG/Opus).
    wav = tmp_path / "note.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-w", str(wav), "The budget review moves to Thursday morning."], check=True
    )
    log = tmp_path / "dev.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voice_insight", "dev", "--external", "WORDS"],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    started = time.monotonic()
    try:
        banner = wait_for_ready(proc, log)
        ready_after = time.monotonic() - started
        # Where things are: the NATS an analyzer written elsewhere logs in to, as its own account.
        url = re.search(r"NATS_URL=(nats://127\.0\.0\.1:\d+)", banner)
        assert url, banner[-3000:]
        assert "NATS_USER=analyzer-WORDS" in banner and "voice-insight dev send" in banner
        password = re.search(r"NATS_PASSWORD_FILE=(\S+analyzer-WORDS)", banner)
        assert password and Path(password.group(1)).is_file()

        asked = time.monotonic()
        sent = voice_insight("dev", "send", str(wav), env=env, cwd=tmp_path, timeout=300)
        answered_after = time.monotonic() - asked
        assert sent.returncode == 0, f"{sent.stdout}\n{sent.stderr}\n{log.read_text(errors='replace')[-5000:]}"
        answer = sent.stdout
        assert "📝 Transcript · English" in answer
        assert "budget" in answer.lower() and "thursday" in answer.lower()
        # Both shipped modes, in order, with what the LLM double made of this very transcript.
        assert answer.index("📌 The gist") < answer.index("🎭 Tone"), answer
        assert "Summary:" in answer and "Hidden intentions:" in answer
        assert "[📄 Transcript]" in answer, answer  # the buttons under the answer, by their labels
        assert "Listening" not in answer
        print(f"dev ready in {ready_after:.1f} s, answered in {answered_after:.1f} s")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    output = log.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert "restarting" not in output and "Violation" not in output
    assert not list((tmp_path / "state").rglob("dev.json")), "the stopped stack left its state file behind"
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "state")], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "the embedded nats-server outlived `dev`"


def test_dev_send_without_a_running_stack_says_so(tmp_path: Path) -> None:
    env = dev_env(tmp_path)
    note = tmp_path / "note.ogg"
    note.write_bytes(b"OggS" + bytes(60))
    sent = voice_insight("dev", "send", str(note), env=env, cwd=tmp_path, timeout=60)
    assert sent.returncode != 0
    assert "no development stack is running" in sent.stderr and "voice-insight dev" in sent.stderr, sent.stderr
    assert sent.stdout == ""

    # A state file left by a stack that was killed (its process gone, its double's port closed) counts as none.
    state = tmp_path / "state" / "dev"
    state.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    port = free_port()
    (state / "dev.json").write_text(
        json.dumps({"pid": gone.pid, "telegram": f"http://127.0.0.1:{port}", "nats": "", "ready": True})
    )
    sent = voice_insight("dev", "send", str(note), env=env, cwd=tmp_path, timeout=60)
    assert sent.returncode != 0
    assert "no development stack is running" in sent.stderr, sent.stderr
