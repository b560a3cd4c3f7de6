"""Who may do what on NATS: one account per service with the least it needs, rendered into the server's config.

NATS authorizes subjects, and JetStream's API is subjects that name what they act on (`$JS.API.STREAM.INFO.VOICE`,
`$JS.API.CONSUMER.MSG.NEXT.VOICE.formatter`, `$KV.voice-joins.<key>`), so a grant on a stream, a durable or a
bucket is a handful of subjects. This table is the one place that says who touches what; `render` writes it as
the server's `authorization` block (`infra/config/nats/users.conf`, kept in step by a test), and every service's
log-in is checked against it by the server.

What a grant can and cannot narrow:
- a durable is granted by name: nobody else can pull from it, ack for it, or change its settings;
- a bucket is granted for reading, writing (keys under a prefix) or erasing (purging keys it cannot read);
- looking a stream's messages up by sequence (a consumer's backlog age, a note's place in the queue) is
  authorized per stream, not per subject: whoever looks `VOICE` up may read any of its events.
- replies come to an inbox of the user's own (`_INBOX.<user>.`): nobody reads another's answers from JetStream.

`admin` is the one unrestricted user: `voice-insight provision` creates streams and buckets with it, and the
operator's command lines (`modes`, `conformance`) use it. No service runs as admin.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.bus.names import (
    BUCKET_ANALYSIS_CACHE,
    BUCKET_ANSWERED,
    BUCKET_AUDIO,
    BUCKET_BUDGET,
    BUCKET_CHAT_MODES,
    BUCKET_CHATS,
    BUCKET_DIGESTS,
    BUCKET_INTAKE,
    BUCKET_JOINS,
    BUCKET_MODES,
    BUCKET_NOTES,
    BUCKET_PACE,
    BUCKET_PIECES,
    BUCKET_QUOTA,
    BUCKET_REGISTRY,
    BUCKET_THREADS,
    BUCKET_TRANSCRIPT_CACHE,
    BUCKET_USAGE,
    BUCKET_USERS,
    CHAT_MODES_ANNOUNCEMENT,
    CONSUMER_ADMIN_REPLIES,
    CONSUMER_ASKER,
    CONSUMER_ASKER_CHAT_MODES,
    CONSUMER_ASKER_DIGESTS,
    CONSUMER_CHAT_MODE_REGISTRAR,
    CONSUMER_FORMATTER,
    CONSUMER_FORMATTER_ANSWERS,
    CONSUMER_FORMATTER_DEADLINE,
    CONSUMER_FORMATTER_DIGESTED,
    CONSUMER_FORMATTER_DIGESTS,
    CONSUMER_FORMATTER_FORGET,
    CONSUMER_FORMATTER_QUESTIONS,
    CONSUMER_FORMATTER_WATCHDOG,
    CONSUMER_FORMATTER_WATCHDOG_QUEUED,
    CONSUMER_GATEWAY,
    CONSUMER_GATEWAY_ALERTS,
    CONSUMER_GATEWAY_CHAT_MODES,
    CONSUMER_GATEWAY_FORGET,
    CONSUMER_REGISTRAR,
    CONSUMER_TRANSCRIBER,
    CONSUMER_TRANSCRIBER_FORGET,
    CONSUMER_TRANSCRIBER_PIECES,
    CONSUMER_TRANSCRIBER_QUEUED,
    STREAM,
    STREAM_ADMIN,
    STREAM_ASK,
    STREAM_ASKER,
    STREAM_CHAT_MODES,
    STREAM_FORGET,
    STREAM_INFLIGHT,
    STREAM_PIECES,
    STREAM_RECENT,
    STREAM_UPDATES,
    SUBJECT_ALERT,
    SUBJECT_ALL,
    SUBJECT_ANSWER,
    SUBJECT_AUDIO,
    SUBJECT_AUDIO_QUEUED,
    SUBJECT_CHAT_ANALYSIS,
    SUBJECT_CHAT_MODE_CHANGE,
    SUBJECT_CHAT_MODE_CHANGED,
    SUBJECT_DIGEST,
    SUBJECT_DIGEST_POSED,
    SUBJECT_DIGEST_WRITTEN,
    SUBJECT_FAILED,
    SUBJECT_FORGET_ANALYSES_PREFIX,
    SUBJECT_FORGET_CHAT,
    SUBJECT_FORGET_INTAKE,
    SUBJECT_FORGET_TRANSCRIPTS,
    SUBJECT_MODE_CHANGE,
    SUBJECT_MODE_CHANGED,
    SUBJECT_NOTE_GET,
    SUBJECT_PIECE,
    SUBJECT_POSED,
    SUBJECT_PROGRESS,
    SUBJECT_QUESTION,
    SUBJECT_RERUN,
    SUBJECT_TRANSCRIPT,
    SUBJECT_UPDATES,
    analysis_subject,
    forget_analyses_durable,
    forget_analyses_subject,
    inbox_prefix,
    kv_stream,
    object_stream,
)
from infra.domain.chat_modes import PREFIX

ADMIN = "admin"
API = "$JS.API"


def password_variable(user: str) -> str:
    """The environment variable the server reads this user's password from (never written into a file here)."""
    return "NATS_PASSWORD_" + user.upper().replace("-", "_")


