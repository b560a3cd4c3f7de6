"""Telemetry around every subscriber: one span and one set of metrics per delivery, with the same labels everywhere.

Handlers do not time or count their own work. A handler ends in an outcome (`infra.bus` turns what it raised
into a `Verdict`), and the middleware here records that outcome under the labels its consumer declared:

| outcome    | how the handler ended                                | stage seconds | processed | errors{reason}     |
|------------|------------------------------------------------------|---------------|-----------|--------------------|
| `done`     | returned                                             | yes           | yes       |                    |
| `failed`   | raised `Fail(reason)`: over, and the user hears back | yes           | yes       | its reason         |
| `rejected` | raised `Reject(reason)`, or the message was unreadable |             | yes       | its reason         |
| `gave_up`  | failed on its last attempt, or its workers died      |               | yes       | the exception type |
| `retry`    | raised `Retry(delay)`: not now                       |               |           | `error=`, if given |
| `error`    | raised anything else before its last attempt         |               |           | the exception type |

`voice_insight_handled_total{consumer, outcome}` counts every delivery; the stage metrics
(`voice_insight_stage_seconds`, `voice_insight_processed_total`, `voice_insight_errors_total`) share the labels
`stage` and `mode`, so an error ratio divides like by like. Handlers keep only measurements that are theirs: a
sub-step's time (`download`, `reply`), token usage, an answer's kind.

The consumer span follows the OpenTelemetry messaging conventions and continues the trace whose context came in
the message headers; its status and `error.type` say how the delivery ended, never what the user said.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import propagate
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind
from opentelemetry.util.types import Attributes

from infra.runtime.metrics import ERRORS, HANDLED, PROCESSED, REDELIVERIES, STAGE_SECONDS
from infra.runtime.telemetry import record_failure, tracer

STAGE_DONE = frozenset({"done", "failed"})
"""Outcomes whose handler finished the stage's work: their time is the stage's time."""
SETTLED = frozenset({"done", "failed", "rejected", "gave_up"})
"""Outcomes that end a message for good."""


def messaging_attributes(subject: str, operation: str) -> dict[str, str]:
    """OpenTelemetry messaging attributes; subjects name a stage or mode, never a user."""
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": operation,
        "messaging.operation.name": "publish" if operation == "send" else "process",
    }


@dataclass(frozen=True)
class ConsumerTelemetry:
    """The middleware for one consumer: `consumer` is its durable, `stage` and `mode` its metric labels."""

    consumer: str
    stage: str
    mode: str = ""
    traced: bool = True
    """False where the handler starts the trace itself (a Telegram update becomes a voice note's root span)."""

    @contextmanager
    def delivery(self, subject: str, headers: Mapping[str, str] | None, attempt: int) -> Iterator[Span]:
        """The consumer span of one delivery, current while the handler runs and its message is settled."""
        if attempt > 1:
            REDELIVERIES.labels(self.consumer).inc()
        if not self.traced:
            yield INVALID_SPAN
            return
        attributes: Attributes = {
            **messaging_attributes(subject, "process"),
            "messaging.consumer.group.name": self.consumer,
            "messaging.nats.delivery_count": attempt,
        }
        with tracer().start_as_current_span(
            f"process {subject}",
            context=propagate.extract(dict(headers or {})),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield span

    def record(self, span: Span, outcome: str, reason: str | None, started: float) -> None:
        """Count one delivery's outcome (see the table above); `started` is `time.perf_counter()` at its start."""
        HANDLED.labels(self.consumer, outcome).inc()
        if outcome in STAGE_DONE:
            STAGE_SECONDS.labels(self.stage, self.mode).observe(time.perf_counter() - started)
        if outcome in SETTLED:
            PROCESSED.labels(self.stage, self.mode).inc()
        if reason is not None:
            ERRORS.labels(self.stage, self.mode, reason).inc()
            record_failure(span, reason)
        span.set_attribute("voice_insight.outcome", outcome)
