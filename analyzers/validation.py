"""Validating a candidate mode before it is activated: nothing reaches users that was not seen to work.

The checks, in order, each stopping the candidate with a reason a person can act on:
1. the definition itself (`infra.domain.definitions.problems`: name, prompt placeholder and length, fields, limits);
2. the model exists on the configured OpenAI-compatible server (its `/models` list; a server without one is
   asked by the canary instead);
3. a canary call on a built-in sample transcript, through exactly the request the analyzer will make (reasoning
   models get `max_completion_tokens` and no temperature), returns an answer in the mode's fields within the
   mode's timeout.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Literal, NamedTuple

import openai

from analyzers.llm import ChatLLM, LLMFailure, offered
from analyzers.service import request_for
from infra.domain.contracts import Usage
from infra.domain.definitions import ModeDefinition, problems

SAMPLE_TRANSCRIPT = (
    "Hi Anna, it is Mark. The client called again about the contract: they want the price down by ten percent "
    "and the delivery moved to March. I said we would answer by Friday. Can you check with finance today and "
    "send me your numbers? Honestly, I am a bit worried we will lose them."
)
"""What every canary analyses: short, concrete, with a request, a deadline and a feeling in it."""


CanaryKind = Literal["server", "model_missing", "failed", "no_fields", "slow"]


class CanaryProblem(NamedTuple):
    """Why a candidate did not pass the model's half of validating: what kind of fault (a chat mode's instruction
    is to blame for some, the server for others), the LLM's reason code if there was one, and a sentence."""

    kind: CanaryKind
    reason: str
    message: str


async def validate(candidate: ModeDefinition, llm: ChatLLM) -> list[str]:
    """Why `candidate` must not be activated; empty when it may be."""
    found = problems(candidate)
    if found:
        return found
    problem = await canary(candidate, llm)
    return [problem.message] if problem else []


async def canary(
    candidate: ModeDefinition, llm: ChatLLM, spent: Callable[[Usage], Awaitable[None]] | None = None
) -> CanaryProblem | None:
    """Checks 2 and 3: the model is on the server, and answers the sample in the mode's fields in time. `spent`
    hears what the call cost, if it got an answer (a chat's mode is tried on the bot's token budget)."""
    try:
        listed = await llm.models()  # None: a compatible server without a models endpoint; the canary will tell
    except openai.APIError as exc:
        return CanaryProblem(
            "server", type(exc).__name__, f"the models endpoint did not answer ({type(exc).__name__}); try again later"
        )
    if listed is not None and not offered(candidate.model, listed):
        return CanaryProblem(
            "model_missing", "", f"the model {candidate.model!r} does not exist on the configured server"
        )
    started = time.perf_counter()
    try:
        done = await llm.complete(**request_for(candidate, SAMPLE_TRANSCRIPT, "en"))
    except LLMFailure as failure:
        return CanaryProblem("failed", failure.reason, f"the canary call to {candidate.model} failed: {failure.reason}")
    took = time.perf_counter() - started
    if spent is not None:
        await spent(done.usage)
    if done.parsed is None:
        return CanaryProblem(
            "no_fields", "", f"{candidate.model} answered, but not in the mode's fields (no structured output)"
        )
    if took > (allowed := llm.timeout_for(candidate.timeout)):
        return CanaryProblem("slow", "", f"the canary took {took:.1f}s, more than the mode's timeout of {allowed:g}s")
    return None
