"""The analyzer's LLM client against the OpenAI double, through the real openai SDK."""

from __future__ import annotations

import openai
import pytest

from analyzers.llm import ChatLLM, LLMFailure, is_reasoning_model, json_schema_for, make_client
from infra.domain.definitions import TRANSCRIPT_PLACE, result_type
from tests.support import OPENAI_KEY, SHIPPED
from voice_insight.doubles.openai_api import OpenAIDouble

DefaultResult = result_type(SHIPPED["DEFAULT"])
ToneResult = result_type(SHIPPED["TONE"])

TEXT = "Hi, it is Anna. The contract must be signed by Friday, otherwise we lose the client."


def llm(double: OpenAIDouble, key: str = OPENAI_KEY) -> ChatLLM:
    return ChatLLM(make_client(key, double.base_url))


async def call(client: ChatLLM, mode: str, model: str | None = None):  # type: ignore[no-untyped-def]
    spec = SHIPPED[mode]
    return await client.complete(
        model=model or spec.model,
        system="Answer in English.",
        user=spec.prompt.replace(TRANSCRIPT_PLACE, TEXT),
        max_tokens=spec.max_tokens,
        temperature=spec.temperature,
        timeout=spec.timeout,
        result_type=result_type(spec),
    )


def test_reasoning_models_are_recognised() -> None:
    assert all(map(is_reasoning_model, ["o1", "o3", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "openai/o3"]))
    assert not any(map(is_reasoning_model, ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "llama3.1", "omni-x"]))


def test_schemas_are_strict_objects_openai_accepts() -> None:
    schema = json_schema_for(DefaultResult)
    assert schema["type"] == "object" and "$ref" not in schema
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["summary", "key_points", "actions"]


async def test_o3_gets_max_completion_tokens_and_no_temperature(openai_double: OpenAIDouble) -> None:
    done = await call(llm(openai_double), "DEFAULT")
    request = openai_double.requests[-1]
    assert "max_tokens" not in request and "temperature" not in request
    assert request["max_completion_tokens"] > 1000 and request["reasoning_effort"] == "low"
    assert isinstance(done.parsed, DefaultResult)
    assert done.parsed.summary == "summary: Hi, it is Anna. The contract must be"
    assert done.model == "o3-2025-04-16"
    assert done.usage.output_tokens == openai_double.usage_log[-1]["completion_tokens"] > 320  # reasoning billed


async def test_classic_parameters_sent_raw_to_o3_are_what_the_real_api_rejects(openai_double: OpenAIDouble) -> None:
    """Why the client adapts: `max_tokens`/`temperature` for o3 is a 400 from OpenAI."""
    client = make_client(OPENAI_KEY, openai_double.base_url)
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(
            model="o3", messages=[{"role": "user", "content": "x"}], max_tokens=1000, temperature=0.3
        )
    assert err.value.code == "unsupported_parameter" and err.value.param == "max_tokens"


async def test_gpt4o_gets_max_tokens_and_temperature(openai_double: OpenAIDouble) -> None:
    done = await call(llm(openai_double), "TONE")
    request = openai_double.requests[-1]
    assert request["max_tokens"] == 500 and request["temperature"] == 0.7 and "reasoning_effort" not in request
    assert request["response_format"]["json_schema"]["strict"] is True
    assert isinstance(done.parsed, ToneResult) and done.parsed.dominant_emotion.startswith("dominant_emotion: Hi,")


async def test_a_model_without_structured_output_falls_back_to_plain_text(openai_double: OpenAIDouble) -> None:
    client = llm(openai_double)
    done = await call(client, "DEFAULT", model="legacy-chat")
    assert done.parsed is None and done.content.startswith("РЕЗЮМЕ: Hi, it is Anna")
    assert not client.supports_structured("legacy-chat")
    before = len(openai_double.requests)
    await call(client, "DEFAULT", model="legacy-chat")
    assert len(openai_double.requests) == before + 1 and "response_format" not in openai_double.requests[-1]


async def test_transient_errors_are_retried_then_succeed(openai_double: OpenAIDouble) -> None:
    openai_double.fail_next(2, status=503)
    before = len(openai_double.requests)
    done = await call(llm(openai_double), "TONE")
    assert done.parsed is not None and len(openai_double.requests) == before + 3


