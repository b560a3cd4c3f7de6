"""What an operator sees: one trace per voice note across five processes, metrics that move, honest health.

The spans come from the real processes through OTLP/HTTP into the suite's receiver; the metrics from each
service's real `/metrics` endpoint.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.intake import correlation_id, correlation_key
from infra.bus import Bus
from infra.bus.names import BUCKET_USERS
from tests.support import TOKEN, Speech, Stack, answered, eventually
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.otlp import OTLPReceiver, ReceivedSpan
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = pytest.mark.timeout(300)

_chats = itertools.count(80_000_001)
SPOKEN = "The budget review moves to Thursday. Please send the sales report to Margaret before Wednesday."
SERVICES = {"gateway", "transcriber", "analyzer-DEFAULT", "analyzer-TONE", "formatter"}


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def scrape(stack: Stack, service: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http_get(f"http://127.0.0.1:{stack.port(service)}/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def send_note(
    telegram: TelegramDouble, speech: Speech, text: str | None = None, forwarded_from: str | None = None
) -> tuple[int, str]:
    """A note of its own (new words: no cache answers it), or a forward of an earlier file."""
    chat = next(_chats)
    spoken = text or f"{SPOKEN} This is note {chat % 1000}."
    message_id = await telegram.send_media(chat, speech.say(spoken), duration=6, forwarded_from=forwarded_from)
    await telegram.wait_for(lambda: answered(telegram, chat), 120)
    return chat, correlation_id(correlation_key(TOKEN), chat, message_id)


async def trace_of(otlp: OTLPReceiver, cid: str, timeout: float = 30.0) -> list[ReceivedSpan]:
    """The whole trace of one note, once every service's spans (up to the reply) have been exported."""
    deadline = time.monotonic() + timeout
    while True:
        roots = [s for s in otlp.spans if s.attributes.get("voice_insight.correlation_id") == cid]
        if roots:
            spans = otlp.trace(roots[0].trace_id)
            if {s.service for s in spans} >= SERVICES and any(s.name == "reply" for s in spans):
                return spans
        if time.monotonic() > deadline:
            raise TimeoutError(f"trace incomplete: {sorted({s.service for s in otlp.spans})}")
        await asyncio.sleep(0.2)


def one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, f"{service} {name}: {[(s.service, s.name) for s in spans]}"
    return found[0]


async def test_one_voice_note_is_one_trace_through_five_services(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, otlp: OTLPReceiver
) -> None:
    usage_before = len(openai_double.usage_log)
    chat, cid = await send_note(telegram, speech)
    spans = await trace_of(otlp, cid)

    root = one(spans, "gateway", "voice_note receive")
    assert root.parent_id == "" and root.kind == "SERVER"
    by_id = {s.span_id: s for s in spans}

    # gateway → transcriber: the transcriber's consumer span continues the gateway's producer span.
    sent_audio = one(spans, "gateway", "send voice.audio")
    assert sent_audio.kind == "PRODUCER" and sent_audio.attributes["messaging.system"] == "nats"
    assert sent_audio.attributes["messaging.destination.name"] == "voice.audio"
    got_audio = one(spans, "transcriber", "process voice.audio")
    assert got_audio.kind == "CONSUMER" and got_audio.parent_id == sent_audio.span_id
    assert got_audio.attributes["messaging.consumer.group.name"] == "transcriber"

    transcribe = one(spans, "transcriber", "transcribe")
    assert transcribe.attributes["voice_insight.asr.language"] == "en"
    assert transcribe.attributes["voice_insight.asr.model"] == "whisper-base"
    assert 3 < transcribe.attributes["voice_insight.audio.duration_seconds"] < 10
    assert 0 < transcribe.attributes["voice_insight.asr.real_time_factor"] < 5
    for name in ("telegram download", "object_store put"):
        assert by_id[one(spans, "gateway", name).parent_id] is root
    one(spans, "transcriber", "object_store get")

    # transcriber → both analyzers, as parallel children of the same transcript.
    sent_transcript = one(spans, "transcriber", "send voice.transcript")
    for mode, model in (("DEFAULT", "o3"), ("TONE", "gpt-4o")):
        consumer = one(spans, f"analyzer-{mode}", "process voice.transcript")
        assert consumer.parent_id == sent_transcript.span_id
        llm = one(spans, f"analyzer-{mode}", f"chat {model}")
        assert llm.kind == "CLIENT" and by_id[llm.parent_id] is consumer
        assert llm.attributes["gen_ai.request.model"] == model
        assert llm.attributes["gen_ai.operation.name"] == "chat"
        reported = [u for u in openai_double.usage_log[usage_before:] if u["model"] == model]
        assert len(reported) == 1
        assert llm.attributes["gen_ai.usage.input_tokens"] == reported[0]["prompt_tokens"]
        assert llm.attributes["gen_ai.usage.output_tokens"] == reported[0]["completion_tokens"]
        one(spans, "formatter", f"process voice.analysis.{mode}")

    reply = one(spans, "formatter", "reply")
    assert reply.attributes["voice_insight.answer.kind"] == "complete"
    assert "voice_insight.answer.degraded" not in reply.attributes and reply.status_code != 2

    # Nothing the user said, and no user or chat id, in any name, attribute or event of the trace.
    text = json.dumps([[s.name, s.attributes, s.events] for s in spans], ensure_ascii=False).lower()
    for secret in ("budget", "thursday", "margaret", "sales report", str(chat)):
        assert secret not in text


