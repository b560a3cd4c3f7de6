"""Past one machine's cores: 50 notes a second for five minutes from thousands of users, to find what gives first
when Whisper is not the limit.

    .venv/bin/python bench/capacity.py [--rate 50] [--minutes 5] [--users 3000] [--formatters 1]
                                        [--no-bot-limit] [--drain 600]

The whole stack runs as separate processes, as `voice-insight up` starts them (gateway, formatters, an analyzer
per mode), on a throwaway nats-server, against the Telegram double (its flood control as Telegram's: 30 messages
a second for the bot, one a second per chat; `--no-bot-limit` lifts the bot's, with TELEGRAM_RATE=1000) and the
OpenAI double (answering after `--llm-latency`). The transcriber is the real service over a stand-in model
(bench/standin_transcriber.py): `--workers` transcriber hosts that each take the time `base` takes on two cores
and use none of this machine's. Users send 3-8 s voice notes at `--rate` a second, each from one of `--users`
chats at random.

Every 10 s it records what each consumer has waiting (who falls behind first) and how many notes are answered;
at the end: notes a second answered while the push lasted and after, end to end p50/p95, lost and duplicated,
the Bot API's writes a second and its 429s, each process's CPU (seconds, and cores on average) and memory (start
and end), and JetStream's streams (messages, bytes). Results go to bench/results/capacity[-<variant>].json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import record  # noqa: E402
from bench.pipeline import PROGRESS, percentile  # noqa: E402
from bench.speech import script, speak  # noqa: E402
from infra.bus import Bus  # noqa: E402
from infra.bus.names import (  # noqa: E402
    CONSUMER_FORMATTER,
    CONSUMER_GATEWAY,
    CONSUMER_TRANSCRIBER,
    CONSUMER_TRANSCRIBER_QUEUED,
    STREAM,
    STREAM_UPDATES,
)
from tests.support import OPENAI_KEY, TOKEN, NatsServer, free_port, stack_env, wait_for_modes  # noqa: E402
from voice_insight.doubles.openai_api import OpenAIDouble  # noqa: E402
from voice_insight.doubles.telegram_api import SentMessage, TelegramDouble  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
WATCHED = (
    (STREAM_UPDATES, CONSUMER_GATEWAY),
    (STREAM, CONSUMER_TRANSCRIBER),
    (STREAM, CONSUMER_TRANSCRIBER_QUEUED),
    (STREAM, "analyzer-DEFAULT"),
    (STREAM, "analyzer-TONE"),
    (STREAM, CONSUMER_FORMATTER),
)
WRITES = {"sendMessage", "editMessageText", "sendDocument"}


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_mb(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def answers(message: SentMessage) -> list[int]:
    """The edits of a status message that are an answer, not progress (as bench/load.py counts them)."""
    return [i for i, text in enumerate(message.history[1:], 1) if not any(p in text for p in PROGRESS)]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=50.0, help="notes a second")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--formatters", type=int, default=1)
    parser.add_argument("--workers", type=int, default=48, help="stand-in transcriber hosts")
    parser.add_argument("--llm-latency", type=float, default=1.0)
    parser.add_argument("--no-bot-limit", action="store_true", help="lift the Bot API's limit for the whole bot")
    parser.add_argument("--drain", type=float, default=600.0, help="longest wait for answers after the push")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    clips = [speak(script("en", rng.uniform(3, 8), seed=700 + i), "en") for i in range(10)]

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        nats = NatsServer(free_port(), work / "nats")
        nats.start()
        telegram = TelegramDouble(TOKEN)
        if args.no_bot_limit:
            telegram.lift_bot_limit()
        openai = OpenAIDouble(OPENAI_KEY, latency=args.llm_latency)
        await telegram.start()
        await openai.start()
        nats.provision()  # streams, buckets and the shipped modes, as a deployment starts
        bus = await Bus.connect([nats.url], name="bench")
        env = stack_env(nats, telegram, openai, work / "no-model", work / "state")
        env.update(JOIN_TIMEOUT="300", METRICS_PORT="0", USER_NOTES_PER_MINUTE="100", USER_MAX_PENDING="100")
        if args.no_bot_limit:
            env["TELEGRAM_RATE"] = "1000"  # our own pacing as far as the bot's lifted limit
        roles: list[tuple[str, list[str]]] = [
            ("analyzer-DEFAULT", ["-m", "voice_insight", "analyzer", "--mode", "DEFAULT"]),
            ("analyzer-TONE", ["-m", "voice_insight", "analyzer", "--mode", "TONE"]),
            ("transcriber-standin", [str(REPO / "bench" / "standin_transcriber.py"), "--workers", str(args.workers)]),
            *[(f"formatter-{i + 1}", ["-m", "voice_insight", "formatter"]) for i in range(args.formatters)],
            ("gateway", ["-m", "voice_insight", "gateway"]),
        ]
        children: list[Child] = []
        try:
            for name, argv in roles:
                log = work / f"{name}.log"
                proc = subprocess.Popen(
                    [sys.executable, *argv], env=env, cwd=work, stdout=log.open("wb"), stderr=subprocess.STDOUT
                )
                children.append(Child(name, proc, log))
            await wait_for_modes(bus, {"DEFAULT", "TONE"})
            while not all(" ready" in c.log.read_text(errors="replace") for c in children):
                for c in children:
                    if c.proc.poll() is not None:
                        raise SystemExit(f"{c.name} exited: {c.log.read_text(errors='replace')[-2000:]}")
                await asyncio.sleep(0.5)
            pids = {c.name: c.proc.pid for c in children}
            assert nats.proc is not None
            pids["nats-server"] = nats.proc.pid
            pids["bench (the doubles)"] = os.getpid()
            cpu_start = {name: cpu_seconds(pid) for name, pid in pids.items()}
            memory_start = {name: memory_mb(pid)["VmRSS"] for name, pid in pids.items()}

            total = int(args.rate * args.minutes * 60)
            chats = [9_000_000 + i for i in range(args.users)]
            sent: list[tuple[int, int, float]] = []
            timeline: list[dict[str, Any]] = []
            started = time.time()

            def answered_count() -> int:
                return sum(
                    1
                    for chat in set(c for c, _, _ in sent)
                    for m in telegram.messages(chat)
                    if m.reply_to is not None and answers(m)
                )

            async def watch() -> None:
                while True:
                    await asyncio.sleep(10)
                    row: dict[str, Any] = {"t": round(time.time() - started), "sent": len(sent)}
                    row["answered"] = answered_count()
                    for stream, durable in WATCHED:
                        try:
                            info = await bus.js.consumer_info(stream, durable)
                        except Exception:
                            continue
                        row[durable] = {"waiting": info.num_pending, "out": info.num_ack_pending}
                    row["429s"] = len(telegram.floods)
                    timeline.append(row)
                    print(row, flush=True)

            watcher = asyncio.create_task(watch())
            for n in range(total):
                await asyncio.sleep(max(0.0, started + n / args.rate - time.time()))
                audio, duration = clips[n % len(clips)]
                chat = rng.choice(chats)
                sent.append((chat, await telegram.send_media(chat, audio, duration=int(duration) + 1), time.time()))
            pushed = time.time()
            answered_in_push = answered_count()
            print(f"sent {total} notes in {pushed - started:.0f} s; {answered_in_push} answered so far", flush=True)
            writes_in_push = sum(1 for method, _ in telegram.calls if method in WRITES)
            while time.time() < pushed + args.drain and answered_count() < total:
                await asyncio.sleep(5)
            ended = time.time()
            await asyncio.sleep(3)  # anything duplicated would show up now
            watcher.cancel()
            cpu = {name: round(cpu_seconds(pid) - cpu_start[name], 1) for name, pid in pids.items()}
            memory_end = {name: memory_mb(pid) for name, pid in pids.items()}
            streams = {}
            for info in await bus.js.streams_info():
                if info.state.messages:
                    size = round(info.state.bytes / 2**20, 1)
                    streams[info.config.name] = {"messages": info.state.messages, "mb": size}
        finally:
            for c in children:
                c.proc.send_signal(2)
            for c in children:
                try:
                    c.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    c.proc.kill()
            await bus.close(grace=1)
            await telegram.stop()
            await openai.stop()
            nats.stop()

    latencies, lost, duplicated = [], 0, 0
    by_chat: dict[int, list[SentMessage]] = {}
    for chat, message_id, at in sent:
        replies = [m for m in by_chat.setdefault(chat, telegram.messages(chat)) if m.reply_to == message_id]
        answered = [m for m in replies if answers(m)]
        if not answered:
            lost += 1
            continue
        if len(replies) > 1 or any(len(answers(m)) > 1 for m in replies):
            duplicated += 1
        latencies.append(answered[0].times[answers(answered[0])[0]] - at)
    span = ended - started
    writes = sum(1 for method, _ in telegram.calls if method in WRITES)
    result = {
        "rate": args.rate,
        "minutes": args.minutes,
        "users": args.users,
        "formatters": args.formatters,
        "stand_in_transcribers": args.workers,
        "bot_limit": not args.no_bot_limit,
        "llm_latency_s": args.llm_latency,
        "notes": len(sent),
        "pushed_in_s": round(pushed - started, 1),
        "answered_during_push": answered_in_push,
        "answered_per_s_during_push": round(answered_in_push / (pushed - started), 1),
        "answered": len(latencies),
        "answered_per_s_overall": round(len(latencies) / span, 1),
        "unanswered_after_drain": lost,
        "duplicated": duplicated,
        "end_to_end_s": {"p50": round(percentile(latencies, 0.5), 1), "p95": round(percentile(latencies, 0.95), 1)},
        "bot_api_writes_per_s_during_push": round(writes_in_push / (pushed - started), 1),
        "bot_api_writes_per_note": round(writes / max(1, len(latencies)), 2),
        "telegram_429s": len(telegram.floods),
        "cpu_seconds": cpu,
        "cores_on_average": {name: round(seconds / span, 2) for name, seconds in cpu.items()},
        "memory_mb": {
            name: {"start": round(memory_start[name]), "end": round(m["VmRSS"]), "peak": round(m["VmHWM"])}
            for name, m in memory_end.items()
        },
        "jetstream": streams,
        "timeline": timeline,
    }
    for key in ("answered_per_s_during_push", "answered_per_s_overall", "unanswered_after_drain", "duplicated"):
        print(f"{key}: {result[key]}")
    print(f"end to end: {result['end_to_end_s']}; Bot API writes/s {result['bot_api_writes_per_s_during_push']}")
    print(f"429s {result['telegram_429s']}; cores on average: {result['cores_on_average']}")
    variant = "" if not args.no_bot_limit else "-no-bot-limit"
    variant += f"-formatters-{args.formatters}" if args.formatters != 1 else ""
    print(f"written to {record.write(REPO / 'bench' / 'results' / f'capacity{variant}.json', result)}")


if __name__ == "__main__":
    asyncio.run(main())