def analyzer_user(mode: str) -> str:
    """An analyzer's account is its durable's name: one mode, one account."""
    return f"analyzer-{mode}"


@dataclass(frozen=True)
class Role:
    """One account's grants, by what it does rather than by subject."""

    user: str
    publishes: tuple[str, ...] = ()
    """Event subjects it publishes (into the streams that hold them)."""
    consumes: tuple[tuple[str, str, str], ...] = ()
    """(stream, durable, filter) it takes from: create or update that durable with that filter only, pull, ack."""
    looks_up: tuple[str, ...] = ()
    """Streams whose messages it reads by sequence (backlog ages)."""
    inspects: tuple[tuple[str, str], ...] = ()
    """Other services' durables whose positions it reads (a note's place in the transcription queue)."""
    counts: tuple[str, ...] = ()
    """Streams it counts subjects in, without reading a message."""
    reads: tuple[str, ...] = ()
    """Buckets (their streams: `kv_stream(...)`, `object_stream(...)`) it reads."""
    writes: tuple[str, ...] = ()
    """Subjects of bucket entries it writes (`$KV.<bucket>.<keys>`, `$O.<bucket>.>`)."""
    erases: tuple[str, ...] = ()
    """Streams it purges entries or messages from, by key or subject; it need not read them. NATS cannot tell a
    purge by subject from a purge of everything (the filter is in the request's body), so this is for streams
    whose every entry the account could erase anyway."""
    deletes: tuple[str, ...] = ()
    """Streams it deletes single messages from, by sequence (`/forget`: a chat's events), and may not purge."""
    serves: tuple[str, ...] = ()
    """Request subjects it answers (core NATS, outside the streams): it subscribes to them."""
    answers: tuple[str, ...] = ()
    """Accounts whose requests it answers: it may publish into their inboxes, and nowhere else for them. (Not
    NATS's `allow_responses`, which would let it publish once to whatever reply subject a request names: a
    stream's purge among them.)"""

    def publish_allow(self) -> list[str]:
        allow = [f"{API}.INFO", f"{API}.STREAM.NAMES"]
        for stream in sorted({*self.looks_up, *self.counts, *self.reads, *self.erases}):
            allow.append(f"{API}.STREAM.INFO.{stream}")
        for stream in sorted({*self.looks_up, *self.reads}):
            allow += [f"{API}.DIRECT.GET.{stream}", f"{API}.DIRECT.GET.{stream}.>", f"{API}.STREAM.MSG.GET.{stream}"]
        for stream in sorted(set(self.reads)):
            # A bucket is read through short-lived ordered consumers (an object's chunks, a watch).
            allow += [f"{API}.CONSUMER.CREATE.{stream}", f"{API}.CONSUMER.CREATE.{stream}.>"]
            allow += [f"{API}.CONSUMER.DELETE.{stream}.>", f"$JS.FC.{stream}.>"]
        for stream in sorted(set(self.erases)):
            allow += [f"{API}.STREAM.PURGE.{stream}", f"{API}.STREAM.MSG.DELETE.{stream}"]
        for stream in sorted(set(self.deletes) - set(self.erases)):
            allow.append(f"{API}.STREAM.MSG.DELETE.{stream}")
        for stream, durable, subject in self.consumes:
            allow += [
                f"{API}.CONSUMER.INFO.{stream}.{durable}",
                # The filter is part of the create subject (NATS >= 2.10), so the grant pins it: the durable
                # cannot be re-created on a wider filter (`voice.>`) to read what is not its account's.
                f"{API}.CONSUMER.CREATE.{stream}.{durable}.{subject}",
                f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
                f"$JS.ACK.{stream}.{durable}.>",
            ]
        allow += [f"{API}.CONSUMER.INFO.{stream}.{durable}" for stream, durable in self.inspects]
        allow += [f"{inbox_prefix(user)}.>" for user in self.answers]
        return _unique([*allow, *self.publishes, *self.writes])

    def subscribe_allow(self) -> list[str]:
        return [f"{inbox_prefix(self.user)}.>", *self.serves]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def gateway() -> Role:
    """Takes updates and notes in; stores the audio; answers buttons and settings. It faces the internet in webhook
    mode, so it reads no stored note (a button asks the formatter for one by its exact key: `notes.get`), and
    erases only what it keeps itself: `/forget` asks the formatter, which keeps the notes (`gateway/forget.py`).
    It publishes a transcript for a button that runs another mode on a note, nothing it could not do by
    publishing the note's audio; and it may purge the audio store, nothing it could not do by writing every
    object's metadata as deleted, which storing audio needs (an object's metadata subject is its name's)."""
    return Role(
        user="gateway",
        publishes=(SUBJECT_UPDATES, SUBJECT_AUDIO, SUBJECT_AUDIO_QUEUED, SUBJECT_RERUN, SUBJECT_TRANSCRIPT)
        + (SUBJECT_MODE_CHANGE, SUBJECT_FORGET_CHAT, SUBJECT_NOTE_GET, SUBJECT_QUESTION, SUBJECT_DIGEST)
        + (SUBJECT_CHAT_MODE_CHANGE, "inflight.>", "recent.>"),
        consumes=(
            (STREAM_UPDATES, CONSUMER_GATEWAY, SUBJECT_UPDATES),
            (STREAM_ADMIN, CONSUMER_ADMIN_REPLIES, SUBJECT_MODE_CHANGED),
            (STREAM_CHAT_MODES, CONSUMER_GATEWAY_CHAT_MODES, SUBJECT_CHAT_MODE_CHANGED),
            (STREAM_ADMIN, CONSUMER_GATEWAY_ALERTS, SUBJECT_ALERT),
            (STREAM_FORGET, CONSUMER_GATEWAY_FORGET, SUBJECT_FORGET_INTAKE),
        ),
        looks_up=(STREAM_UPDATES, STREAM_ADMIN, STREAM_FORGET, STREAM_CHAT_MODES),
        counts=(STREAM_INFLIGHT, STREAM_RECENT),
        reads=tuple(
            kv_stream(b)
            for b in (BUCKET_INTAKE, BUCKET_ANSWERED, BUCKET_QUOTA, BUCKET_USERS, BUCKET_CHATS, BUCKET_DIGESTS)
            + (BUCKET_MODES, BUCKET_REGISTRY, BUCKET_PACE, BUCKET_USAGE)  # usage: the admins' /stats
            + (BUCKET_CHAT_MODES,)  # a chat's own modes: what its notes wait for, its /chatmodes
        )
        + (object_stream(BUCKET_AUDIO),),  # storing an object reads its meta first
        writes=tuple(
            f"$KV.{b}.>"
            for b in (BUCKET_INTAKE, BUCKET_ANSWERED, BUCKET_QUOTA, BUCKET_USERS, BUCKET_CHATS, BUCKET_PACE)
            + (BUCKET_DIGESTS,)
        )
        + (f"$O.{BUCKET_AUDIO}.>",),
        erases=(
            STREAM_INFLIGHT,
            STREAM_RECENT,
            object_stream(BUCKET_AUDIO),  # a note stored again (a retried intake) replaces its chunks
            *(kv_stream(b) for b in (BUCKET_INTAKE, BUCKET_USERS, BUCKET_QUOTA, BUCKET_CHATS, BUCKET_DIGESTS)),
        ),
    )


