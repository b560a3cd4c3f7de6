"""Tracing: one trace per voice note, across every process.

Configured by the standard OpenTelemetry variables. With neither `OTEL_EXPORTER_OTLP_ENDPOINT` nor
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, no SDK provider is installed: the API stays a no-op, so spans cost
nothing and nothing is exported. Otherwise spans go out over OTLP/HTTP in batches; `OTEL_SERVICE_NAME`
defaults to the service's own name, and `OTEL_TRACES_SAMPLER` and friends are honoured by the SDK.

Attributes carry sizes, durations, models, languages and counts, never content: no transcript, prompt,
answer, chat or user identifier ever becomes a span attribute or event.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from infra.runtime.metrics import known_stage, observe_stage

_provider = None

TRACER_NAME = "voice_insight"


def setup_tracing(service: str) -> None:
    global _provider
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create({**attributes, "service.namespace": "voice-insight"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider


def shutdown_tracing() -> None:
    """Flush what is buffered; called once on a clean stop."""
    if _provider is not None:
        _provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def record_failure(span: Span, error: BaseException | str) -> None:
    """Mark a span failed. Only the exception's type is recorded: messages can quote user content."""
    kind = error if isinstance(error, str) else type(error).__name__
    span.set_status(Status(StatusCode.ERROR, kind))
    span.set_attribute("error.type", kind)


@contextmanager
def step(
    name: str, *, stage: str = "", kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None
) -> Iterator[Span]:
    """One step inside a handler, the only way a handler opens a span: if the step raises, the span is failed
    with the exception's type unless a reason was recorded on it already. Never the exception's message or stack
    (the SDK's default exception event), which may quote the user. A step that finishes counts its time under
    `stage`, a name of `infra.runtime.metrics.STAGES`."""
    if stage:
        known_stage(stage)
    started = time.perf_counter()
    with tracer().start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except Exception as exc:
            status = getattr(span, "status", None)
            if status is None or status.status_code is not StatusCode.ERROR:  # a reason told already stays
                record_failure(span, exc)
            raise
    if stage:
        observe_stage(stage, time.perf_counter() - started)
