"""A new version that fails is rolled back on its own: logged, counted, and reported to the admins."""

from __future__ import annotations

import itertools

import msgspec
from prometheus_client import REGISTRY

from analyzers.guard import FIRST_CALLS, WINDOW, VersionGuard
from analyzers.service import AnalyzerService
from infra.bus import Bus, deliver
from infra.bus.names import STREAM_ADMIN, SUBJECT_ALERT
from infra.domain.contracts import AdminAlert
from infra.domain.definitions import load
from infra.domain.registry import ModeRegistry
from tests.support import DECIDED, a_transcript, an_analyzer, first_delivery
from voice_insight.doubles.openai_api import OpenAIDouble

_n = itertools.count(1)
FIRST = first_delivery(AnalyzerService.handle)


def test_a_version_whose_first_calls_fail_must_go_and_provider_trouble_does_not_count() -> None:
    guard = VersionGuard()
    v2 = (2, 1000.0)
    assert guard.record(v2, "http_429") is None and guard.record(v2, "insufficient_quota") is None
    assert guard.record(v2, None) is None
    assert guard.record(v2, "http_404") is None
    assert guard.record(v2, "timeout") is None
    assert (
        guard.record(v2, "invalid_structured_output")
        == "3 of its first 4 calls failed (last: invalid_structured_output)"
    )
    again = (2, 2000.0)  # the same version restored later by an admin is judged afresh
    assert guard.record(again, None) is None


def test_a_version_clearly_worse_than_its_predecessor_must_go() -> None:
    guard = VersionGuard()
    v1, v2 = (1, 0.0), (2, 10.0)
    for n in range(WINDOW):
        assert guard.record(v1, "timeout" if n % 10 == 0 else None) is None  # 10 % failures
    verdicts = [guard.record(v2, "timeout" if n % 3 == 0 and n >= FIRST_CALLS else None) for n in range(WINDOW)]
    assert verdicts[:-1] == [None] * (WINDOW - 1)
    assert verdicts[-1] is None, "a third of calls failing... is not yet 'clearly worse' by the margin"
    for _ in range(3):
        verdict = guard.record(v2, "timeout")
    assert verdict is not None and "of its last 20 calls failed, against 10% for v1" in verdict


async def test_a_failing_new_version_is_replaced_by_the_last_good_one_and_the_admins_are_told(
    private_bus: Bus, openai_double: OpenAIDouble
) -> None:
    name = f"GUARDED_{next(_n)}"
    registry = await ModeRegistry.open(private_bus)
    await registry.write(msgspec.structs.replace(load(DECIDED), name=name), None)  # gpt-4o-mini
    read = await registry.get(name)
    # A version that passed its canary, then its model went away.
    await registry.write(read.definition.successor("admin:x", "model → gpt-4.1", model="gpt-4.1"), read)
    analyzer = await an_analyzer(private_bus, openai_double.base_url, name)
    before = REGISTRY.get_sample_value("voice_insight_mode_rollbacks_total", {"mode": name}) or 0.0

    openai_double.break_model("gpt-4.1", status=404)
    try:
        outcomes = [await deliver(analyzer.handle, a_transcript(f"g{i}", "We decided."), FIRST) for i in range(3)]
    finally:
        openai_double.heal()
    assert [(v.outcome, v.reason) for v in outcomes] == [("failed", "http_404")] * 3

    current = (await registry.get(name)).definition
    assert (current.version, current.model, current.changed_by) == (1, "gpt-4o-mini", "auto")
    assert current.change.startswith("rolled back on its own from v2: 3 of its first 3 calls failed")
    assert REGISTRY.get_sample_value("voice_insight_mode_rollbacks_total", {"mode": name}) == before + 1
    stored = await private_bus.js.get_last_msg(STREAM_ADMIN, SUBJECT_ALERT)
    alert = msgspec.json.decode(stored.data, type=AdminAlert)
    assert alert.mode == name and "v2 (gpt-4.1) was rolled back to v1 (gpt-4o-mini)" in alert.detail

    # The next transcript runs on the good version, with no restart.
    assert (await deliver(analyzer.handle, a_transcript("g-next", "We decided."), FIRST)).outcome == "done"
