"""`voice-insight conformance MODE`: does an analyzer written elsewhere keep the contract?

Run it against a development NATS with the analyzer running. It checks the announcement in `voice-modes`, then
publishes one sample transcript (correlation ID `conformance-…`) and waits for the analyzer's answer on
`voice.analysis.MODE`, decoded strictly into the published types. Every other analyzer on that NATS analyses
the sample too, and the formatter drops it (it belongs to no chat): do not run it against production.
Exit status: 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from infra.bus import Bus
from infra.bus.names import BUCKET_MODES, MODES_TTL, SUBJECT_TRANSCRIPT, analysis_subject
from infra.domain.contracts import Analysis, ModeInfo, Segment, Transcript
from infra.domain.definitions import MODE_NAME
from infra.service.run import load_or_exit

SAMPLE = "Привет! Это проверка: бюджет согласуем в четверг, а отчёт пришлите до среды."


async def check(bus: Bus, mode: str, timeout: float) -> list[tuple[bool, str]]:
    results: list[tuple[bool, str]] = []

    def note(ok: bool, what: str) -> bool:
        results.append((ok, what))
        return ok

    if not note(bool(MODE_NAME.fullmatch(mode)), f"the mode's name {mode!r} is [A-Z][A-Z0-9_]{{0,31}}"):
        return results
    try:
        entry = await (await bus.kv(BUCKET_MODES)).get(mode)
        info = msgspec.json.decode(entry.value or b"", type=ModeInfo)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        note(False, f"an announcement under key {mode} in {BUCKET_MODES}")
        return results
    except msgspec.MsgspecError as exc:
        note(False, f"the announcement decodes as ModeInfo ({exc})")
        return results
    note(info.mode == mode, "the announcement's `mode` is its key")
    note(bool(info.title.strip()), "the announcement has a title")
    note(time.time() - info.announced_at < MODES_TTL, f"the announcement is fresh (within {MODES_TTL:g} s)")

    cid = f"conformance-{uuid.uuid4().hex[:16]}"
    subject = analysis_subject(mode)
    answers: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_answer(msg: Msg) -> None:
        await answers.put(msg)

    subscription = await bus.nc.subscribe(subject, cb=on_answer)  # JetStream publishes reach core subscribers
    sample = Transcript(
        correlation_id=cid,
        text=SAMPLE,
        language="ru",
        language_probability=0.99,
        duration=6.0,
        segments=(Segment(0.0, 6.0, SAMPLE),),
        ui_language="ru",
        model="conformance",
        transcribe_seconds=0.0,
    )
    # A transcript that asks for another mode only (a chat switched this one off) comes first: no answer to it.
    other = msgspec.structs.replace(sample, correlation_id=f"{cid}-other", modes=("CONFORMANCE_OTHER",))
    await bus.publish(SUBJECT_TRANSCRIPT, other, msg_id=f"{cid}-other.transcript")
    await bus.publish(SUBJECT_TRANSCRIPT, msgspec.structs.replace(sample, modes=(mode,)), msg_id=f"{cid}.transcript")
    deadline = time.monotonic() + timeout
    answer = None
    seen: set[str] = set()

    async def take() -> Msg:
        msg = await asyncio.wait_for(answers.get(), max(0.1, deadline - time.monotonic()))
        decoded = msgspec.json.decode(msg.data)
        seen.add(str(decoded.get("correlation_id")) if isinstance(decoded, dict) else "")
        return msg

    try:
        while answer is None:
            msg = await take()
            if cid in seen:
                answer = msg
        deadline = time.monotonic() + 1.0  # time for an answer to the other transcript to show up, if one comes
        while True:
            await take()
    except TimeoutError:
        if answer is None:
            note(False, f"an Analysis on {subject} for the sample within {timeout:g} s")
            return results
    finally:
        await subscription.unsubscribe()
    note(True, f"an Analysis on {subject} for the sample")
    note(f"{cid}-other" not in seen, "no Analysis for a transcript whose `modes` does not name the mode")
    try:
        analysis = msgspec.json.decode(answer.data, type=Analysis)
    except msgspec.MsgspecError as exc:
        note(False, f"it decodes as Analysis (voice.analysis/1): {exc}")
        return results
    note(True, "it decodes as Analysis (voice.analysis/1)")
    note(analysis.mode == mode, "its `mode` is the mode")
    note(bool(analysis.title.strip()), "it has a title (in the transcript's ui_language)")
    note(bool(analysis.sections or analysis.text or analysis.error), "it has sections, text or an error")
    expected = f"{cid}.analysis.{mode}"
    headers = answer.headers or {}
    note(headers.get("Nats-Msg-Id") == expected, f"it was published with Nats-Msg-Id {expected}")
    return results


def run(args: argparse.Namespace) -> int:
    settings = load_or_exit("conformance", ())

    async def main() -> int:
        bus = await Bus.connect(settings.nats_servers, name="conformance", wait=10, **settings.nats_credentials)
        try:
            results = await check(bus, args.mode.upper(), args.timeout)
        finally:
            await bus.close(grace=1)
        for ok, what in results:
            print(f"{'✓' if ok else '✗'} {what}")
        return 0 if results and all(ok for ok, _ in results) else 1

    return asyncio.run(main())
