"""Names and topology: every subject, stream, bucket and durable the deployment has, and how long each keeps
what it holds. Published (docs/architecture.md) and granted per account (`infra.ops.access`); nothing else in
the code spells a subject or a bucket.
"""

from __future__ import annotations

from typing import Any

from nats.js import api

STREAM = "VOICE"
STREAM_UPDATES = "UPDATES"
"""Telegram updates taken in durably before their offset is confirmed to Telegram (work queue: gone once handled)."""
SUBJECT_UPDATES = "telegram.update"
SUBJECT_AUDIO = "voice.audio"
SUBJECT_AUDIO_QUEUED = "voice.audio.queued"
"""Notes of users who already have several in flight: transcribed when `voice.audio` is empty (fair order)."""
STREAM_INFLIGHT = "INFLIGHT"
"""One message per note in flight, on `inflight.<user>.<cid>`: counted per user, purged when answered."""
STREAM_RECENT = "RECENT"
"""One message per note taken in, on `recent.<user>.<cid>`, kept a minute: notes per minute per user."""
SUBJECT_TRANSCRIPT = "voice.transcript"
SUBJECT_PROGRESS = "voice.progress"
"""How far the transcriber is through a long recording: for the status message."""
SUBJECT_RERUN = "voice.rerun"
"""More modes asked for on a note already answered (a button): the formatter's join opens like for new audio."""
STREAM_PIECES = "PIECES"
SUBJECT_PIECE = "piece.transcribe"
"""A piece of a long recording, for any transcriber: work between transcribers, outside `voice.>` (the notes'
own story, which the formatter reads whole)."""
SUBJECT_FAILED = "voice.failed"
SUBJECT_ANALYSIS_PREFIX = "voice.analysis."
SUBJECT_CHAT_ANALYSIS = "voice.analysis.chat"
"""Every chat mode's analysis (`Analysis.mode` says which): one subject, so no chat's mode name is a subject."""
SUBJECT_ALL = "voice.>"
STREAM_ADMIN = "ADMIN"
"""Administration: mode changes asked for and their results, alerts for the admins (kept a day)."""
SUBJECT_MODE_CHANGE = "admin.mode.change"
SUBJECT_MODE_CHANGED = "admin.mode.changed"
SUBJECT_ALERT = "admin.alert"
SUBJECT_NOTE_GET = "notes.get"
"""A stored note asked for by its exact key (a button under its answer): a request the formatter answers, outside
every stream. The gateway reads notes only this way: a key it names, never a wildcard, never a listing."""
STREAM_FORGET = "FORGET"
"""`/forget`, carried out by whoever keeps each part of a chat (work queue: gone once done). The gateway asks the
formatter (`forget.chat`), which erases the notes and asks each other keeper to erase its own: the transcriber its
cached transcripts and pieces, every mode's analyzer its cached analyses, the gateway its intake records. So no
account erases, or may purge, what it does not keep itself."""
SUBJECT_FORGET_CHAT = "forget.chat"
SUBJECT_FORGET_TRANSCRIPTS = "forget.transcripts"
SUBJECT_FORGET_INTAKE = "forget.intake"
SUBJECT_FORGET_ANALYSES_PREFIX = "forget.analyses."
STREAM_CHAT_MODES = "CHATMODES"
"""Chats' own modes changed, and what became of each change (work queue: gone once handled, so a chat's `/forget`
leaves no request naming it behind)."""
SUBJECT_CHAT_MODE_CHANGE = "chatmode.change"
"""A chat's own mode defined, dropped or forgotten, or the bot admins' policy for chat modes changed: for the
registrar, which validates a definition (a canary call) and is the one writer of `voice-chat-modes`."""
SUBJECT_CHAT_MODE_CHANGED = "chatmode.changed"
STREAM_ASK = "ASK"
"""Questions about a recording and chats' digests, asked and answered (work queue: gone once handled). The gateway
asks (`ask.question`, `ask.digest`); the formatter, which keeps the notes, finds what is asked about and poses it
to the askers with the transcripts (`STREAM_ASKER`); an asker answers (`ask.answer`, `ask.digest.written`); the
formatter replies."""
SUBJECT_QUESTION = "ask.question"
SUBJECT_ANSWER = "ask.answer"
SUBJECT_DIGEST = "ask.digest"
"""A chat's digest asked for (`/digest`, or its daily one due): the formatter gathers the chat's notes."""
SUBJECT_DIGEST_WRITTEN = "ask.digest.written"
STREAM_ASKER = "ASKER"
"""What the askers take (work queue): a question or a digest posed with its transcripts. A stream of its own, so
an asker reads only what it answers, never the questions and answers on `ASK` with their chats."""
SUBJECT_POSED = "asker.question"
SUBJECT_DIGEST_POSED = "asker.digest"

