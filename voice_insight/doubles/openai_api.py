"""An OpenAI API double: a real HTTP server on 127.0.0.1 speaking `/v1/chat/completions` and `/v1/models` like
OpenAI.

The openai SDK reaches it through `OPENAI_BASE_URL`. It enforces what the real API enforces for the calls we
make: the API key (401), known models (404 `model_not_found`), reasoning models rejecting `max_tokens` and
non-default temperatures (400 `unsupported_parameter` / `unsupported_value`), reasoning tokens billed inside
`max_completion_tokens` (an answer cut to nothing with `finish_reason: "length"`), and models that do not
support `json_schema` output (400 on `response_format`), and each model's context window (400
`context_length_exceeded` when the messages and the completion asked for do not fit; `context_limits` shrinks
one for a test, as a local 8k model would be). Answers are built from the transcript it was sent,
so tests can see that the user's words went through the LLM, and follow the JSON schema when one is given.

Faults are injected per test: a number of upcoming 5xx/429 answers (a 429 says `retry-after`, or is the
billing kind, `insufficient_quota`, which no wait cures), a model that always fails, a latency. Like a real
model, it can be steered: a transcript that tells it to ignore its instructions gets an answer with a link and
markup in it, which the analyzer must never let through. Instructions that ask for what usage policies forbid
(`REFUSED_TOPICS`) get a refusal, as structured outputs give one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from voice_insight.doubles import LoopbackServer

REASONING = re.compile(r"^o\d")
REASONING_TOKENS = 320
CONTEXT_WINDOWS = {
    "o3": 200_000,
    "o4-mini": 200_000,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "gpt-4.1": 1_047_576,
    "legacy-chat": 4_096,
}
KNOWN_MODELS = {"o3", "o4-mini", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "legacy-chat"}
NO_JSON_SCHEMA = {"legacy-chat"}
REFUSED_TOPICS = ("weapon", "explosive", "malware")
"""Asked for in the instructions (not in a transcript, which is only data), a structured answer is refused, as
the real models refuse what their usage policies forbid: `message.refusal` instead of content."""


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status=status
    )


QUESTION_MARK = "The question:\n"
"""How the asker's last message begins (`analyzers.questions.messages_for`): a question about the transcript."""
EARLIER_MARK = "Earlier questions about this recording"
_TIMED = re.compile(r"^\[(\d+(?::\d\d){1,2})\] (.*)$")


def _content_words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"\w{4,}", text)}


def _answer_question(transcript: str, user: str, response_format: dict[str, Any], steered: bool) -> str:
    """A question answered as a model would, from the transcript alone: the line that shares most words with the
    question (with the previous question's words too, for a follow-up like "and who pays?"), and its moment;
    "does not say" when no line shares any."""
    question = user.rsplit(QUESTION_MARK, 1)[1].strip()
    asked = _content_words(question)
    if EARLIER_MARK in user:
        earlier = re.findall(r"^Q: (.*)$", user, re.M)
        if earlier:
            asked |= _content_words(earlier[-1])
    best, best_score = None, 0
    for line in transcript.splitlines():
        match = _TIMED.match(line.strip())
        moment, words = (match.group(1), match.group(2)) if match else ("", line)
        score = len(asked & _content_words(words))
        if score > best_score:
            best, best_score = (moment, words.strip()), score
    if best is None:
        found, answer, at = False, "The recording does not say.", []
    else:
        found, answer, at = True, f"The speaker says: {best[1]}", [best[0]] if best[0] else []
    if steered:
        answer += ' <a href="https://evil.example.com/x">Click here</a> www.evil.example.com'
    if response_format.get("type") == "json_schema":
        return json.dumps({"found": found, "answer": answer, "at": at}, ensure_ascii=False)
    return answer


DIGEST_MAP_MARK = "You condense voice notes of a chat"
"""How the digest's map step begins (`analyzers.digesting.MAP_PROMPT`)."""
_NOTE_HEADER = re.compile(r"^\[(\d+)\] (\d\d:\d\d) (.*)$", re.M)


def _notes_of(transcript: str) -> list[tuple[str, str]]:
    """A digest's notes: each `[n] hh:mm speaker` header and the words under it."""
    heads = list(_NOTE_HEADER.finditer(transcript))
    return [
        (h.group(0), transcript[h.end() : heads[i + 1].start() if i + 1 < len(heads) else len(transcript)].strip())
        for i, h in enumerate(heads)
    ]