def transcriber() -> Role:
    """Audio in, text out; long recordings in pieces between transcribers. Reads no answer, join or chat."""
    return Role(
        user="transcriber",
        publishes=(SUBJECT_TRANSCRIPT, SUBJECT_PROGRESS, SUBJECT_FAILED, SUBJECT_PIECE),
        consumes=(
            (STREAM, CONSUMER_TRANSCRIBER, SUBJECT_AUDIO),
            (STREAM, CONSUMER_TRANSCRIBER_QUEUED, SUBJECT_AUDIO_QUEUED),
            (STREAM_PIECES, CONSUMER_TRANSCRIBER_PIECES, SUBJECT_PIECE),
            (STREAM_FORGET, CONSUMER_TRANSCRIBER_FORGET, SUBJECT_FORGET_TRANSCRIPTS),
        ),
        looks_up=(STREAM, STREAM_PIECES, STREAM_FORGET),
        reads=(object_stream(BUCKET_AUDIO), kv_stream(BUCKET_TRANSCRIPT_CACHE), kv_stream(BUCKET_PIECES)),
        writes=(f"$O.{BUCKET_AUDIO}.>", f"$KV.{BUCKET_TRANSCRIPT_CACHE}.>", f"$KV.{BUCKET_PIECES}.>"),
        erases=(object_stream(BUCKET_AUDIO), kv_stream(BUCKET_PIECES), kv_stream(BUCKET_TRANSCRIPT_CACHE)),
    )