BUCKET_AUDIO = "voice-audio"  # Object Store: the voice note's bytes
BUCKET_MODES = "voice-modes"  # KV: live analyzer modes, kept by heartbeats
BUCKET_JOINS = "voice-joins"  # KV: the formatter's per-note join state
BUCKET_ANSWERED = "voice-answered"  # KV: the "answered" marks, created atomically
BUCKET_USERS = "voice-users"  # KV: keyed hashes of user ids seen in the last 24 h (active users)
BUCKET_QUOTA = "voice-quota"  # KV: seconds of speech per user hash per day
BUCKET_BUDGET = "voice-budget"  # KV: LLM tokens used by the whole bot per day
BUCKET_INTAKE = "voice-intake"  # KV: per note, the status message already sent and whether it was handed over
BUCKET_USAGE = "voice-usage"  # KV: calls, errors, tokens, latency per mode, version and hour (no user data)
BUCKET_ANALYSIS_CACHE = "voice-analysis-cache"  # KV: analyses by a hash of mode version, model and transcript
BUCKET_TRANSCRIPT_CACHE = "voice-transcript-cache"  # KV: transcripts by a keyed hash of Telegram's file id
ANALYSIS_CACHE_TTL = 3600.0
USAGE_TTL = 25 * 3600.0
BUCKET_NOTES = "voice-notes"  # KV: answered notes by chat key and note, for the buttons under the answer (24 h)
BUCKET_PIECES = "voice-pieces"  # KV: the transcribed pieces of long notes, until they are stitched together
BUCKET_CHATS = "voice-chat-settings"  # KV: settings per chat under a keyed hash of the chat; until /forget
BUCKET_PACE = "voice-pace"  # KV: the Bot API's next free slots, per keyed hash of a chat and for the bot
PACE_TTL = 300.0
BUCKET_THREADS = "voice-threads"  # KV: the bot's messages a reply may ask about: which note, the turns so far
BUCKET_DIGESTS = "voice-digests"  # KV: the chats that asked for a daily digest, and when; until switched off
BUCKET_CHAT_MODES = "voice-chat-modes"  # KV: chats' own modes by chat key, and the policy; until dropped or /forget
BUCKET_REGISTRY = "voice-mode-registry"  # KV: every mode's definition, with history; configuration, not user data
REGISTRY_HISTORY = 20

USER_DATA_TTL = 24 * 3600.0  # nothing a user said or sent outlives a day
MODES_TTL = 30.0
KV_BUCKETS: tuple[tuple[str, float | None, int], ...] = (
    (BUCKET_MODES, MODES_TTL, 1),
    (BUCKET_INTAKE, USER_DATA_TTL, 1),
    (BUCKET_QUOTA, USER_DATA_TTL, 1),
    (BUCKET_BUDGET, USER_DATA_TTL, 1),
    (BUCKET_JOINS, USER_DATA_TTL, 1),
    (BUCKET_ANSWERED, USER_DATA_TTL, 1),
    (BUCKET_USERS, USER_DATA_TTL, 1),
    (BUCKET_REGISTRY, None, REGISTRY_HISTORY),  # kept until changed
    (BUCKET_USAGE, USAGE_TTL, 1),
    (BUCKET_ANALYSIS_CACHE, ANALYSIS_CACHE_TTL, 1),
    (BUCKET_TRANSCRIPT_CACHE, USER_DATA_TTL, 1),
    (BUCKET_NOTES, USER_DATA_TTL, 1),
    (BUCKET_THREADS, USER_DATA_TTL, 1),  # as long as the notes they point at
    (BUCKET_PIECES, USER_DATA_TTL, 1),  # as long as the note's audio: a long note's pieces may wait for hours
    (BUCKET_CHATS, None, 1),  # configuration a chat chose, not what it said
    (BUCKET_CHAT_MODES, None, 1),  # a chat's own modes, configuration it chose: until dropped or /forget
    (BUCKET_DIGESTS, None, 1),  # a chat's choice of a daily digest: kept until switched off or /forget
    (BUCKET_PACE, PACE_TTL, 1),  # a time per hashed chat, five minutes
)
"""Every KV bucket: (name, TTL in seconds or None for kept, history)."""
KV_ENTRY_TTL = frozenset({BUCKET_THREADS})
"""Buckets whose entries may also carry a lifetime of their own, shorter than the bucket's (`Bus.kv_put`): a
thread copies earlier turns forward, which must not outlive their own day."""
DUPLICATE_WINDOW = 20 * 60.0

