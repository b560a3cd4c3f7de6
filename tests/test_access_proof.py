"""The access proof, generated: every account against every operation the system has, on a real nats-server.

The operations are enumerated from the names (`infra/bus/names.py`) and the accounts (`infra/ops/access.py`), not
picked by hand: publishing every event subject, every JetStream API call on every stream and every declared
durable (with its own filter and a wider one), writing a key of every bucket (each mode's keys among them),
the object store's chunks and metadata, subscribing to the events and to other accounts' inboxes. Each account
tries all of them; the server's log says which it refused. Two things are asserted:

1. **Enforcement is the table**: exactly the operations the account's grants match succeed, no more, no fewer
   (a grant NATS reads otherwise than we do, or a subject the table forgot, fails here).
2. **The table is least privilege**: rules about who may do what, stated apart from the table, hold for every
   account and every operation (issue 22): only a mode's own analyzer writes its analyses, cache entries and
   usage; only the registrar and the mode's analyzer write its definition; no durable is created on another
   filter; nobody creates, changes or deletes a stream or a durable; nobody purges the event streams; nobody
   listens to events as they pass or to another account's replies.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import nats
import pytest
import pytest_asyncio

from infra.bus import names
from infra.bus.names import (
    BUCKET_ANALYSIS_CACHE,
    BUCKET_AUDIO,
    BUCKET_REGISTRY,
    BUCKET_USAGE,
    KV_BUCKETS,
    STREAM,
    STREAM_ADMIN,
    STREAM_PIECES,
    STREAM_UPDATES,
    inbox_prefix,
    kv_stream,
    object_stream,
)
from infra.ops.access import ADMIN, Accounts, Role, analyzer_user, render
from tests.support import NatsServer, provisioned_server

ACCOUNTS = Accounts(modes=("DEFAULT", "TONE"), external=("WORDS",))
MODES = ("DEFAULT", "TONE", "WORDS")
EVENT_STREAMS = (STREAM, STREAM_ADMIN, STREAM_UPDATES, STREAM_PIECES, names.STREAM_ASK, names.STREAM_ASKER)
"""Streams of events and requests: their messages are the system's work, and nobody may purge them whole."""


@dataclass(frozen=True)
class Op:
    kind: str  # "pub" or "sub"
    subject: str


def event_subjects() -> list[str]:
    found = [value for name, value in vars(names).items() if name.startswith("SUBJECT_") and isinstance(value, str)]
    found += [names.analysis_subject(mode) for mode in MODES]
    found += ["inflight.some-user.some-note", "recent.some-user.some-note", "voice.unknown"]
    found = [s + "x" if s.endswith(".") else s for s in found]  # a prefix (`voice.analysis.`): a mode of its own
    return sorted({s.replace(">", "x").replace("*", "x") for s in found})


def streams() -> list[str]:
    declared = [value for name, value in vars(names).items() if name.startswith("STREAM") and isinstance(value, str)]
    return sorted({*declared, *(kv_stream(bucket) for bucket, _, _ in KV_BUCKETS), object_stream(BUCKET_AUDIO)})


def durables() -> list[tuple[str, str, str]]:
    return sorted({entry for role in ACCOUNTS.roles for entry in role.consumes})


