"""An analyzer written outside voice-insight: nothing but nats-py and the published contract (docs/contracts/).

It counts a note's words and names its longest ones: no LLM, so its announcement leaves the LLM fields out.
Run it next to any voice-insight stack and the next voice note carries a "Words" section:

    NATS_URL=nats://127.0.0.1:4222 python examples/words_analyzer.py

On a deployment with an account per service, it logs in as its own (`analyzer-WORDS`: `NATS_USER`, and the
password in the file `NATS_PASSWORD_FILE` names), which grants exactly what is listed below, and takes its
replies on an inbox of its own (`_INBOX.analyzer-WORDS.`): the server lets no account read another's. Next to
`voice-insight up --external WORDS`, the password is in `.voice-insight/nats-credentials/analyzer-WORDS`.

What makes it a good citizen, in order:
1. a durable pull consumer of its own (`analyzer-WORDS`) on `voice.transcript` in the `VOICE` stream, starting
   at new messages, with explicit acks: every mode sees every transcript, replicas of one mode share the work;
2. it starts consuming *before* it announces itself, so a note that waits for it reaches it;
3. one `Analysis` per transcript that asks for it (`modes` absent, or naming WORDS) on `voice.analysis.WORDS`,
   with `Nats-Msg-Id: <correlation_id>.analysis.WORDS` (a redelivered transcript publishes a duplicate the
   stream drops), acked after the publish is confirmed;
4. its `ModeInfo` under key `WORDS` in the KV bucket `voice-modes`, every 10 s (the bucket forgets in 30 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

MODE = os.environ.get("MODE", "WORDS")
TITLES = {"ru": "🔢 Слова", "en": "🔢 Words"}
HEADINGS = {"ru": ("Длина", "Самые длинные"), "en": ("Length", "Longest")}


def analyse(transcript: dict) -> dict:
    lang = "ru" if transcript.get("ui_language") == "ru" else "en"
    words = [w.strip(".,!?;:\"'()") for w in transcript["text"].split()]
    longest = sorted({w for w in words if w}, key=lambda w: (-len(w), w))[:3]
    length, longest_heading = HEADINGS[lang]
    return {
        "schema": "voice.analysis/1",
        "correlation_id": transcript["correlation_id"],
        "mode": MODE,
        "title": TITLES[lang],
        "model": "",
        "sections": [
            {"heading": length, "body": f"{len(words)} words", "items": []},
            {"heading": longest_heading, "body": "", "items": longest},
        ],
    }


async def announce(kv) -> None:  # type: ignore[no-untyped-def]
    while True:
        info = {"mode": MODE, "title": TITLES["en"], "titles": TITLES, "announced_at": time.time()}
        try:
            await kv.put(MODE, json.dumps(info).encode())
        except Exception as exc:  # NATS restarting: the next beat lands
            print(f"heartbeat failed: {type(exc).__name__}", flush=True)
        await asyncio.sleep(10)


async def main() -> None:
    user = os.environ.get("NATS_USER")
    with open(os.environ["NATS_PASSWORD_FILE"]) if user else open(os.devnull) as secret:
        password = secret.read().strip() or None
    nc = await nats.connect(
        os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        user=user,
        password=password,
        inbox_prefix=f"_INBOX.{user}" if user else "_INBOX",
        max_reconnect_attempts=-1,
    )
    js = nc.jetstream()
    config = ConsumerConfig(
        durable_name=f"analyzer-{MODE}",
        filter_subject="voice.transcript",
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30,
        max_deliver=-1,
    )
    subscription = await js.pull_subscribe(
        "voice.transcript", durable=f"analyzer-{MODE}", stream="VOICE", config=config
    )
    heartbeat = asyncio.create_task(announce(await js.key_value("voice-modes")))
    print(f"analyzer {MODE} ready", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            messages = await subscription.fetch(1, timeout=2)
        except nats.errors.TimeoutError:
            continue
        for message in messages:
            transcript = json.loads(message.data)
            if transcript.get("schema") != "voice.transcript/1":
                await message.term()  # a version we do not know: never retry it
                continue
            if transcript.get("modes") is not None and MODE not in transcript["modes"]:
                await message.ack()  # the chat switched this mode off (or asked another mode): nothing to say
                continue
            analysis = analyse(transcript)
            msg_id = f"{transcript['correlation_id']}.analysis.{MODE}"
            await js.publish(f"voice.analysis.{MODE}", json.dumps(analysis).encode(), headers={"Nats-Msg-Id": msg_id})
            await message.ack()
    heartbeat.cancel()
    await nc.close()  # every message taken was acked: nothing to drain


if __name__ == "__main__":
    asyncio.run(main())
