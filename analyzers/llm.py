"""Chat completions that survive the differences between models and servers.

* Reasoning models (o1, o3, o4-mini, gpt-5…) reject `max_tokens` and any non-default temperature with a 400.
  They get `max_completion_tokens` and no temperature. Their hidden reasoning is billed inside that budget, so
  a budget sized for the visible answer alone can come back empty with `finish_reason="length"`; we add a
  reasoning allowance and ask for low effort, and treat an empty, truncated answer as a failure.
* Structured output (a JSON schema derived from the mode's msgspec type) is asked for first and validated with
  msgspec. A server or model that rejects `response_format` is remembered and served the plain-text prompt.
* Transient errors (connection, timeout, 408/409/429/5xx) are retried here, with exponential backoff and
  jitter, honouring `Retry-After` on a 429, all inside one budget (`CALL_BUDGET`) that stays below the
  analyzer consumer's ack wait. A 429 that says `insufficient_quota` is not retried: no wait fixes billing,
  and the answer should come now with the other modes and a note. (The SDK's own retries are off: they would
  retry that 429 too.)
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import openai
from openai import AsyncOpenAI
from opentelemetry.trace import Span, SpanKind

from infra.bus import backoff
from infra.domain.contracts import Usage
from infra.runtime.telemetry import record_failure, step

REASONING_MODEL = re.compile(r"^(o\d+|gpt-5)(\b|[-.])", re.IGNORECASE)
REASONING_ALLOWANCE = 2000
LLM_RETRIES = 2
CALL_BUDGET = 25.0
"""Seconds one analysis may spend on the LLM, retries included, unless the deployment says more (`LLM_TIMEOUT`:
a local model on a small machine takes 20-60 s a call)."""
MAX_RETRY_AFTER = 10.0


class LLMFailure(Exception):
    """The call failed for good; `reason` is a short, bounded label fit for a metric or a log line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Completion:
    model: str
    content: str
    parsed: msgspec.Struct | None
    usage: Usage
    latency: float


def fenced(transcript: str) -> str:
    """The transcript as data: the fence cannot be closed from inside it."""
    body = re.sub(r"(?i)</?\s*transcript\s*>", " ", transcript)
    return f"<transcript>\n{body}\n</transcript>"


def is_reasoning_model(model: str) -> bool:
    return bool(REASONING_MODEL.match(model.split("/")[-1]))


def json_schema_for(result_type: type[msgspec.Struct]) -> dict[str, Any]:
    """A strict-mode schema: root object inlined (OpenAI rejects a root `$ref`), nested objects kept in `$defs`,
    every object closed (no extra fields) with every field required, as strict mode demands of each."""
    schema = msgspec.json.schema(result_type)
    defs = dict(schema.get("$defs", {}))
    root = dict(defs.pop(result_type.__name__)) if "$ref" in schema else dict(schema)
    root.pop("title", None)
    root = _closed(root)
    if defs:
        root["$defs"] = {name: _closed(dict(sub)) for name, sub in defs.items()}
    return root


def _closed(node: dict[str, Any]) -> dict[str, Any]:
    if node.get("type") == "object":
        node["additionalProperties"] = False
        node["required"] = list(node.get("properties", {}))
    return node


def make_client(api_key: str, base_url: str) -> AsyncOpenAI:
    """One pooled client per process: connections are reused across calls and modes."""
    return AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """The server's own wait, from `retry-after-ms` or `retry-after` (seconds), when it gives one."""
    headers = exc.response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None


def _error_code(exc: openai.APIStatusError) -> str | None:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    return getattr(exc, "code", None) or inner.get("code") or inner.get("type")


def offered(model: str, listed: set[str]) -> bool:
    """Whether the server has `model`, as the server resolves names: Ollama lists tagged ids (`llama3.2:latest`)
    and takes an untagged name to mean its `:latest`, so `MODEL_DEFAULT=llama3.2` is the model it lists as
    `llama3.2:latest`."""
    return model in listed or (":" not in model.rpartition("/")[2] and f"{model}:latest" in listed)