# Consumers every deployment has; analyzers add `analyzer-<MODE>` consumers themselves.
CONSUMER_TRANSCRIBER = "transcriber"
CONSUMER_TRANSCRIBER_QUEUED = "transcriber-queued"
CONSUMER_TRANSCRIBER_PIECES = "transcriber-pieces"
CONSUMER_FORMATTER = "formatter"
CONSUMER_FORMATTER_DEADLINE = "formatter-deadline"
CONSUMER_FORMATTER_WATCHDOG = "formatter-watchdog"
CONSUMER_FORMATTER_WATCHDOG_QUEUED = "formatter-watchdog-queued"
CONSUMER_GATEWAY = "gateway"
CONSUMER_REGISTRAR = "mode-registrar"
CONSUMER_ADMIN_REPLIES = "gateway-admin"
CONSUMER_GATEWAY_ALERTS = "gateway-alerts"
CONSUMER_FORMATTER_FORGET = "formatter-forget"
CONSUMER_TRANSCRIBER_FORGET = "transcriber-forget"
CONSUMER_GATEWAY_FORGET = "gateway-forget"
CONSUMER_ASKER = "asker"
CONSUMER_FORMATTER_QUESTIONS = "formatter-questions"
CONSUMER_FORMATTER_ANSWERS = "formatter-answers"
CONSUMER_FORMATTER_DIGESTS = "formatter-digests"
CONSUMER_FORMATTER_DIGESTED = "formatter-digested"
CONSUMER_ASKER_DIGESTS = "asker-digests"
CONSUMER_ASKER_CHAT_MODES = "asker-chat-modes"
CONSUMER_CHAT_MODE_REGISTRAR = "chatmode-registrar"
CONSUMER_GATEWAY_CHAT_MODES = "gateway-chatmodes"
CHAT_MODES_ANNOUNCEMENT = "chat-modes"
"""The key in `voice-modes` under which the chat modes' analyzer says it is there (no mode of the registry's: a
mode's name is capitals)."""


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{bucket}"


def object_stream(bucket: str) -> str:
    """The stream behind an Object Store bucket."""
    return f"OBJ_{bucket}"


def inbox_prefix(user: str) -> str:
    """Where a user's replies come: its own, so no other account may subscribe to them (`infra.ops.access`)."""
    return f"_INBOX.{user}"


def analysis_subject(mode: str) -> str:
    return f"{SUBJECT_ANALYSIS_PREFIX}{mode}"


def forget_analyses_subject(mode: str) -> str:
    """Where a mode's analyzer is asked to erase its cached analyses of a forgotten chat's notes."""
    return f"{SUBJECT_FORGET_ANALYSES_PREFIX}{mode}"


def forget_analyses_durable(mode: str) -> str:
    return f"analyzer-{mode}-forget"


def streams(replicas: int = 1) -> tuple[api.StreamConfig, ...]:
    """Every stream's settings (buckets' streams apart): what provisioning creates and services check for."""

    def stream(name: str, subject: str, age: float, **more: Any) -> api.StreamConfig:
        return api.StreamConfig(
            name=name,
            subjects=[subject],
            storage=api.StorageType.FILE,
            max_age=age,
            duplicate_window=min(age, DUPLICATE_WINDOW),
            num_replicas=replicas,
            **more,
        )

    return (
        stream(STREAM, SUBJECT_ALL, USER_DATA_TTL, retention=api.RetentionPolicy.LIMITS),
        stream(STREAM_UPDATES, SUBJECT_UPDATES, USER_DATA_TTL, retention=api.RetentionPolicy.WORK_QUEUE),
        # Counted, not read: one message per subject, the server counts subjects per user.
        stream(STREAM_INFLIGHT, "inflight.>", 3600.0, max_msgs_per_subject=1),
        stream(STREAM_RECENT, "recent.>", 60.0, max_msgs_per_subject=1),
        stream(STREAM_ADMIN, "admin.>", USER_DATA_TTL, retention=api.RetentionPolicy.LIMITS),
        stream(STREAM_PIECES, "piece.>", USER_DATA_TTL, retention=api.RetentionPolicy.WORK_QUEUE),
        # A request a keeper is not there to take (a mode's analyzer gone) expires sooner on its own (`Nats-TTL`).
        stream(STREAM_FORGET, "forget.>", USER_DATA_TTL, retention=api.RetentionPolicy.WORK_QUEUE, allow_msg_ttl=True),
        stream(STREAM_ASK, "ask.>", USER_DATA_TTL, retention=api.RetentionPolicy.WORK_QUEUE),
        stream(STREAM_ASKER, "asker.>", USER_DATA_TTL, retention=api.RetentionPolicy.WORK_QUEUE),
        stream(STREAM_CHAT_MODES, "chatmode.>", USER_DATA_TTL, retention=api.RetentionPolicy.WORK_QUEUE),
    )
