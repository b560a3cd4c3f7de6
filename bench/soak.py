"""A soak: `voice-insight up` for half an hour under a steady stream, with a crash or two, to show that nothing is
lost, doubled or left hanging, and that nothing grows without bound.

    .venv/bin/python bench/soak.py [--minutes 30] [--users 20] [--seed 11]

The stack as `voice-insight up` runs it (the packaged `base` model, one transcriber) on a nats-server of its own,
the Telegram double (flood control on) and the OpenAI double. Twenty users each send a voice note every one to
three minutes (5-40 s), three of them a recording of seven minutes (split into pieces) at 20%, 50% and 80% of
the run; a third of the answers get their transcript button pressed. At 25% the formatter is killed (SIGKILL), at
45% the transcriber, at 65% NATS is restarted; `up` brings the services back, NATS keeps its store.

Printed and written to bench/results/soak.json: notes sent, lost (no answer), duplicated (two statuses or two
answers), hanging (a status left at progress), buttons pressed and answered; each process's memory (RSS) after
warm-up, at the middle and at the end; every stream's messages and bytes at the same points; what the user data
buckets and the Object Store hold at the end (answered notes' data is dropped as they are answered).
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import record  # noqa: E402
from bench.capacity import memory_mb  # noqa: E402
from bench.pipeline import PROGRESS, Stack, percentile  # noqa: E402
from bench.speech import script, speak  # noqa: E402
from voice_insight.doubles.telegram_api import SentMessage  # noqa: E402


def processes() -> dict[str, int]:
    """Each service process of the stack by role (the newest, after a restart)."""
    found: dict[str, int] = {}
    for line in subprocess.run(["pgrep", "-af", "voice_insight"], capture_output=True, text=True).stdout.splitlines():
        pid, *argv = line.split()
        if "voice_insight" not in argv:
            continue
        role = " ".join(argv[argv.index("voice_insight") + 1 :]).replace("analyzer --mode ", "analyzer-").lower()
        if role and not role.startswith("up"):
            found[role] = max(found.get(role, 0), int(pid))
    return found


def rss_mb() -> dict[str, float]:
    sizes = {}
    for role, pid in processes().items():
        try:
            sizes[role] = round(memory_mb(pid)["VmRSS"])
        except OSError:
            continue  # exited between the listing and the reading
    return sizes


def transcript_button(button: dict[str, Any]) -> bool:
    """The button under an answer that sends its transcript as files (`t:<note>`, infra.voice.buttons)."""
    return str(button.get("callback_data", "")).startswith("t:")


def answered(message: SentMessage) -> bool:
    return any(not any(p in text for p in PROGRESS) for text in message.history[1:])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    run = args.minutes * 60
    short = [speak(script("en", rng.uniform(5, 40), seed=500 + i), "en") for i in range(12)]
    long = speak(script("en", 420, seed=599), "en")

    with tempfile.TemporaryDirectory() as work:
        async with Stack(Path(work), llm_latency=1.0) as stack:
            await stack.up(1)
            chats = [8_000_000 + i for i in range(args.users)]
            sent: list[tuple[int, int, float]] = []
            pressed: list[tuple[int, int]] = []  # chat, the answer message pressed
            events: list[str] = []
            snapshots: dict[str, dict[str, Any]] = {}
            started = time.time()

            async def snapshot(name: str) -> None:
                streams = {
                    info.config.name: {"messages": info.state.messages, "bytes": info.state.bytes}
                    for info in await stack.bus.js.streams_info()
                }
                snapshots[name] = {"t": round(time.time() - started), "rss_mb": rss_mb(), "streams": streams}
                print(f"{name}: {snapshots[name]['rss_mb']}", flush=True)

            async def user(chat: int) -> None:
                await asyncio.sleep(rng.uniform(0, 60))
                while time.time() < started + run - 60:
                    audio, duration = rng.choice(short)
                    message_id = await stack.telegram.send_media(chat, audio, duration=int(duration) + 1)
                    sent.append((chat, message_id, time.time()))
                    await asyncio.sleep(rng.uniform(60, 180))

            async def long_notes() -> None:
                for share, chat in zip((0.2, 0.5, 0.8), chats):
                    await asyncio.sleep(max(0.0, started + share * run - time.time()))
                    audio, duration = long
                    message_id = await stack.telegram.send_media(chat, audio, duration=int(duration) + 1)
                    sent.append((chat, message_id, time.time()))

            async def buttons() -> None:
                seen: set[tuple[int, int]] = set()
                while True:
                    await asyncio.sleep(5)
                    for chat in chats:
                        for m in stack.telegram.messages(chat):
                            key = (chat, m.message_id)
                            files = [b["callback_data"] for r in m.keyboard for b in r if transcript_button(b)]
                            if key in seen or not files:
                                continue
                            seen.add(key)
                            if rng.random() < 1 / 3:
                                await stack.telegram.press(chat, m.message_id, files[0])
                                pressed.append(key)

            async def faults() -> None:
                for share, what in ((0.25, "formatter"), (0.45, "transcriber"), (0.65, "nats")):
                    await asyncio.sleep(max(0.0, started + share * run - time.time()))
                    if what == "nats":
                        stack.nats.stop()
                        await asyncio.sleep(5)
                        stack.nats.start()
                    else:
                        subprocess.run(["kill", "-KILL", str(processes()[what])], check=True)
                    done = "restarted" if what == "nats" else "killed"
                    events.append(f"{round(time.time() - started)} s: {what} {done}")
                    print(events[-1], flush=True)

            await asyncio.sleep(5)
            await snapshot("start")
            tasks = [asyncio.create_task(t) for t in (*(user(c) for c in chats), long_notes(), buttons(), faults())]
            await asyncio.sleep(run / 2)
            await snapshot("middle")
            await asyncio.sleep(max(0.0, started + run - time.time()))
            deadline = time.time() + 900
            while time.time() < deadline:
                messages = {chat: stack.telegram.messages(chat) for chat in chats}
                if all(any(m.reply_to == mid and answered(m) for m in messages[c]) for c, mid, _ in sent):
                    break
                await asyncio.sleep(5)
            await asyncio.sleep(10)  # a press after the last answer, and anything duplicated, shows up now
            for task in tasks:
                task.cancel()
            await snapshot("end")
            left = {}
            for bucket in ("voice-joins", "voice-intake", "voice-answered", "voice-pieces", "voice-notes"):
                left[bucket] = len(await stack.bus.kv_keys(bucket, ""))
            objects = (await stack.bus.js.stream_info("OBJ_voice-audio")).state
            inflight = (await stack.bus.js.stream_info("INFLIGHT")).state.messages

    lost = duplicated = hanging = 0
    latencies: list[float] = []
    for chat, message_id, at in sent:
        replies = [m for m in stack.telegram.messages(chat) if m.reply_to == message_id and m.document is None]
        statuses = [m for m in replies if m.history and m.history[0].startswith("🎧")]
        done = [m for m in statuses if answered(m)]
        if not replies:
            lost += 1
        elif not done:
            hanging += 1
        else:
            first = next(i for i, text in enumerate(done[0].history[1:], 1) if not any(p in text for p in PROGRESS))
            latencies.append(done[0].times[first] - at)
        # One status; each part of the answer once; the status turned into one answer, not two.
        finals = [[t for t in m.history[1:] if not any(p in t for p in PROGRESS)] for m in statuses]
        texts = [m.text for m in replies]
        if len(statuses) > 1 or any(len(set(f)) > 1 for f in finals) or len(texts) != len(set(texts)):
            duplicated += 1
    documents = sum(
        1 for chat in chats for m in stack.telegram.messages(chat) if m.document is not None and m.document.content
    )
    result = {
        "minutes": args.minutes,
        "users": args.users,
        "notes": len(sent),
        "long_recordings": 3,
        "lost": lost,
        "duplicated": duplicated,
        "hanging": hanging,
        "end_to_end_s": {"p50": round(percentile(latencies, 0.5), 1), "p95": round(percentile(latencies, 0.95), 1)},
        "buttons_pressed": len(pressed),
        "transcript_files_sent": documents,
        "faults": events,
        "memory_rss_mb": {name: s["rss_mb"] for name, s in snapshots.items()},
        "streams": {name: s["streams"] for name, s in snapshots.items()},
        "left_at_end": {**left, "audio_objects_bytes": objects.bytes, "inflight": inflight},
    }
    print(f"notes {len(sent)}: lost {lost}, duplicated {duplicated}, hanging {hanging}; {result['end_to_end_s']}")
    print(f"buttons pressed {len(pressed)}, transcript files sent {documents}; faults: {events}")
    for name, s in snapshots.items():
        print(f"memory at {name} (MB): {s['rss_mb']}")
    print(f"left at the end: {result['left_at_end']}")
    print(f"written to {record.write(REPO / 'bench' / 'results' / 'soak.json', result)}")


if __name__ == "__main__":
    asyncio.run(main())