def operations() -> list[Op]:
    api = "$JS.API"
    ops = [Op("pub", subject) for subject in event_subjects()]
    ops += [Op("pub", f"{api}.INFO"), Op("pub", f"{api}.STREAM.NAMES"), Op("pub", f"{api}.STREAM.LIST")]
    for stream in streams():
        for call in ("INFO", "CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE", "MSG.GET", "NAMES"):
            ops.append(Op("pub", f"{api}.STREAM.{call}.{stream}"))
        ops += [Op("pub", f"{api}.DIRECT.GET.{stream}"), Op("pub", f"{api}.DIRECT.GET.{stream}.some.subject")]
        ops += [Op("pub", f"{api}.CONSUMER.CREATE.{stream}"), Op("pub", f"{api}.CONSUMER.CREATE.{stream}.eph")]
        ops.append(Op("pub", f"{api}.CONSUMER.LIST.{stream}"))
    for stream, durable, subject in durables():
        for call in ("INFO", "MSG.NEXT", "DELETE", "DURABLE.CREATE"):
            ops.append(Op("pub", f"{api}.CONSUMER.{call}.{stream}.{durable}"))
        ops += [
            Op("pub", f"{api}.CONSUMER.CREATE.{stream}.{durable}"),
            Op("pub", f"{api}.CONSUMER.CREATE.{stream}.{durable}.{subject}"),
            Op("pub", f"{api}.CONSUMER.CREATE.{stream}.{durable}.voice.>"),
            Op("pub", f"$JS.ACK.{stream}.{durable}.1.1.1.1.0"),
        ]
    for bucket, _, _ in KV_BUCKETS:
        keys = ["some-key", "some.deep.key", *MODES, *(f"{mode}.some.key" for mode in MODES)]
        ops += [Op("pub", f"$KV.{bucket}.{key}") for key in keys]
        ops.append(Op("pub", f"$JS.API.DIRECT.GET.{kv_stream(bucket)}.$KV.{bucket}.some-key"))  # a read by key
        # ... and one that reads by a wildcard: the server answers it with any key's value.
        ops.append(Op("pub", f"$JS.API.DIRECT.GET.{kv_stream(bucket)}.$KV.{bucket}.>"))
        # A watcher (what nats.py's `watch` and `keys` create): a named consumer over every key.
        ops.append(Op("pub", f"$JS.API.CONSUMER.CREATE.{kv_stream(bucket)}.watcher.$KV.{bucket}.>"))
        ops.append(Op("sub", f"$KV.{bucket}.>"))
    ops += [Op("pub", f"$O.{BUCKET_AUDIO}.C.some-id"), Op("pub", f"$O.{BUCKET_AUDIO}.M.some-name")]
    ops += [Op("sub", "voice.>"), Op("sub", ">"), Op("sub", "$JS.API.>")]
    ops += [Op("sub", subject) for subject in event_subjects()]
    ops += [Op("sub", f"{inbox_prefix(user)}.proof") for user in ACCOUNTS.users]
    ops += [Op("pub", f"{inbox_prefix(user)}.proof") for user in ACCOUNTS.users]  # an answer, into an inbox
    return ops


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` one or more at the end."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def granted(role: Role, op: Op) -> bool:
    allow = role.publish_allow() if op.kind == "pub" else role.subscribe_allow()
    return any(matches(pattern, op.subject) for pattern in allow)


# -- least privilege, stated apart from the table -------------------------------------------------------------


def mode_of_key(op: Op, bucket: str) -> str | None:
    head = f"$KV.{bucket}."
    if op.kind != "pub" or not op.subject.startswith(head):
        return None
    return op.subject.removeprefix(head).split(".")[0]


def violations_of_policy(user: str, op: Op, allowed: bool) -> list[str]:
    """Why `user` must not do `op`, if it did (empty: nothing against it)."""
    if not allowed or user == ADMIN:
        return []
    s = op.subject
    why = []
    serves_notes = user == "formatter" and s == names.SUBJECT_NOTE_GET  # the notes' keeper answers for them
    if op.kind == "sub" and not s.startswith(f"{inbox_prefix(user)}.") and not serves_notes:
        why.append("listens to what is not its own inbox")
    for mode in MODES:
        own = user == analyzer_user(mode)
        if s == names.analysis_subject(mode) and not own:
            why.append(f"publishes {mode}'s analyses")
        if mode_of_key(op, BUCKET_ANALYSIS_CACHE) == mode and not own:
            why.append(f"plants {mode}'s cache entries")
        if mode_of_key(op, BUCKET_USAGE) == mode and not own:
            why.append(f"counts {mode}'s usage")
        if mode_of_key(op, BUCKET_REGISTRY) == mode and not own and user != "registrar":
            why.append(f"rewrites {mode}'s definition")
    if mode_of_key(op, BUCKET_ANALYSIS_CACHE) not in (None, *MODES):
        why.append("writes a cache entry of no mode")
    if mode_of_key(op, BUCKET_REGISTRY) not in (None, *MODES) and user != "registrar":
        why.append("writes a definition not its own")
    if re.fullmatch(r"\$JS\.API\.STREAM\.(CREATE|UPDATE|DELETE)\..*", s):
        why.append("changes the topology")
    if re.fullmatch(r"\$JS\.API\.CONSUMER\.(DURABLE\.CREATE|DELETE)\..*", s):
        why.append("creates or deletes a durable outside its filter")
    if any(s == f"$JS.API.CONSUMER.CREATE.{stream}.{durable}" for stream, durable, _ in durables()):
        why.append("creates a durable with no filter in the request's subject")
    head, _, rest = s.partition("$JS.API.CONSUMER.CREATE.")
    if not head and rest.count(".") == 1 and not rest.startswith(("KV_", "OBJ_")):
        why.append("creates a consumer of any name and filter on an event stream")
    if op.kind == "pub" and s.startswith("_INBOX.") and not s.startswith(f"{inbox_prefix(user)}."):
        if not (user == "formatter" and s.startswith(f"{inbox_prefix('gateway')}.")):  # the notes' answers
            why.append("publishes into another account's inbox")
    if s.endswith(".voice.>") and s.startswith("$JS.API.CONSUMER.CREATE.") and ".formatter.voice.>" not in s:
        why.append("binds a durable to every event")
    if any(s == f"$JS.API.STREAM.PURGE.{stream}" for stream in EVENT_STREAMS):
        why.append("purges an event stream whole")
    for bucket, keepers in CONTENT_KEEPERS.items():
        if user in keepers:
            continue
        if s.startswith(f"$JS.API.DIRECT.GET.{bucket}."):
            why.append(f"reads {bucket} by subject, wildcards included, which it does not keep")
        lists = [f"$JS.API.{call}.{bucket}" for call in ("STREAM.INFO", "STREAM.MSG.GET", "DIRECT.GET")]
        consumer = f"$JS.API.CONSUMER.CREATE.{bucket}"  # a consumer over it: ephemeral, ordered, a watcher
        if s in lists or s == consumer or s.startswith(f"{consumer}."):
            why.append(f"lists or scans {bucket}, what a user said, which it does not keep")
    return why


ANALYZERS = frozenset(analyzer_user(mode) for mode in ACCOUNTS.modes)
"""This project's analyzers, each of which reads the analysis cache; not one written elsewhere."""
CONTENT_KEEPERS = {
    kv_stream(names.BUCKET_ANALYSIS_CACHE): ANALYZERS,
    kv_stream(names.BUCKET_NOTES): {"formatter"},
    kv_stream(names.BUCKET_THREADS): {"formatter"},  # questions asked about notes, and their answers
    kv_stream(names.BUCKET_JOINS): {"formatter"},
    kv_stream(names.BUCKET_TRANSCRIPT_CACHE): {"transcriber"},
    kv_stream(names.BUCKET_PIECES): {"transcriber"},
}
"""Buckets of what users said (transcripts, analyses of them), and who keeps each: nobody else may read one by
subject, list or scan it. The gateway reads no note: it asks the formatter for one by its exact key. (The audio
store is not among them: the gateway, which stores every note's audio as it arrives, reads its metadata.)"""


def sample_writes(stream: str) -> list[Op]:
    """What writing every entry of `stream` takes, as the enumeration samples it."""
    ops = operations()
    if stream.startswith("KV_"):
        return [op for op in ops if op.kind == "pub" and op.subject.startswith(f"$KV.{stream.removeprefix('KV_')}.")]
    if stream.startswith("OBJ_"):
        return [Op("pub", f"$O.{stream.removeprefix('OBJ_')}.M.some-name")]  # marking any object deleted
    return []


COUNTERS = {names.STREAM_INFLIGHT, names.STREAM_RECENT}
"""Empty messages counted per hashed user (notes in flight, notes a minute): the formatter ends a note's entry by
its subject. Purged whole, they would let users past their fair share for an hour at most; nothing is read or
lost, so their purge is not held to the rule below."""


def purges_what_it_does_not_write(allowed: set[Op]) -> list[str]:
    """NATS cannot tell a purge by key from a purge of everything: an account may purge a stream only if it may
    write every entry of it anyway, so a purge is nothing it could not do by other means."""
    found = []
    for op in allowed:
        if op.kind == "pub" and op.subject.startswith("$JS.API.STREAM.PURGE."):
            stream = op.subject.removeprefix("$JS.API.STREAM.PURGE.")
            if stream in COUNTERS:
                continue
            needed = sample_writes(stream)
            if not needed or not set(needed) <= allowed:
                found.append(f"purges {stream}, whose entries it may not all write")
    return found


# -- the run ----------------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def proving(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    server = await provisioned_server(tmp_path_factory.mktemp("proof"), ACCOUNTS)
    yield server
    server.stop()


REFUSAL = re.compile(
    r'"\$G/user:(?P<user>[^"]+)" - (?P<kind>Publish|Subscription) Violation - Subject "(?P<subject>[^"]+)"'
)


async def observed_refusals(server: NatsServer, user: str, ops: list[Op]) -> set[Op]:
    """Try every operation as `user`; what the server's log says it refused."""
    seen = len(server.violations())
    nc = await nats.connect(
        server.url, user=user, password=server.logins.password(user), name=f"proof-{user}", error_cb=_quiet
    )
    try:
        for op in ops:
            if op.kind == "pub":
                # A body that asks for nothing harmful where it is allowed (a purge of a subject with no messages).
                await nc.publish(op.subject, b'{"filter":"proof.nothing","seq":0}')
            else:
                await (await nc.subscribe(op.subject)).unsubscribe()
            await nc.flush(timeout=5)  # one at a time: a burst of refusals gets a client cut off as slow
            assert nc.is_connected, f"{user} was cut off at {op}"
    finally:
        await nc.close()
    await asyncio.sleep(0.5)  # the log is written after the client is told
    refused = set()
    for line in server.violations()[seen:]:
        if (m := REFUSAL.search(line)) and m["user"] == user:
            refused.add(Op("pub" if m["kind"] == "Publish" else "sub", m["subject"]))
    return refused


async def _quiet(exc: Exception) -> None:
    """A refusal comes back to the client as an error too; the server's log is what is read here."""


def accounts() -> Iterator[Role]:
    yield from ACCOUNTS.roles


@pytest.mark.parametrize("role", list(accounts()), ids=lambda role: role.user)
async def test_every_account_against_every_operation(proving: NatsServer, role: Role) -> None:
    ops = operations()
    refused = await observed_refusals(proving, role.user, ops)
    assert refused <= set(ops), sorted(op.subject for op in refused - set(ops))
    enforced_otherwise = [
        f"{op.kind} {op.subject}: granted {granted(role, op)}, refused {op in refused}"
        for op in ops
        if granted(role, op) == (op in refused)
    ]
    assert not enforced_otherwise, "\n".join(enforced_otherwise)
    against_policy = [
        f"{op.kind} {op.subject}: {'; '.join(why)}"
        for op in ops
        if (why := violations_of_policy(role.user, op, op not in refused))
    ]
    assert not against_policy, "\n".join(against_policy)
    assert not purges_what_it_does_not_write({op for op in ops if op not in refused}), role.user


def test_no_account_may_answer_to_whatever_reply_subject_a_request_names() -> None:
    """NATS's `allow_responses` lets an account publish once to any reply subject of a request it took: a
    request naming a stream's purge as its reply would purge it in the answering account's name, outside every
    grant this proof walks. Answers go to an inbox granted by name instead (`Role.answers`)."""
    assert "allow_responses" not in render(ACCOUNTS)


def test_the_proof_covers_every_stream_durable_bucket_and_subject() -> None:
    """The enumeration is not a sample: every name the system declares is in it."""
    subjects = {op.subject for op in operations()}
    for stream in streams():
        assert f"$JS.API.STREAM.PURGE.{stream}" in subjects
    for stream, durable, subject in durables():
        assert f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.{subject}" in subjects
    for bucket, _, _ in KV_BUCKETS:
        assert f"$KV.{bucket}.DEFAULT.some.key" in subjects
    assert {names.analysis_subject(mode) for mode in MODES} <= subjects
    assert len(operations()) > 500