async def test_a_failed_or_partial_note_is_found_by_one_tag_and_its_trace_says_why(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech, otlp: OTLPReceiver
) -> None:
    """Jaeger: Tags `voice_insight.answer.degraded=true` finds both; the reply span failed, and its event names the
    stage and reason, or the modes missing and why; nothing the user said."""
    openai_double.break_model("gpt-4o", status=500)
    try:
        partial_chat, partial = await send_note(telegram, speech)
    finally:
        openai_double.heal()
    failed_chat = next(_chats)
    message_id = await telegram.send_media(failed_chat, b"\x00this is no audio\xff" * 50, duration=4)
    await telegram.wait_for(lambda: answered(telegram, failed_chat), 120)
    failed = correlation_id(correlation_key(TOKEN), failed_chat, message_id)

    def reply_of(cid: str) -> ReceivedSpan | None:
        """The trace's reply span, found as in Jaeger: by the tag alone, then the note's ID among its trace."""
        for span in [s for s in otlp.spans if s.attributes.get("voice_insight.answer.degraded") is True]:
            if any(s.attributes.get("voice_insight.correlation_id") == cid for s in otlp.trace(span.trace_id)):
                return span
        return None

    for cid in (partial, failed):
        await eventually(lambda c=cid: reply_of(c) is not None, timeout=30)  # type: ignore[misc]
    reply = reply_of(partial)
    assert reply is not None
    assert reply.attributes["voice_insight.answer.kind"] == "partial" and reply.status_code == 2  # ERROR
    assert reply.events == ("answer partial",) and reply.status_message == "partial: TONE:http_500"
    assert reply.event_attributes[0] == {
        "voice_insight.modes.missing": "TONE",
        "voice_insight.modes.errors": "TONE:http_500",
    }

    reply = reply_of(failed)
    assert reply is not None
    assert reply.attributes["voice_insight.answer.kind"] == "failure" and reply.status_code == 2
    assert reply.event_attributes[0] == {
        "voice_insight.failure.stage": "transcriber",
        "voice_insight.failure.reason": "not_audio",
    }

    text = json.dumps([[s.name, s.attributes, s.events, s.event_attributes, s.status_message] for s in otlp.spans])
    for secret in ("budget", "thursday", "margaret", str(partial_chat), str(failed_chat)):
        assert secret not in text.lower()


