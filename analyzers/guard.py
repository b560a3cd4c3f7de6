"""Automatic rollback: a new version of a mode that fails is replaced by the last one that worked.

Two rules, judged on this process's own calls (every analyzer replica judges what it sees; the registry's
compare-and-set makes sure a version is rolled back once):
* a version whose first `FIRST_CALLS` calls fail `FIRST_FAILURES` times or more never worked;
* a version whose error rate over its last `WINDOW` calls clearly exceeds its predecessor's (more than twice,
  and by more than `MARGIN`) made things worse.

Only failures that are the version's own count: a missing or failing model, a bad request, an answer out of
the schema, a timeout. A provider's rate limit, an exhausted quota or budget, or a network failure would fail
any version alike, so they do not.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

FIRST_CALLS = 5
FIRST_FAILURES = 3
WINDOW = 20
MARGIN = 0.25
NOT_THE_VERSIONS_FAULT = frozenset({"http_429", "insufficient_quota", "unreachable", "budget_exhausted", "disabled"})


@dataclass
class _Record:
    first: list[bool] = field(default_factory=list)
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def rate(self) -> float:
        return self.recent.count(False) / len(self.recent) if self.recent else 0.0


Activation = tuple[int, float]
"""A version as activated: its number and when it was made current (a version restored later starts afresh)."""


class VersionGuard:
    """Outcomes per activated version of one mode, and the verdict on the version just called."""

    def __init__(self) -> None:
        self.records: dict[Activation, _Record] = {}
        self.order: list[Activation] = []
        """Activations in the order this process first ran them: each one's predecessor is the one before."""

    def record(self, version: Activation, failure: str | None) -> str | None:
        """Count one call (`failure`: its reason, None if it worked); return why `version` must be rolled back,
        if it must."""
        if failure in NOT_THE_VERSIONS_FAULT:
            return None
        if version not in self.records:
            self.records[version] = _Record()
            self.order.append(version)
        record = self.records[version]
        ok = failure is None
        if len(record.first) < FIRST_CALLS:
            record.first.append(ok)
        record.recent.append(ok)
        failed_first = record.first.count(False)
        if failed_first >= FIRST_FAILURES:
            return f"{failed_first} of its first {len(record.first)} calls failed (last: {failure or 'ok'})"
        predecessor = self._predecessor(version)
        if predecessor is not None and len(record.recent) == WINDOW:
            mine, theirs = record.rate(), self.records[predecessor].rate()
            if mine > 2 * theirs and mine > theirs + MARGIN:
                return f"{mine:.0%} of its last {WINDOW} calls failed, against {theirs:.0%} for v{predecessor[0]}"
        return None

    def _predecessor(self, version: Activation) -> Activation | None:
        index = self.order.index(version)
        for earlier in reversed(self.order[:index]):
            if len(self.records[earlier].recent) >= WINDOW // 2:
                return earlier
        return None
