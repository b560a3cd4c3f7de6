"""A busy minute: 100 voice notes from 20 users, one of them flooding, on `voice-insight up`.

    .venv/bin/python bench/load.py [--llm-latency 1.0] [--seed 3]

Runs `voice-insight up` (one transcriber) against a throwaway nats-server, the Telegram double (with its flood
control on: 429 + retry_after past the real limits) and the OpenAI double answering after `--llm-latency`.
Within one minute: one user forwards 30 notes at once; 10 users send one note each; 9 users send 6 or 7 each;
100 in all, short synthetic voice notes of 3-8 s, at seeded random times. Then it waits for every answer and
prints:

* lost (a note with no answer after the backlog drained) and duplicated (more than one status message for a
  note, a status edited into more than one answer, or any other extra message): both must be 0;
* end to end (user sends → answer on screen), p50/p95, for the single-note users, the flooder and the rest:
  the fair order should keep the single-note users' figures near an idle stack's, whatever the flood;
* 429s the double answered (all of them waited out, none lost), and peak memory (VmHWM) per service.

Results go to bench/results/load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import record  # noqa: E402
from bench.pipeline import PROGRESS, Stack, percentile  # noqa: E402
from bench.speech import script, speak  # noqa: E402

FLOOD = 30
SINGLES = 10
OTHERS = 9
TOTAL = 100


def peak_memory_mb() -> dict[str, float]:
    """VmHWM of every service process of the stack, by role."""
    peaks: dict[str, float] = {}
    listing = subprocess.run(["pgrep", "-af", "voice_insight"], capture_output=True, text=True).stdout.splitlines()
    for line in listing:
        pid, *argv = line.split()
        role = " ".join(argv[argv.index("voice_insight") + 1 :]) if "voice_insight" in argv else "?"
        if role.startswith("up"):
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for entry in status.splitlines():
            if entry.startswith("VmHWM:"):
                name = role.replace("analyzer --mode ", "analyzer-").lower()
                peaks[name] = max(peaks.get(name, 0.0), int(entry.split()[1]) / 1024)
    return peaks


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llm-latency", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--formatters", type=int, default=1, help="formatter replicas sharing the notes")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    clips = [speak(script("en", rng.uniform(3, 8), seed=900 + i), "en") for i in range(12)]
    flooder = 7_000_000
    singles = [7_000_100 + i for i in range(SINGLES)]
    others = [7_000_200 + i for i in range(OTHERS)]
    plan: list[tuple[float, int, str]] = [(0.2 * i, flooder, "flooder") for i in range(FLOOD)]
    plan += [(rng.uniform(2, 55), chat, "single") for chat in singles]
    rest = TOTAL - FLOOD - SINGLES
    plan += [(rng.uniform(0, 58), others[i % OTHERS], "other") for i in range(rest)]
    plan.sort()

    with tempfile.TemporaryDirectory() as work:
        async with Stack(Path(work), args.llm_latency) as stack:
            await stack.up(1, formatters=args.formatters)
            await asyncio.sleep(1)
            started = time.time()
            sent: list[tuple[int, int, str, float]] = []  # chat, message id, group, sent at
            for at, chat, group in plan:
                await asyncio.sleep(max(0.0, started + at - time.time()))
                audio, duration = rng.choice(clips)
                message_id = await stack.telegram.send_media(chat, audio, duration=int(duration) + 1)
                sent.append((chat, message_id, group, time.time()))
            print(f"sent {len(sent)} notes in {time.time() - started:.1f} s; waiting for the answers", flush=True)

            def answer_for(chat: int, message_id: int) -> list:  # type: ignore[type-arg]
                return [m for m in stack.telegram.messages(chat) if m.reply_to == message_id]

            def answers(message) -> list[int]:  # type: ignore[no-untyped-def]
                """The edits of a status message that are an answer: after "Listening", not progress (the queue
                place, "Transcribing", the transcript with "Still working on")"""
                return [i for i, text in enumerate(message.history[1:], 1) if not any(p in text for p in PROGRESS)]

            deadline = time.time() + 600
            while time.time() < deadline:
                if all(any(answers(m) for m in answer_for(c, mid)) for c, mid, _, _ in sent):
                    break
                await asyncio.sleep(1)
            await asyncio.sleep(3)  # anything duplicated would show up now
            memory = peak_memory_mb()
            lost, duplicated = 0, 0
            latencies: dict[str, list[float]] = {"single": [], "flooder": [], "other": []}
            for chat, message_id, group, at in sent:
                replies = answer_for(chat, message_id)
                answered = [m for m in replies if answers(m)]
                if not answered:
                    lost += 1
                    continue
                if len(replies) > 1 or any(len(answers(m)) > 1 for m in replies):  # two statuses, or two answers
                    duplicated += 1
                latencies[group].append(answered[0].times[answers(answered[0])[0]] - at)
            expected = {c for c, _, _, _ in sent}
            extra = sum(
                1
                for chat in expected
                for m in stack.telegram.messages(chat)
                if m.reply_to not in {mid for c, mid, _, _ in sent if c == chat}
            )
            floods = len(stack.telegram.floods)

    figures = {
        group: {"notes": len(v), "p50_s": round(percentile(v, 0.5), 2), "p95_s": round(percentile(v, 0.95), 2)}
        for group, v in latencies.items()
        if v
    }
    result = {
        "notes": len(sent),
        "lost": lost,
        "duplicated": duplicated,
        "extra_messages": extra,
        "telegram_429s_waited_out": floods,
        "end_to_end": figures,
        "peak_memory_mb": {k: round(v) for k, v in memory.items()},
        "llm_latency_s": args.llm_latency,
        "formatters": args.formatters,
    }
    print(f"lost {lost}, duplicated {duplicated}, extra messages {extra}, 429s waited out {floods}")
    for group, f in figures.items():
        print(f"end to end, {group:<8} ({f['notes']:>3} notes): p50 {f['p50_s']:6.2f} s   p95 {f['p95_s']:6.2f} s")
    print("peak memory (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(memory.items())))
    name = "load.json" if args.formatters == 1 else f"load-formatters-{args.formatters}.json"
    print(f"written to {record.write(REPO / 'bench' / 'results' / name, result)}")


if __name__ == "__main__":
    asyncio.run(main())