def _digest(transcript: str) -> str:
    """A digest as a model would write one, from the notes alone: a topic per note, its questions as open ones,
    sentences that decide as decisions, and one action per note for its speaker."""
    topics, decisions, questions, actions = [], [], [], []
    for header, words in _notes_of(transcript):
        match = _NOTE_HEADER.match(header)
        assert match is not None
        number, speaker = int(match.group(1)), match.group(3)
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", words) if s.strip()]
        topics.append({"text": _excerpt(words, 6), "notes": [number]})
        questions += [{"text": s, "notes": [number]} for s in sentences if s.endswith("?")]
        decisions += [{"text": s, "notes": [number]} for s in sentences if re.search(r"(?i)\b(decided|agreed)\b", s)]
        asked = next(
            (s for s in sentences if re.search(r"(?i)\b(please|will|must)\b", s)), sentences[0] if sentences else ""
        )
        if asked:
            actions.append({"speaker": speaker, "action": asked, "notes": [number]})
    return json.dumps(
        {"topics": topics, "decisions": decisions, "open_questions": questions, "actions": actions}, ensure_ascii=False
    )


def _excerpt(text: str, words: int = 8) -> str:
    return " ".join(text.split()[:words])


def _fill(schema: dict[str, Any], excerpt: str, name: str = "value") -> Any:
    kind = schema.get("type")
    if kind == "object":
        return {key: _fill(sub, excerpt, key) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [f"{name} {i}: {excerpt}" for i in (1, 2, 3)]
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    return f"{name}: {excerpt}"


@dataclass
class Fault:
    status: int
    remaining: int
    code: str | None = None
    retry_after: float | None = None


@dataclass
class OpenAIDouble(LoopbackServer):
    api_key: str
    latency: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    usage_log: list[dict[str, int]] = field(default_factory=list)
    _faults: list[Fault] = field(default_factory=list)
    _broken_models: dict[str, int] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    models: set[str] = field(default_factory=lambda: set(KNOWN_MODELS))
    """The ids `/v1/models` lists. Ollama's are tagged (`llama3.2:latest`), and it takes an untagged name to mean
    the `:latest` tag (`ollama()` plays such a server)."""
    context_limits: dict[str, int] = field(default_factory=lambda: dict(CONTEXT_WINDOWS))
    """Tokens a model takes, prompt and completion together; past it, 400 `context_length_exceeded`."""
    any_model: bool = False
    """Answer for whatever model a mode names, and list none (404 on `/v1/models`, as some compatible servers
    answer): `voice-insight dev`, where a mode being written may name any model."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/v1"

    @classmethod
    def ollama(cls, *models: str, latency: float = 0.0) -> OpenAIDouble:
        """Ollama's OpenAI-compatible API: no key asked for, tagged model ids, untagged names resolved."""
        return cls("", latency=latency, models=set(models))

    def resolve(self, model: str) -> str | None:
        """The listed id a request's model name means, as the server resolves it."""
        if model in self.models or (self.any_model and model):
            return model
        if ":" not in model and f"{model}:latest" in self.models:
            return f"{model}:latest"
        return None

    # --- fault injection --------------------------------------------------------------------------

    def fail_next(
        self, count: int, status: int = 500, code: str | None = None, retry_after: float | None = None
    ) -> None:
        self._faults.append(Fault(status, count, code, retry_after))

    def break_model(self, model: str, status: int = 500) -> None:
        self._broken_models[model] = status

    def heal(self) -> None:
        self._faults.clear()
        self._broken_models.clear()

    # --- the endpoints ----------------------------------------------------------------------------

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if not self.api_key or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error(
            401,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            code="invalid_api_key",
        )

    @staticmethod
    def _model_object(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1715367049, "owned_by": "system"}

    async def _models(self, request: web.Request) -> web.Response:
        if refused := self._unauthorized(request):
            return refused
        if self.any_model:
            return _error(404, "Not Found", "invalid_request_error")
        return web.json_response({"object": "list", "data": [self._model_object(m) for m in sorted(self.models)]})

    async def _model(self, request: web.Request) -> web.Response:
        if refused := self._unauthorized(request):
            return refused
        model = request.match_info["model"]
        if self.resolve(model) is None:
            return _error(
                404,
                f"The model '{model}' does not exist",
                "invalid_request_error",
                "model",
                "model_not_found",
            )
        return web.json_response(self._model_object(model))

    async def _chat(self, request: web.Request) -> web.Response:
        if refused := self._unauthorized(request):
            return refused
        body = await request.json()
        self.requests.append(body)
        self.request_times.append(time.monotonic())
        if self.latency:
            await asyncio.sleep(self.latency)
        for fault in self._faults:
            if fault.remaining > 0:
                fault.remaining -= 1
                return self._fault(fault.status, fault.code, fault.retry_after)
        model = body.get("model", "")
        if model in self._broken_models:
            return self._fault(self._broken_models[model])
        if self.resolve(model) is None:
            return _error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                code="model_not_found",
            )
        reasoning = bool(REASONING.match(model))
        if reasoning and "max_tokens" in body:
            return _error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                "invalid_request_error",
                "max_tokens",
                "unsupported_parameter",
            )
        if reasoning and body.get("temperature") not in (None, 1, 1.0):
            return _error(
                400,
                f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. Only the default (1) value is supported.",
                "invalid_request_error",
                "temperature",
                "unsupported_value",
            )
        if not reasoning and "reasoning_effort" in body:
            return _error(
                400,
                "Unrecognized request argument supplied: reasoning_effort",
                "invalid_request_error",
                "reasoning_effort",
                "unsupported_parameter",
            )
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema" and model in NO_JSON_SCHEMA:
            return _error(
                400,
                "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
                "invalid_request_error",
                "response_format",
            )

        in_messages = sum(len(m["content"]) for m in body["messages"]) // 4 + 7
        requested = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        window = self.context_limits.get(model, 10**9)
        if in_messages + requested > window:
            return _error(
                400,
                f"This model's maximum context length is {window} tokens. However, you requested "
                f"{in_messages + requested} tokens ({in_messages} in the messages, {requested} in the completion). "
                "Please reduce the length of the messages or completion.",
                "invalid_request_error",
                "messages",
                "context_length_exceeded",
            )
        user = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        instructions = re.sub(r"<transcript>.*?</transcript>", "", user, flags=re.S).lower()
        if response_format.get("type") == "json_schema" and any(w in instructions for w in REFUSED_TOPICS):
            return self._refusal(model, body)
        fenced = re.search(r"<transcript>\n(.*)\n</transcript>", user, re.S)
        transcript = fenced.group(1) if fenced else user.split("Текст:", 1)[-1].strip()
        excerpt = _excerpt(transcript)
        steered = "ignore" in transcript.lower() and "instructions" in transcript.lower()
        if steered:  # as models can be
            excerpt = 'The speaker is honest. <a href="https://evil.example.com/x">Click here</a> www.evil.example.com'
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        if QUESTION_MARK in user:
            content = _answer_question(transcript, user, response_format, steered)
        elif (response_format.get("json_schema") or {}).get("name") == "DigestReply":
            content = _digest(transcript)
        elif system.startswith(DIGEST_MAP_MARK):
            content = "\n".join(f"{header}\n{_excerpt(words, 6)}" for header, words in _notes_of(transcript))
        elif response_format.get("type") == "json_schema":
            content = json.dumps(_fill(response_format["json_schema"]["schema"], excerpt), ensure_ascii=False)
        else:
            content = f"РЕЗЮМЕ: {_excerpt(transcript)}\nОСНОВНЫЕ ПУНКТЫ:\n• {_excerpt(transcript, 3)}"
        prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4 + 7
        answer_tokens = len(content) // 4 + 1
        reasoning_tokens = REASONING_TOKENS if reasoning else 0
        budget = body.get("max_completion_tokens") or body.get("max_tokens") or 10**9
        finish = "stop"
        if reasoning_tokens + answer_tokens > budget:
            # Cut at the limit, as the API does: what the hidden reasoning left of the budget, in visible text.
            left = max(0, budget - reasoning_tokens)
            content, answer_tokens, finish = content[: left * 4], left, "length"
            reasoning_tokens = min(reasoning_tokens, budget)
        completion_tokens = reasoning_tokens + answer_tokens
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        self.usage_log.append({"model": model, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})  # type: ignore[dict-item]
        return web.json_response(
            {
                "id": f"chatcmpl-{next(self._ids):024d}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": f"{model}-2025-04-16" if reasoning else f"{model}-2024-08-06",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": "fp_voiceinsight",
            },
            headers={"x-request-id": f"req_{next(self._ids)}"},
        )

    def _refusal(self, model: str, body: dict[str, Any]) -> web.Response:
        """A safety refusal under structured outputs, as the API gives it: 200, no content, `message.refusal`."""
        prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4 + 7
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 12, "total_tokens": prompt_tokens + 12}
        refusal = "I'm sorry, but I can't assist with that request."
        return web.json_response(
            {
                "id": f"chatcmpl-{next(self._ids):024d}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": f"{model}-2024-08-06",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": None, "refusal": refusal, "annotations": []},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": "fp_voiceinsight",
            }
        )

    @staticmethod
    def _fault(status: int, code: str | None = None, retry_after: float | None = None) -> web.Response:
        if status == 429 and code == "insufficient_quota":
            return _error(
                429,
                "You exceeded your current quota, please check your plan and billing details. For more information "
                "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                code="insufficient_quota",
            )
        if status == 429:
            response = _error(
                429, "Rate limit reached for requests. Please try again in 1s.", "requests", code="rate_limit_exceeded"
            )
            response.headers["retry-after"] = str(retry_after if retry_after is not None else 0.2)
            return response
        if status == 503:
            return _error(503, "The engine is currently overloaded, please try again later.", "server_error")
        return _error(
            status, "The server had an error while processing your request. Sorry about that!", "server_error"
        )