@pytest.mark.parametrize(("status", "reason"), [(500, "http_500"), (429, "http_429")])
async def test_persistent_errors_become_a_bounded_reason(openai_double: OpenAIDouble, status: int, reason: str) -> None:
    openai_double.break_model("gpt-4o", status=status)
    with pytest.raises(LLMFailure) as failure:
        await call(llm(openai_double), "TONE")
    assert failure.value.reason == reason


async def test_bad_key_unknown_model_and_unreachable_server(openai_double: OpenAIDouble) -> None:
    with pytest.raises(LLMFailure, match="http_401"):
        await call(llm(openai_double, key="sk-wrong"), "TONE")
    with pytest.raises(LLMFailure, match="http_404"):
        await call(llm(openai_double), "TONE", model="gpt-9")
    dead = ChatLLM(make_client(OPENAI_KEY, "http://127.0.0.1:9/v1"))
    with pytest.raises(LLMFailure, match="unreachable"):
        await call(dead, "TONE")


async def test_a_reasoning_budget_eaten_by_reasoning_is_a_failure_not_an_empty_answer(
    openai_double: OpenAIDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("analyzers.llm.REASONING_ALLOWANCE", 0)  # a bare 1000-token budget, shrunk
    with pytest.raises(LLMFailure, match="truncated"):
        await llm(openai_double).complete(
            model="o3", system="s", user="Текст: x", max_tokens=100, temperature=1, timeout=5, result_type=DefaultResult
        )


async def test_a_quota_error_is_not_retried(openai_double: OpenAIDouble) -> None:
    """429 `insufficient_quota` is billing, not load: waiting cannot help, the answer should come now."""
    openai_double.fail_next(5, status=429, code="insufficient_quota")
    before = len(openai_double.requests)
    with pytest.raises(LLMFailure) as failure:
        await call(llm(openai_double), "TONE")
    assert failure.value.reason == "insufficient_quota"
    assert len(openai_double.requests) - before == 1


async def test_a_rate_limit_waits_as_long_as_retry_after_says(openai_double: OpenAIDouble) -> None:
    openai_double.fail_next(1, status=429, retry_after=1.2)
    before = len(openai_double.requests)
    done = await call(llm(openai_double), "TONE")
    assert done.parsed is not None
    first, second = openai_double.request_times[before : before + 2]
    assert second - first >= 1.2


async def test_a_deployment_with_a_slow_local_model_waits_for_its_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: a mode's timeout is written for hosted models; `LLM_TIMEOUT` gives every call on this deployment
    at least that long, and the whole call's budget grows with it. Scaled down: a 2 s call, a 1 s mode timeout."""
    monkeypatch.setattr("analyzers.llm.CALL_BUDGET", 1.5)
    monkeypatch.setattr("analyzers.llm.backoff", lambda attempt: 0.1)
    slow = OpenAIDouble.ollama("llama3.2:latest", latency=2.0)
    await slow.start()
    try:
        spec = SHIPPED["DEFAULT"]
        request = dict(
            model="llama3.2",
            system="Answer in English.",
            user=spec.prompt.replace(TRANSCRIPT_PLACE, TEXT),
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            timeout=1.0,
            result_type=result_type(spec),
        )
        with pytest.raises(LLMFailure, match="timeout"):  # the mode's own timeout cuts the slow model off
            await ChatLLM(make_client("not-needed", slow.base_url)).complete(**request)  # type: ignore[arg-type]
        patient = ChatLLM(make_client("not-needed", slow.base_url), least_timeout=5.0)
        done = await patient.complete(**request)  # type: ignore[arg-type]
        assert done.parsed is not None and patient.budget == 5.0
    finally:
        await slow.stop()


async def test_json_cut_off_at_the_token_limit_is_a_failure_not_raw_json_for_a_chat(
    openai_double: OpenAIDouble,
) -> None:
    """A structured answer cut at `max_tokens` does not decode; kept as prose it would reach a chat as `{"summ…`."""
    with pytest.raises(LLMFailure, match="truncated"):
        await llm(openai_double).complete(
            model="gpt-4o-mini",
            system="s",
            user="Текст: the quarterly budget review is moved to Thursday morning",
            max_tokens=8,
            temperature=0.2,
            timeout=5,
            result_type=DefaultResult,
        )