def formatter() -> Role:
    """Joins a note's events and answers: the one service that reads the joins and writes the answered notes. It
    carries out `/forget` (it keeps the notes) and asks every other keeper to erase its part."""
    return Role(
        user="formatter",
        consumes=(
            (STREAM, CONSUMER_FORMATTER, SUBJECT_ALL),
            (STREAM, CONSUMER_FORMATTER_DEADLINE, SUBJECT_TRANSCRIPT),
            (STREAM, CONSUMER_FORMATTER_WATCHDOG, SUBJECT_AUDIO),
            (STREAM, CONSUMER_FORMATTER_WATCHDOG_QUEUED, SUBJECT_AUDIO_QUEUED),
            (STREAM_FORGET, CONSUMER_FORMATTER_FORGET, SUBJECT_FORGET_CHAT),
            (STREAM_ASK, CONSUMER_FORMATTER_QUESTIONS, SUBJECT_QUESTION),
            (STREAM_ASK, CONSUMER_FORMATTER_ANSWERS, SUBJECT_ANSWER),
            (STREAM_ASK, CONSUMER_FORMATTER_DIGESTS, SUBJECT_DIGEST),
            (STREAM_ASK, CONSUMER_FORMATTER_DIGESTED, SUBJECT_DIGEST_WRITTEN),
        ),
        publishes=(SUBJECT_FORGET_TRANSCRIPTS, SUBJECT_FORGET_INTAKE, f"{SUBJECT_FORGET_ANALYSES_PREFIX}*")
        + (SUBJECT_POSED, SUBJECT_ANSWER, SUBJECT_DIGEST_POSED, SUBJECT_DIGEST_WRITTEN),
        serves=(SUBJECT_NOTE_GET,),  # a note by its exact key, for the gateway's buttons
        answers=("gateway",),
        looks_up=(STREAM, STREAM_FORGET, STREAM_ASK),
        inspects=((STREAM, CONSUMER_TRANSCRIBER), (STREAM, CONSUMER_TRANSCRIBER_QUEUED)),
        reads=tuple(
            kv_stream(b)
            for b in (BUCKET_JOINS, BUCKET_ANSWERED, BUCKET_NOTES, BUCKET_QUOTA, BUCKET_MODES, BUCKET_PACE)
            + (BUCKET_THREADS,)
        )
        + (
            kv_stream(BUCKET_REGISTRY),
            object_stream(BUCKET_AUDIO),
        ),  # enabled modes; an object's meta, before deleting it
        writes=tuple(
            f"$KV.{b}.>"
            for b in (BUCKET_JOINS, BUCKET_ANSWERED, BUCKET_NOTES, BUCKET_QUOTA, BUCKET_PACE, BUCKET_THREADS)
        )
        + (f"$O.{BUCKET_AUDIO}.M.>",),  # an answered note's audio is deleted: a marker in its meta
        # `/forget`: a chat's events one by one, and the buckets whose every key it writes anyway.
        deletes=(STREAM,),
        erases=(STREAM_INFLIGHT, object_stream(BUCKET_AUDIO))
        + tuple(kv_stream(b) for b in (BUCKET_JOINS, BUCKET_ANSWERED, BUCKET_NOTES, BUCKET_THREADS)),
    )


def external_analyzer(mode: str) -> Role:
    """An analyzer written elsewhere: its transcripts, its analyses, its heartbeat, nothing more (README,
    "Writing an analyzer elsewhere")."""
    return Role(
        user=analyzer_user(mode),
        publishes=(analysis_subject(mode),),
        consumes=((STREAM, analyzer_user(mode), SUBJECT_TRANSCRIPT),),
        reads=(kv_stream(BUCKET_MODES),),
        writes=(f"$KV.{BUCKET_MODES}.{mode}",),
    )


