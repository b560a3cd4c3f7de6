"""A local LLM, set up exactly as the README tells a self-hoster: its `.env` lines, against a server that answers
like Ollama's OpenAI-compatible API (tagged model ids, no key, 25 s a call on a small machine).

Before issue 19 the README's `MODEL_DEFAULT=llama3.2` was refused (Ollama lists `llama3.2:latest`), a mode's
timeout could not exceed 20 s while a 3B model on two cores takes 20-60 s, and every note was answered
"analysis missing"."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import (
    EN_TEXT,
    REPO,
    NatsServer,
    Speech,
    admin_bus,
    answered,
    embedded_nats,
    eventually,
    free_port,
    stack_env,
    start_up,
    wait_for_modes,
)
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = pytest.mark.timeout(420)

CALL_SECONDS = 25.0


def readme_ollama_lines() -> dict[str, str]:
    """The `echo 'NAME=value' >> .env` lines of docs/local-llm.md's "Using Ollama", as a person would append them."""
    readme = (REPO / "docs" / "local-llm.md").read_text()
    section = readme.split("### Using Ollama", 1)[1].split("\n### ", 1)[0]
    lines = dict(re.findall(r"^echo '([A-Z_]+)=([^']*)' >> \.env", section, re.M))
    assert {"OPENAI_BASE_URL", "MODEL_DEFAULT", "MODEL_TONE"} <= set(lines), lines
    return lines


async def test_the_readme_recipe_for_ollama_gets_both_analyses_from_a_slow_local_model(
    model_dir: Path, speech: Speech, tmp_path: Path
) -> None:
    ollama = OpenAIDouble.ollama("llama3.2:latest", "nomic-embed-text:latest", latency=CALL_SECONDS)
    ollama_port = free_port()
    ollama.base_url = ollama.url(ollama_port)  # where it will listen: it starts after the stack, as Ollama may
    telegram = TelegramDouble("987654399:BBHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw9")
    await telegram.start()
    env = stack_env(NatsServer(0, tmp_path), telegram, ollama, model_dir, tmp_path / "state")
    del env["NATS_URL"], env["OPENAI_API_KEY"], env["JOIN_TIMEOUT"]  # the README's setup, nothing more
    env["TELEGRAM_TOKEN"] = telegram.token
    for name, value in readme_ollama_lines().items():
        env[name] = value.replace("http://localhost:11434/v1", ollama.base_url)
    proc, log = start_up(env, tmp_path)
    bus = None
    try:
        bus = await admin_bus((await embedded_nats(proc, log)).group(1), tmp_path / "state", "test-local-llm")
        # The analyzers wait for the server rather than refuse MODEL_<MODE> for good (they did).
        await eventually(lambda: log.read_text().count("waiting for the LLM server") >= 2, 120, 0.2)
        await ollama.start("127.0.0.1", ollama_port)
        # Each analyzer validates MODEL_<MODE> with a canary first (one slow call), then goes live.
        await wait_for_modes(bus, {"DEFAULT", "TONE"}, timeout=180)
        await eventually(lambda: "gateway voice_insight.gateway: ready" in log.read_text(), 120, 0.2)
        chat = 77
        await telegram.send_media(chat, speech.say(EN_TEXT), duration=9)
        await telegram.wait_for(lambda: answered(telegram, chat), 300)
        text = telegram.messages(chat)[0].text
        assert "Summary:" in text and "Key points:" in text, text
        assert "Hidden intentions:" in text and "How best to reply:" in text, text
        assert "Missing" not in text and "missing" not in text, text
        asked = {request["model"] for request in ollama.requests}
        assert asked == {"llama3.2"}, asked  # the modes' own models were replaced by the README's
        output = log.read_text()
        assert "MODEL_DEFAULT=llama3.2 not applied" not in output and "MODEL_TONE=llama3.2 not applied" not in output
    finally:
        if bus:
            await bus.close(grace=1)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
        await telegram.stop()
        await ollama.stop()
