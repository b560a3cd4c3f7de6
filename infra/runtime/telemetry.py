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

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

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