class ChatLLM:
    """`least_timeout`: what this deployment's server needs at least per call (`LLM_TIMEOUT`), whatever a mode's
    definition says, which was written for a fast hosted model; the budget for the whole call grows with it."""

    def __init__(self, client: AsyncOpenAI, least_timeout: float = 0.0) -> None:
        self.client = client
        self.least_timeout = least_timeout
        self.budget = max(CALL_BUDGET, least_timeout)
        self._no_structured: set[str] = set()

    def timeout_for(self, timeout: float) -> float:
        """A mode's timeout on this deployment."""
        return max(timeout, self.least_timeout)

    def supports_structured(self, model: str) -> bool:
        return model not in self._no_structured

    async def models(self) -> set[str] | None:
        """The models the server offers; None when it has no models endpoint (some compatible servers)."""
        try:
            return {model.id async for model in self.client.models.list()}
        except openai.NotFoundError:
            return None

    async def complete(
        self,
        *,
        model: str,
        system: str,
        user: str | tuple[str, ...],
        max_tokens: int,
        temperature: float,
        timeout: float,
        result_type: type[msgspec.Struct] | None = None,
    ) -> Completion:
        """`user` may be several messages: the instructions, then the data, each in its own message."""
        parts = (user,) if isinstance(user, str) else user
        params: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "system", "content": system}, *({"role": "user", "content": u} for u in parts)],
        }
        if is_reasoning_model(model):
            params["max_completion_tokens"] = max_tokens + REASONING_ALLOWANCE
            params["reasoning_effort"] = "low"
        else:
            params["max_tokens"] = max_tokens
            params["temperature"] = temperature
        structured = result_type is not None and self.supports_structured(model)
        if structured:
            assert result_type is not None
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": result_type.__name__, "schema": json_schema_for(result_type), "strict": True},
            }
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.system": "openai",
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": params.get("max_completion_tokens") or params["max_tokens"],
            "gen_ai.output.type": "json" if structured else "text",
            "server.address": self.client.base_url.host,
        }
        if "temperature" in params:
            attributes["gen_ai.request.temperature"] = params["temperature"]
        with step(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            try:
                return await self._call(params, timeout, structured, result_type, span)
            except LLMFailure as failure:
                record_failure(span, failure.reason)
                if failure.reason == "structured_output_unsupported":
                    self._no_structured.add(model)
                    return await self.complete(
                        model=model,
                        system=system,
                        user=user,
                        max_tokens=max_tokens,
                        temperature=temperature,
                        timeout=timeout,
                        result_type=result_type,
                    )
                raise

    async def _create(self, params: dict[str, Any], timeout: float, structured: bool, span: Span) -> Any:
        """One completion, retried on what may pass (429 but for quota, 408, 409, 5xx, network, timeout)."""
        deadline = time.monotonic() + self.budget
        timeout = self.timeout_for(timeout)
        for attempt in range(LLM_RETRIES + 1):
            remaining = deadline - time.monotonic()
            try:
                return await self.client.chat.completions.create(**params, timeout=max(1.0, min(timeout, remaining)))
            except openai.BadRequestError as exc:
                if structured and (exc.param == "response_format" or "response_format" in str(exc.message)):
                    raise LLMFailure("structured_output_unsupported") from exc
                raise LLMFailure(f"http_400_{exc.code or 'bad_request'}") from exc
            except openai.RateLimitError as exc:
                if _error_code(exc) == "insufficient_quota":
                    raise LLMFailure("insufficient_quota") from exc
                failure = LLMFailure("http_429")
                delay = min(_retry_after(exc) or backoff(attempt + 1), MAX_RETRY_AFTER)
            except openai.APITimeoutError as exc:
                failure, delay = LLMFailure("timeout"), backoff(attempt + 1)
                failure.__cause__ = exc
            except openai.APIConnectionError as exc:
                failure, delay = LLMFailure("unreachable"), backoff(attempt + 1)
                failure.__cause__ = exc
            except openai.APIStatusError as exc:
                if exc.status_code not in (408, 409) and exc.status_code < 500:
                    raise LLMFailure(f"http_{exc.status_code}") from exc
                failure, delay = LLMFailure(f"http_{exc.status_code}"), _retry_after(exc) or backoff(attempt + 1)
            delay = min(delay, MAX_RETRY_AFTER) * random.uniform(1.0, 1.25)
            if attempt == LLM_RETRIES or time.monotonic() + delay >= deadline:
                raise failure
            span.add_event(
                "retry", {"gen_ai.retry.reason": failure.reason, "gen_ai.retry.delay_seconds": round(delay, 3)}
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _call(
        self,
        params: dict[str, Any],
        timeout: float,
        structured: bool,
        result_type: type[msgspec.Struct] | None,
        span: Span,
    ) -> Completion:
        model = params["model"]
        started = time.perf_counter()
        response = await self._create(params, timeout, structured, span)
        latency = time.perf_counter() - started

        if not response.choices:
            raise LLMFailure("no_choices")
        choice = response.choices[0]
        message = choice.message
        usage = Usage(
            input_tokens=response.usage.prompt_tokens if response.usage else 0,
            output_tokens=response.usage.completion_tokens if response.usage else 0,
        )
        span.set_attributes(
            {
                "gen_ai.response.model": response.model or model,
                "gen_ai.response.finish_reasons": [choice.finish_reason or "unknown"],
                "gen_ai.usage.input_tokens": usage.input_tokens,
                "gen_ai.usage.output_tokens": usage.output_tokens,
            }
        )
        if getattr(message, "refusal", None):
            raise LLMFailure("refused")
        content = (message.content or "").strip()
        if not content:
            raise LLMFailure("truncated" if choice.finish_reason == "length" else "empty")
        parsed = None
        if structured:
            try:
                parsed = msgspec.json.decode(content, type=result_type)
            except msgspec.ValidationError as exc:
                raise LLMFailure("invalid_structured_output") from exc
            except msgspec.DecodeError as exc:
                # Some compatible servers ignore response_format: their prose is kept. JSON cut off at the token
                # limit, or broken, is no answer: shown as prose it would be raw JSON in a chat.
                if choice.finish_reason == "length":
                    raise LLMFailure("truncated") from exc
                if content.startswith(("{", "[", "```")):
                    raise LLMFailure("invalid_structured_output") from exc
                parsed = None
        return Completion(model=response.model or model, content=content, parsed=parsed, usage=usage, latency=latency)
