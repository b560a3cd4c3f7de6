"""What durability costs: JetStream publish latency with the default fsync and with `sync_interval: always`.

    .venv/bin/python bench/bus.py [--messages 500] [--size 2000]

Starts two throwaway nats-servers (one per setting, stores in temp folders on this machine's disk), publishes
`--messages` messages of `--size` bytes one after another to a file-backed stream, each waiting for its ack
(as every publish in voice-insight does), and prints p50/p95/p99 of the publish round trip and messages per
second for each setting. A voice note makes about a dozen such writes (audio chunks, events, KV marks).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import nats  # noqa: E402
from nats.js import api  # noqa: E402

from bench import record  # noqa: E402
from infra.ops.launcher import nats_config, nats_server_binary  # noqa: E402
from tests.support import free_port  # noqa: E402


async def measure(always: bool, messages: int, size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "nats"
        store.mkdir()
        config = nats_config(store)
        if not always:
            config.write_text(config.read_text().replace("  sync_interval: always\n", ""))
        port = free_port()
        proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(0.5)
            nc = await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=5)
            js = nc.jetstream()
            await js.add_stream(api.StreamConfig(name="BENCH", subjects=["bench.>"], storage=api.StorageType.FILE))
            payload = b"x" * size
            for _ in range(20):  # warm up
                await js.publish("bench.warm", payload)
            times = []
            started = time.perf_counter()
            for n in range(messages):
                t0 = time.perf_counter()
                await js.publish("bench.msg", payload, headers={"Nats-Msg-Id": f"m{n}"})
                times.append((time.perf_counter() - t0) * 1000)
            total = time.perf_counter() - started
            await nc.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    q = statistics.quantiles(times, n=100)
    return {
        "p50_ms": round(q[49], 3),
        "p95_ms": round(q[94], 3),
        "p99_ms": round(q[98], 3),
        "per_second": round(messages / total, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--size", type=int, default=2000)
    args = parser.parse_args()
    results = {}
    for label, always in (("default (fsync every 2 min)", False), ("sync_interval: always", True)):
        results[label] = await measure(always, args.messages, args.size)
        r = results[label]
        print(
            f"{label:<30} publish p50 {r['p50_ms']:.2f} ms  p95 {r['p95_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
            f"  {r['per_second']:.0f} msg/s"
        )
    out = REPO / "bench" / "results" / "bus.json"
    record.write(out, {"messages": args.messages, "size": args.size, "results": results})
    print(f"written to {out}")


if __name__ == "__main__":
    asyncio.run(main())