def analyzer(mode: str) -> Role:
    """This project's analyzer of one mode: an external one's grants, plus what it keeps of its own mode: the
    mode's definition in the registry (its own key only: a model asked for by `MODEL_<MODE>`, and its automatic
    rollback), its usage figures and its cache entries (keys under `<MODE>.`), the shared token budget, and the
    answered marks, read (it skips notes already answered). It reads every mode's definition and the cache, and
    writes no other mode's: an admin's change to any mode is the registrar's."""
    base = external_analyzer(mode)
    return Role(
        user=base.user,
        publishes=(*base.publishes, SUBJECT_ALERT),
        consumes=(*base.consumes, (STREAM_FORGET, forget_analyses_durable(mode), forget_analyses_subject(mode))),
        looks_up=(STREAM, STREAM_FORGET),
        reads=(
            *base.reads,
            *(kv_stream(b) for b in (BUCKET_REGISTRY, BUCKET_BUDGET, BUCKET_USAGE, BUCKET_ANALYSIS_CACHE)),
            kv_stream(BUCKET_ANSWERED),
        ),
        writes=(
            *base.writes,
            f"$KV.{BUCKET_REGISTRY}.{mode}",
            f"$KV.{BUCKET_USAGE}.{mode}.>",
            f"$KV.{BUCKET_ANALYSIS_CACHE}.{mode}.>",
            f"$KV.{BUCKET_BUDGET}.>",
        ),
    )


def registrar() -> Role:
    """The mode desk on the bus: takes the admins' mode changes and the chats' own modes, validates each (a canary
    call to the model) and applies it; the one account that writes any mode's definition, and any chat's."""
    return Role(
        user="registrar",
        publishes=(SUBJECT_MODE_CHANGED, SUBJECT_CHAT_MODE_CHANGED),
        consumes=(
            (STREAM_ADMIN, CONSUMER_REGISTRAR, SUBJECT_MODE_CHANGE),
            (STREAM_CHAT_MODES, CONSUMER_CHAT_MODE_REGISTRAR, SUBJECT_CHAT_MODE_CHANGE),
        ),
        looks_up=(STREAM_ADMIN, STREAM_CHAT_MODES),
        # The answered marks: a chat's /forget mark (a mode it asked for before is not kept); the token budget:
        # a chat's mode is tried on it.
        reads=tuple(kv_stream(b) for b in (BUCKET_REGISTRY, BUCKET_CHAT_MODES, BUCKET_ANSWERED, BUCKET_BUDGET)),
        writes=(f"$KV.{BUCKET_REGISTRY}.>", f"$KV.{BUCKET_CHAT_MODES}.>", f"$KV.{BUCKET_BUDGET}.>"),
        erases=(kv_stream(BUCKET_CHAT_MODES),),  # a chat's /forget
    )


def asker() -> Role:
    """Answers questions about a recording and writes chats' digests, posed with the notes' transcripts by the
    formatter (which keeps the notes: the asker, like an analyzer, reads none), and runs chats' own modes on the
    transcripts, as an analyzer does: their definitions it reads, their analyses (one subject for all), their
    usage figures (keys under `chat.`) and their announcement it writes. It reads the answered marks (a question
    answered already), the modes' registry (the DEFAULT mode's model) and the shared token budget, which it
    spends from."""
    return Role(
        user="asker",
        publishes=(SUBJECT_ANSWER, SUBJECT_DIGEST_WRITTEN, SUBJECT_CHAT_ANALYSIS),
        consumes=(
            (STREAM_ASKER, CONSUMER_ASKER, SUBJECT_POSED),
            (STREAM_ASKER, CONSUMER_ASKER_DIGESTS, SUBJECT_DIGEST_POSED),
            (STREAM, CONSUMER_ASKER_CHAT_MODES, SUBJECT_TRANSCRIPT),
        ),
        looks_up=(STREAM_ASKER, STREAM),  # backlog ages: what waits for its durables
        reads=tuple(
            kv_stream(b)
            for b in (BUCKET_ANSWERED, BUCKET_REGISTRY, BUCKET_BUDGET, BUCKET_CHAT_MODES, BUCKET_MODES, BUCKET_USAGE)
        ),
        writes=(
            f"$KV.{BUCKET_BUDGET}.>",
            f"$KV.{BUCKET_USAGE}.{PREFIX}>",
            f"$KV.{BUCKET_MODES}.{CHAT_MODES_ANNOUNCEMENT}",
        ),
    )


