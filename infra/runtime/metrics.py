"""Prometheus metrics shared by every service; each process exports the ones it moves.

Labels take bounded values only: stage, mode, model, reason, consumer, direction. Never an id, never text.

What operators watch:
* `processing_time` → `voice_insight_stage_seconds{stage, mode}` histograms. One vocabulary of stages, each the
  work of one subscriber, recorded by the bus's middleware (`infra.bus.observe`): receive (a Telegram update),
  transcribe, analyze (per mode), answer (the formatter's merge of an event or its deadline, and the reply when
  the note is complete). Steps inside them and spans across them have names of the same vocabulary (`STAGES`):
  download (from Telegram), reply (the Bot API calls of one answer), join (transcript published to answer sent),
  end_to_end (update to answer).
* `tokens_used_per_mode` → `voice_insight_llm_tokens_total{mode, model, direction}` (input/output).
* `error_rate` → `voice_insight_errors_total{stage, mode, reason}` over `voice_insight_processed_total{stage, mode}`:
  `sum(rate(voice_insight_errors_total[5m])) by (stage) / sum(rate(voice_insight_processed_total[5m])) by (stage)`.
* `active_users` → `voice_insight_active_users`: distinct users in the last 24 h, counted from keyed hashes
  held in a KV bucket with a 24 h TTL (never raw ids).
* `voice_insight_handled_total{consumer, outcome}`: every delivery by how it ended (done, failed, rejected,
  gave_up, retry, error).
* Backlog: `voice_insight_consumer_pending_messages`, `..._ack_pending_messages`, `..._redelivered_messages`
  per durable consumer, `voice_insight_consumer_backlog_age_seconds` (how long the oldest message not yet handed
  out has waited), and `voice_insight_redeliveries_total` as handlers see them. Each process exports its own
  durables' backlog; the formatter also exports the transcribers' (`Bus.watch_backlog`), so a backlog with every
  transcriber gone is still measured. Several processes may export one durable's: aggregate with `max`, not `sum`.
* Storage: `voice_insight_jetstream_storage_bytes` (what JetStream holds on one server's disk) against
  `voice_insight_jetstream_storage_limit_bytes` (its cap, `JETSTREAM_MAX_FILE_STORE`), from the gateway.
* Up and connected: `voice_insight_healthy` (what `/health` says, 1 or 0) and `voice_insight_nats_connected`, both
  as of the scrape; `voice_insight_mode_live{mode}` (1 while an analyzer answers for an enabled mode).

The alert rules over these are in `infra/config/prometheus/alerts.yml`, each explained in `docs/runbook.md`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 55, 90, 150, 300)

STAGE_SECONDS = Histogram(
    "voice_insight_stage_seconds", "Time spent per pipeline stage", ["stage", "mode"], buckets=_SECONDS
)
STAGES: dict[str, str] = {
    # a subscriber's stage: the bus's middleware times every delivery (`@consumes(stage=...)`)
    "receive": "the gateway takes a Telegram update in",
    "transcribe": "a transcriber turns a note, or a piece of one, into text",
    "analyze": "an analyzer runs its mode over a transcript",
    "answer": "the formatter merges an event or meets a deadline, and replies when the note is complete",
    "admin": "the gateway tells the admins a result or an alert",
    "register": "the registrar validates and stores a change of a mode",
    "forget": "a keeper erases its part of a chat that said /forget",
    "ask": "an asker answers a question about a recording, or writes a chat's digest, from the transcripts",
    # a step inside one (`infra.runtime.telemetry.step`)
    "download": "inside receive: the file from Telegram",
    "reply": "inside answer: the Bot API calls of one answer",
    # across services (`observe_stage`)
    "join": "a transcript published to its answer sent",
    "end_to_end": "an update received to its answer sent",
    "question": "a question asked to its answer sent",
}
"""The one vocabulary of the `stage` label: anything else is refused where it is declared or observed."""


def known_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not in infra.runtime.metrics.STAGES")
    return stage


def observe_stage(stage: str, seconds: float, mode: str = "") -> None:
    """One duration of a stage of the vocabulary (`STAGES`)."""
    STAGE_SECONDS.labels(known_stage(stage), mode).observe(max(0.0, seconds))


PROCESSED = Counter("voice_insight_processed_total", "Work items finished per stage (any outcome)", ["stage", "mode"])
ERRORS = Counter(
    "voice_insight_errors_total", "Work items that failed, per stage and reason", ["stage", "mode", "reason"]
)
HANDLED = Counter(
    "voice_insight_handled_total",
    "Deliveries per consumer by outcome: done, failed, rejected, gave_up, retry, error",
    ["consumer", "outcome"],
)
RENDER_FAILURES = Counter(
    "voice_insight_render_failures_total", "Answers that could not be rendered and became an apology"
)
ANSWERS = Counter("voice_insight_answers_total", "Answers sent, by kind: complete, partial or failure", ["kind"])
TOKENS = Counter("voice_insight_llm_tokens_total", "LLM tokens used", ["mode", "model", "direction"])
AUDIO_SECONDS = Counter("voice_insight_audio_seconds_total", "Seconds of audio transcribed")
OVERDUE_SKIPPED = Counter(
    "voice_insight_transcriptions_overdue_total",
    "Notes and pieces left untranscribed because their transcription deadline had passed (transcribers too few)",
)
ACTIVE_USERS = Gauge("voice_insight_active_users", "Distinct users in the last 24 hours")
CONSUMER_PENDING = Gauge(
    "voice_insight_consumer_pending_messages", "Messages not yet delivered to a durable consumer", ["consumer"]
)
CONSUMER_ACK_PENDING = Gauge(
    "voice_insight_consumer_ack_pending_messages", "Messages delivered but not yet acked", ["consumer"]
)
CONSUMER_REDELIVERED = Gauge(
    "voice_insight_consumer_redelivered_messages", "Messages delivered more than once and not yet acked", ["consumer"]
)
CONSUMER_BACKLOG_AGE = Gauge(
    "voice_insight_consumer_backlog_age_seconds",
    "Seconds the oldest message not yet delivered to a durable consumer has waited (0: none waits)",
    ["consumer"],
)
JETSTREAM_STORAGE = Gauge(
    "voice_insight_jetstream_storage_bytes",
    "Bytes JetStream holds for the deployment on one server's disk: streams, buckets, audio and pieces",
)
JETSTREAM_STORAGE_LIMIT = Gauge(
    "voice_insight_jetstream_storage_limit_bytes",
    "The JetStream store's cap on one server (max_file_store, as JETSTREAM_MAX_FILE_STORE says)",
)
HEALTHY = Gauge("voice_insight_healthy", "1 when the service's /health answers ok (connected and ready), else 0")
NATS_CONNECTED = Gauge("voice_insight_nats_connected", "1 while the service is connected to NATS, else 0")
NATS_REFUSED = Counter(
    "voice_insight_nats_refused_total",
    "Operations the NATS server refused this service's account (a permissions violation: infra/ops/access.py)",
)
MODE_LIVE = Gauge(
    "voice_insight_mode_live", "1 while an analyzer announces an enabled mode, 0 when none does", ["mode"]
)
REJECTED = Counter(
    "voice_insight_rejected_messages_total",
    "Messages terminated without being handled (poison, undecodable, attempts exhausted)",
    ["consumer", "reason"],
)
REDELIVERIES = Counter(
    "voice_insight_redeliveries_total", "Deliveries after the first, as handlers saw them", ["consumer"]
)
TELEGRAM_FLOOD_WAITS = Counter(
    "voice_insight_telegram_flood_waits_total", "429 retry_after answers from the Bot API, waited out", ["method"]
)
SHARED_PACE_UNREACHABLE = Counter(
    "voice_insight_shared_pace_unreachable_total",
    "Times the Bot API pacing shared between processes could not be reached, and a process paced alone",
)
OPTIONAL_WRITES_SKIPPED = Counter(
    "voice_insight_telegram_optional_writes_skipped_total",
    "Progress edits not made: the bot's or the chat's Bot API slots were booked further ahead than they may wait",
)
BAD_MODE_ANNOUNCEMENTS = Counter(
    "voice_insight_bad_mode_announcements_total", "Entries in voice-modes that could not be read, skipped"
)
SKIPPED = Counter(
    "voice_insight_analyses_skipped_total", "Transcripts not analysed because nobody waits for them", ["mode", "reason"]
)
LIMITED = Counter(
    "voice_insight_limited_total",
    "Notes or messages refused by a limit: private, pending, per_minute, quota, budget, storage (a big file, the "
    "JetStream store nearly full)",
    ["limit"],
)
MODE_CHANGES = Counter(
    "voice_insight_mode_changes_total", "Changes to the mode registry, applied or refused", ["action", "result"]
)
MODE_CALLS = Counter(
    "voice_insight_mode_calls_total",
    "Analyses per mode and version: ok, error or cached",
    ["mode", "version", "outcome"],
)
MODE_LATENCY = Histogram(
    "voice_insight_mode_latency_seconds",
    "LLM time of one analysis per mode and version",
    ["mode", "version"],
    buckets=_SECONDS,
)
CACHE = Counter("voice_insight_cache_requests_total", "Cache look-ups: hit or miss", ["cache", "result"])
MODE_ROLLBACKS = Counter("voice_insight_mode_rollbacks_total", "Mode versions rolled back on their own", ["mode"])
DAILY_TOKENS = Gauge("voice_insight_daily_tokens", "LLM tokens used today by the whole bot, as an analyzer last saw it")