async def test_metrics_move_with_the_work_done(
    stack: Stack, telegram: TelegramDouble, openai_double: OpenAIDouble, speech: Speech
) -> None:
    before = {
        service: scrape(stack, service) for service in ("formatter", "analyzer-default", "analyzer-tone", "transcriber")
    }
    usage_before = len(openai_double.usage_log)
    await send_note(telegram, speech)
    await asyncio.sleep(0.2)  # the formatter observes right after the edit lands
    after = {service: scrape(stack, service) for service in before}

    def delta(service: str, name: str, **labels: str) -> float:
        return value(after[service], name, **labels) - value(before[service], name, **labels)

    usage = {u["model"]: u for u in openai_double.usage_log[usage_before:]}
    for service, mode, model in (("analyzer-default", "DEFAULT", "o3"), ("analyzer-tone", "TONE", "gpt-4o")):
        assert (
            delta(service, "voice_insight_llm_tokens_total", mode=mode, model=model, direction="input")
            == usage[model]["prompt_tokens"]
        )
        assert (
            delta(service, "voice_insight_llm_tokens_total", mode=mode, model=model, direction="output")
            == usage[model]["completion_tokens"]
        )
        assert delta(service, "voice_insight_stage_seconds_count", stage="analyze", mode=mode) == 1
    assert delta("formatter", "voice_insight_stage_seconds_count", stage="end_to_end", mode="") == 1
    assert delta("formatter", "voice_insight_answers_total", kind="complete") == 1
    assert delta("transcriber", "voice_insight_stage_seconds_count", stage="transcribe", mode="") == 1
    assert delta("transcriber", "voice_insight_audio_seconds_total") > 3

    # A failing LLM moves the error counter of that mode, and the answer is counted as partial.
    openai_double.break_model("gpt-4o", status=500)
    await send_note(telegram, speech)
    await asyncio.sleep(0.2)
    tone, formatter = scrape(stack, "analyzer-tone"), scrape(stack, "formatter")
    assert (
        value(tone, "voice_insight_errors_total", stage="analyze", mode="TONE", reason="http_500")
        == value(after["analyzer-tone"], "voice_insight_errors_total", stage="analyze", mode="TONE", reason="http_500")
        + 1
    )
    assert value(formatter, "voice_insight_answers_total", kind="partial") >= 1

    # The same file forwarded again (Telegram's file_unique_id) is not transcribed again, and its analyses come
    # from the analysis cache: no audio decoded, no LLM call.
    openai_double.heal()
    first_chat, _ = await send_note(telegram, speech, "A note forwarded to the bot twice, about the Friday launch.")
    await asyncio.sleep(0.5)  # the analyses are cached right after they are published
    calls = len(openai_double.requests)
    before = {service: scrape(stack, service) for service in ("transcriber", "analyzer-tone")}
    chat, _ = await send_note(
        telegram, speech, "A note forwarded to the bot twice, about the Friday launch.", telegram.last_unique_id
    )
    await asyncio.sleep(0.2)
    after = {service: scrape(stack, service) for service in before}
    assert telegram.messages(chat)[0].text == telegram.messages(first_chat)[0].text, "the same answer"
    assert len(openai_double.requests) == calls, "no LLM call for a cached analysis"
    assert delta("transcriber", "voice_insight_cache_requests_total", cache="transcript", result="hit") == 1
    assert delta("transcriber", "voice_insight_audio_seconds_total") == 0
    assert delta("analyzer-tone", "voice_insight_cache_requests_total", cache="analysis", result="hit") == 1

    # Backlog gauges exist per consumer; label values are bounded names, never ids or text.
    transcriber = scrape(stack, "transcriber")
    assert ("voice_insight_consumer_pending_messages", (("consumer", "transcriber"),)) in transcriber
    for samples in (tone, formatter, transcriber):
        for _, labels in samples:
            for _, label_value in labels:
                assert len(label_value) <= 40 and not re.fullmatch(r"[0-9a-f]{32}|\d{6,}", label_value), label_value


async def test_active_users_are_counted_from_keyed_hashes(
    stack: Stack, telegram: TelegramDouble, speech: Speech, bus: Bus
) -> None:
    chat, _ = await send_note(telegram, speech, "Hello there.")
    deadline = time.monotonic() + 15
    while not (keys := await bus.kv_keys(BUCKET_USERS)):
        assert time.monotonic() < deadline, "no active user was recorded"
        await asyncio.sleep(0.2)
    assert keys and all(str(chat) not in key and len(key) == 32 for key in keys)
    deadline = time.monotonic() + 30
    while value(scrape(stack, "gateway"), "voice_insight_active_users") < len(keys):
        assert time.monotonic() < deadline, "the active-users gauge never caught up"
        await asyncio.sleep(0.5)


async def test_health_and_modes_endpoints(stack: Stack) -> None:
    for service in ("gateway", "formatter", "transcriber", "analyzer-default", "analyzer-tone"):
        status, body = http_get(f"http://127.0.0.1:{stack.port(service)}/health")
        assert status == 200 and json.loads(body)["status"] == "ok", (service, body)
    status, body = http_get(f"http://127.0.0.1:{stack.port('gateway')}/modes")
    modes = {m["mode"]: m for m in json.loads(body)}
    assert status == 200 and set(modes) >= {"DEFAULT", "TONE"}
    assert modes["DEFAULT"]["model"] == "o3" and modes["DEFAULT"]["temperature"] == 0.3
    assert modes["TONE"]["max_tokens"] == 500 and modes["TONE"]["structured_output"] is True


def test_without_an_endpoint_tracing_stays_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    from infra.runtime import telemetry

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    telemetry.setup_tracing("gateway")
    assert telemetry._provider is None
    assert not trace.get_current_span().get_span_context().is_valid
    with telemetry.tracer().start_as_current_span("x") as span:
        assert not span.is_recording()
