"""The bus: the delivery mechanism, and the one place that knows subjects, buckets, headers, acks and trace context.

It knows no domain: events are msgspec Structs it encodes and decodes by the types handlers declare
(`codec`); the contracts themselves are the domain's (`infra.domain.contracts`). It may import `infra.runtime`
and nothing else of the project.

- `names`: every subject, stream, bucket and durable, and the topology provisioning creates.
- `consumers`: `@consumes` on a handler, the outcomes it may raise (`Retry`, `Fail`, `Reject`) and `deliver`,
  the one table that settles a delivery.
- `client`: `Bus`, the connection: publishing, KV and Object Store, and the workers of declared consumers.
- `observe`: the telemetry middleware every delivery passes (spans, outcome counters, stage durations).
- `kvcache`: a KV bucket as a cache with hit/miss counters.
- `pace`: a rate shared by every process of the deployment (the Bot API's), slots taken by compare-and-set.

A service imports what it uses from here:

    from infra.bus import Bus, Delivery, Retry, consumes
    from infra.bus.names import SUBJECT_TRANSCRIPT, CONSUMER_FORMATTER
"""

from infra.bus.client import Bus, LoginRefused, change_key
from infra.bus.codec import decoder, encode
from infra.bus.consumers import (
    ConsumerSpec,
    Declared,
    Delivery,
    EarlierAttemptsDied,
    Fail,
    Outcome,
    Queue,
    QueuePlace,
    Reject,
    Retry,
    Verdict,
    backoff,
    consumes,
    declaration,
    deliver,
)

__all__ = [
    "Bus",
    "ConsumerSpec",
    "Declared",
    "Delivery",
    "EarlierAttemptsDied",
    "Fail",
    "LoginRefused",
    "Outcome",
    "Queue",
    "QueuePlace",
    "Reject",
    "Retry",
    "Verdict",
    "backoff",
    "change_key",
    "consumes",
    "declaration",
    "decoder",
    "deliver",
    "encode",
]