@dataclass(frozen=True)
class Accounts:
    """Every account of one deployment: the services, an analyzer per mode, analyzers written elsewhere."""

    modes: tuple[str, ...] = ("DEFAULT", "TONE")
    external: tuple[str, ...] = ()

    @property
    def roles(self) -> list[Role]:
        roles = [gateway(), transcriber(), formatter(), registrar(), asker(), *(analyzer(m) for m in self.modes)]
        return roles + [external_analyzer(m) for m in self.external if m not in self.modes]

    @property
    def users(self) -> list[str]:
        return [ADMIN, *(role.user for role in self.roles)]


def render(accounts: Accounts, passwords: Mapping[str, str] | None = None) -> str:
    """The server's `authorization` block: every user, its grants, and its password: from the server's
    environment (`NATS_PASSWORD_<USER>`, as compose and a cluster run it), or written in (`passwords`: a config
    file of the launcher's own, readable by its owner only)."""

    def password(user: str) -> str:
        return json.dumps(passwords[user]) if passwords is not None else f"${password_variable(user)}"

    lines = [
        "# Generated from infra/ops/access.py by `voice-insight nats-users` (edit that, not this file): one account",
        "# per service, each with the subjects it needs and nothing else. Passwords come from the server's",
        "# environment (NATS_PASSWORD_<USER>); compose reads them from secrets (compose.yaml).",
        "authorization {",
        "  users: [",
        f"    {{user: {ADMIN}, password: {password(ADMIN)}}}  # provisioning and the operator's tools",
    ]
    for role in accounts.roles:
        lines.append(f"    {{user: {json.dumps(role.user)}, password: {password(role.user)}, permissions: {{")
        lines.append(f"      publish: {{allow: {_list(role.publish_allow())}}}")
        lines.append(f"      subscribe: {{allow: {_list(role.subscribe_allow())}}}")
        lines.append("    }}")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def _list(subjects: list[str]) -> str:
    """One per line, quoted: a `$` that starts an unquoted value is a variable reference in NATS config."""
    return "[\n" + "".join(f"        {json.dumps(s)}\n" for s in subjects) + "      ]"


def table(accounts: Accounts) -> str:
    """The accounts as README shows them (`voice-insight nats-users --table`; a test keeps README in step)."""

    def bucket(name: str) -> str:
        return name.removeprefix("KV_").removeprefix("OBJ_")

    def written(subject: str) -> str:
        head, name, rest = subject.split(".", 2)
        key = "" if rest in (">", "M.>") else f" (key `{rest}`)"
        return f"`{name}`{' (delete marks)' if rest == 'M.>' else key}"

    rows = [
        "| account | takes from (durable) | publishes | reads | writes | erases, unread |",
        "|---|---|---|---|---|---|",
        f"| `{ADMIN}` | everything: provisioning and the operator's commands; no service runs as it | | | | |",
    ]
    for role in accounts.roles:
        cells = [
            ", ".join(f"`{durable}` ({stream}: `{subject}`)" for stream, durable, subject in role.consumes),
            ", ".join(f"`{subject}`" for subject in role.publishes),
            ", ".join(
                [f"`{bucket(name)}`" for name in (*role.reads, *role.looks_up)]
                + [f"requests on `{subject}` (answers)" for subject in role.serves]
            ),
            ", ".join(written(subject) for subject in role.writes),
            ", ".join(
                [f"`{bucket(name)}`" for name in role.erases if name not in role.reads]
                + [f"`{name}` (messages by sequence)" for name in role.deletes]
            ),
        ]
        rows.append(f"| `{role.user}` | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


class Logins:
    """A folder of passwords, one file per user (`NATS_CREDENTIALS_DIR`): what `voice-insight up` gives each
    child (`NATS_USER`, `NATS_PASSWORD_FILE`), and for its own nats-server, what it writes them from."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def file(self, user: str) -> Path:
        return self.folder / user

    def ensure(self, users: Iterable[str]) -> None:
        """A random password for every user that has none yet (kept: a restarted server takes the same ones)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for user in users:
            if not self.file(user).exists():
                self.file(user).touch(mode=0o600)
                self.file(user).write_text(secrets.token_urlsafe(24) + "\n")

    def password(self, user: str) -> str:
        return self.file(user).read_text().strip()

    def passwords(self, users: Iterable[str]) -> dict[str, str]:
        return {user: self.password(user) for user in users}

    def env(self, user: str) -> dict[str, str]:
        """How a child logs in as `user`."""
        return {"NATS_USER": user, "NATS_PASSWORD_FILE": str(self.file(user))}
