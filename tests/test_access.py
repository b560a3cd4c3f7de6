"""An account per service with the least it needs (infra/ops/access.py), enforced by a real nats-server.

The session's stack runs as these accounts throughout the suite, and the session's server is checked for
refusals at its end (conftest): what the services need is granted. Here, on a server of this module's own, what
they do not need is refused: the server's log names the account and the subject, so a refusal is told apart from
a slow answer."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import msgspec
import nats.errors
import nats.js.errors
import pytest
import pytest_asyncio
from nats.js import api
from prometheus_client import REGISTRY

from formatter.note_desk import serve_notes
from infra.bus import Bus, encode
from infra.bus.names import (
    BUCKET_ANALYSIS_CACHE,
    BUCKET_ANSWERED,
    BUCKET_AUDIO,
    BUCKET_CHATS,
    BUCKET_JOINS,
    BUCKET_MODES,
    BUCKET_NOTES,
    BUCKET_PIECES,
    BUCKET_REGISTRY,
    BUCKET_TRANSCRIPT_CACHE,
    BUCKET_USAGE,
    CONSUMER_FORMATTER,
    CONSUMER_REGISTRAR,
    STREAM,
    STREAM_ADMIN,
    SUBJECT_NOTE_GET,
    SUBJECT_TRANSCRIPT,
    analysis_subject,
)
from infra.domain import usage
from infra.domain.contracts import ModeInfo, NoteAsked, Origin
from infra.domain.notes import NoteStore, StoredNote, ask_for_note, button_proof
from infra.ops.access import ADMIN, Accounts, analyzer_user, password_variable, render, table
from infra.ops.launcher import LocalAccounts, nats_server_binary
from tests.support import REPO, NatsServer, a_transcript, eventually, free_port, provisioned_server

SHIPPED = REPO / "infra" / "config" / "nats" / "users.conf"


@pytest_asyncio.fixture(scope="module")
async def guarded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    server = await provisioned_server(tmp_path_factory.mktemp("guarded"), Accounts(external=("WORDS",)))
    yield server
    server.stop()


async def login(server: NatsServer, user: str) -> Bus:
    password = server.logins.password(user)
    return await Bus.connect([server.url], name=user, wait=5, user=user, password=password)


async def refused(server: NatsServer, user: str, subject: str, attempt: Awaitable[object]) -> None:
    """`attempt` gets nothing (no answer comes to a refused request), the server says it refused `user`
    exactly that subject, and the service counts the refusal (what the NATSRefused alert watches)."""
    seen, counted = len(server.violations()), refusals()
    with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError, TimeoutError)):
        await attempt
    wanted = (f'user:{user}"', f'Subject "{subject}"')
    await eventually(lambda: any(all(w in line for w in wanted) for line in server.violations()[seen:]), 5)
    await eventually(lambda: refusals() > counted, 5)


def refusals() -> float:
    return REGISTRY.get_sample_value("voice_insight_nats_refused_total") or 0.0


def test_the_shipped_accounts_are_the_code_s_and_a_real_server_accepts_them(tmp_path: Path) -> None:
    """infra/config/nats/users.conf is `voice-insight nats-users` verbatim, so the table and the deployed file
    cannot drift; nats-server checks compose's config with it (`-t`), passwords in its environment as there."""
    assert SHIPPED.read_text() == render(Accounts()), "run: voice-insight nats-users > infra/config/nats/users.conf"
    printed = subprocess.run(
        [sys.executable, "-m", "voice_insight", "nats-users"], capture_output=True, text=True, check=True
    ).stdout
    assert printed == SHIPPED.read_text()
    # The compose server's own config, its store moved here.
    config = tmp_path / "nats.conf"
    config.write_text(SHIPPED.with_name("nats.conf").read_text().replace("/data/jetstream", str(tmp_path / "js")))
    (tmp_path / "users.conf").write_text(SHIPPED.read_text())
    env = {**os.environ, **{password_variable(u): f"pw-{u}" for u in Accounts().users}}
    checked = subprocess.run([nats_server_binary(), "-t", "-c", str(config)], env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    del env[password_variable("transcriber")]  # a password the operator forgot: the server does not start
    checked = subprocess.run([nats_server_binary(), "-t", "-c", str(config)], env=env, capture_output=True, text=True)
    assert checked.returncode != 0 and "NATS_PASSWORD_TRANSCRIBER" in checked.stderr


async def test_the_transcriber_reads_audio_and_writes_text_and_nothing_the_formatter_keeps(
    guarded: NatsServer,
) -> None:
    me = await login(guarded, "transcriber")
    try:
        # What it is for: it publishes transcripts and reads the audio store.
        await me.publish(SUBJECT_TRANSCRIPT, a_transcript("acl-1"), msg_id="acl-1.transcript")
        assert (await me.audio_store()) is not None
        # What it is not: the joins, the answered notes and the chats' settings are refused, not merely empty.
        for bucket in (BUCKET_JOINS, BUCKET_NOTES, BUCKET_CHATS):
            subject = f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.some-key"
            await refused(guarded, "transcriber", subject, me.nc.request(subject, b"", timeout=1))
        subject = f"$JS.API.STREAM.INFO.KV_{BUCKET_JOINS}"
        await refused(guarded, "transcriber", subject, me.kv(BUCKET_JOINS))
        # Nor does it speak for an analyzer, or take the formatter's messages from its durable.
        analysis = analysis_subject("DEFAULT")
        await refused(guarded, "transcriber", analysis, me.js.publish(analysis, b"{}", timeout=1))
        steal = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{CONSUMER_FORMATTER}"
        await refused(guarded, "transcriber", steal, me.nc.request(steal, b'{"batch":1}', timeout=1))
        change = f"$JS.API.CONSUMER.CREATE.{STREAM}.{CONSUMER_FORMATTER}.voice.>"
        await refused(guarded, "transcriber", change, me.nc.request(change, b"{}", timeout=1))
        # Nor listens in: not to the events as they pass, not to another account's replies.
        for eavesdrop in ("voice.>", "_INBOX.formatter.>"):
            await me.nc.subscribe(eavesdrop)
            await me.nc.flush()
            wanted = ('user:transcriber"', f'Subject "{eavesdrop}"')
            await eventually(lambda w=wanted: any(all(x in v for x in w) for v in guarded.violations()), 5)
    finally:
        await me.close(grace=1)


async def test_an_analyzer_written_elsewhere_gets_exactly_its_subjects(guarded: NatsServer) -> None:
    user = analyzer_user("WORDS")
    me = await login(guarded, user)
    try:
        await me.js.publish(analysis_subject("WORDS"), b"{}", headers={"Nats-Msg-Id": "acl-2.analysis.WORDS"})
        heartbeat = encode(ModeInfo(mode="WORDS", title="Words"))
        await (await me.kv(BUCKET_MODES)).put("WORDS", heartbeat)
        # Another mode's analyses and heartbeat are not its to write: it cannot answer for DEFAULT or hide it.
        other = analysis_subject("DEFAULT")
        await refused(guarded, user, other, me.js.publish(other, b"{}", timeout=1))
        hide = f"$KV.{BUCKET_MODES}.DEFAULT"
        await refused(guarded, user, hide, me.js.publish(hide, b"", timeout=1))
        # It reads no bucket but the live modes: not the registry, not the joins, not the audio.
        for stream in (f"KV_{BUCKET_REGISTRY}", f"KV_{BUCKET_JOINS}", f"OBJ_{BUCKET_AUDIO}"):
            subject = f"$JS.API.STREAM.INFO.{stream}"
            await refused(guarded, user, subject, me.nc.request(subject, b"", timeout=1))
        # Issue 22 (1): its durable is its own, with the filter it needs: re-created on `voice.>` it would read
        # every event (audio references, every mode's analyses, failures). The create subject names the filter
        # (NATS >= 2.10), and only the transcript's is granted.
        wide = api.ConsumerConfig(
            name=user, durable_name=user, filter_subject="voice.>", ack_policy=api.AckPolicy.EXPLICIT
        )
        rebind = f"$JS.API.CONSUMER.CREATE.{STREAM}.{user}.voice.>"
        await refused(guarded, user, rebind, me.js.add_consumer(STREAM, wide, timeout=1))
        for legacy in (f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{user}", f"$JS.API.CONSUMER.CREATE.{STREAM}.{user}"):
            await refused(guarded, user, legacy, me.nc.request(legacy, b"{}", timeout=1))
        own = api.ConsumerConfig(
            name=user, durable_name=user, filter_subject=SUBJECT_TRANSCRIPT, ack_policy=api.AckPolicy.EXPLICIT
        )
        assert (await me.js.add_consumer(STREAM, own, timeout=2)).config.filter_subject == SUBJECT_TRANSCRIPT
        # And changes nothing about the topology.
        create = f"$JS.API.STREAM.CREATE.{STREAM}"
        await refused(guarded, user, create, me.nc.request(create, msgspec.json.encode({"name": STREAM}), timeout=1))
    finally:
        await me.close(grace=1)


async def test_a_compromised_analyzer_writes_its_own_mode_only_and_the_registrar_any(guarded: NatsServer) -> None:
    """Issue 22 (2): analyzer-TONE can neither rewrite DEFAULT's definition nor plant an entry under a cache key
    DEFAULT's analyzer would read and publish as its own, nor count DEFAULT's usage; what is its own it writes.
    An admin's change to any mode is the registrar's, the one account that writes every definition."""
    user = analyzer_user("TONE")
    me = await login(guarded, user)
    registrar = await login(guarded, "registrar")
    try:
        registry = await me.kv(BUCKET_REGISTRY)
        cache = await me.kv(BUCKET_ANALYSIS_CACHE)
        for bucket, key in (
            (BUCKET_REGISTRY, "DEFAULT"),
            (BUCKET_ANALYSIS_CACHE, "DEFAULT.digest.variant"),
            (BUCKET_ANALYSIS_CACHE, "digest.variant"),  # the unprefixed keys of before: no mode's at all
            (BUCKET_USAGE, "DEFAULT.v1.2026113000"),
        ):
            subject = f"$KV.{bucket}.{key}"
            await refused(guarded, user, subject, me.js.publish(subject, b"{}", timeout=1))
        await registry.put("TONE", b"{}")  # its own rollback
        await cache.put("TONE.digest.variant", b"{}")
        await (await me.kv(BUCKET_USAGE)).put("TONE.v1.2026113000", b"{}")
        # The registrar writes any mode's definition, and nothing of the analyses.
        await (await registrar.kv(BUCKET_REGISTRY)).put("DEFAULT", b"{}")
        subject = f"$KV.{BUCKET_ANALYSIS_CACHE}.TONE.digest.variant"
        await refused(guarded, "registrar", subject, registrar.js.publish(subject, b"{}", timeout=1))
        take = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{user}"
        await refused(guarded, "registrar", take, registrar.nc.request(take, b'{"batch":1}', timeout=1))
        # The analyzer no longer takes admins' changes: the desk's durable is the registrar's alone.
        desk = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_ADMIN}.{CONSUMER_REGISTRAR}"
        await refused(guarded, user, desk, me.nc.request(desk, b'{"batch":1}', timeout=1))
    finally:
        await me.close(grace=1)
        await registrar.close(grace=1)


async def test_a_compromised_gateway_reads_no_note_and_erases_only_what_it_keeps(guarded: NatsServer) -> None:
    """Issue 22 (3): the gateway faces the internet in webhook mode. It may not read the notes' bucket at all: a
    read grant would answer a key with a wildcard in it (a direct get of `>` or `*.<cid>`), so every chat's notes.
    A button asks the formatter for one note by its exact key, and a key that names more than one is refused. It
    cannot purge the event stream or a bucket it does not keep, nor delete an event: `/forget` is the keepers'."""
    admin = await Bus.connect([guarded.url], name="admin", **guarded.admin())
    me = await login(guarded, "gateway")
    desk = await login(guarded, "formatter")
    try:
        note = StoredNote(
            origin=Origin(chat_id=1, message_id=2, status_message_id=3, ui_language="en"),
            transcript=a_transcript("note-1", "What the chat said."),
        )
        await NoteStore(admin).put("chat-key", "note-1", note)
        for wildcard in (">", "*.note-1", "chat-key.*", "chat-key.note-1"):
            read = f"$JS.API.DIRECT.GET.KV_{BUCKET_NOTES}.$KV.{BUCKET_NOTES}.{wildcard}"
            await refused(guarded, "gateway", read, me.nc.request(read, b"", timeout=1))
        listing = f"$JS.API.STREAM.INFO.KV_{BUCKET_NOTES}"
        await refused(guarded, "gateway", listing, me.kv(BUCKET_NOTES))
        # The formatter answers for one note, named exactly; a wildcard names none.
        await serve_notes(desk)
        proof = button_proof("note-1", note.transcript.text)  # what the button under the answer carries
        assert await ask_for_note(me, "chat-key", "note-1", proof) == note
        assert await ask_for_note(me, "chat-key", "note-2", proof) is None
        # Without the proof, an ID it derived (it holds the key IDs are made with) gets nothing.
        assert await ask_for_note(me, "chat-key", "note-1", "0" * 16) is None
        # A request whose reply names a purge gets no answer, so no purge in the formatter's name.
        purge = f"$JS.API.STREAM.PURGE.KV_{BUCKET_NOTES}"
        asked = NoteAsked(chat_key="chat-key", correlation_id="note-1", proof=proof)
        await me.nc.publish(SUBJECT_NOTE_GET, encode(asked), reply=purge)
        await me.nc.flush()
        assert await ask_for_note(me, "chat-key", "note-1", proof) == note, "the notes are still there"
        for chat, cid in (("*", "note-1"), ("chat-key", ">"), ("chat-key.note-1", "x"), ("chat-key", "*")):
            assert await ask_for_note(me, chat, cid, proof) is None, (chat, cid)
        kept_elsewhere = (STREAM, *(f"KV_{b}" for b in (BUCKET_NOTES, BUCKET_JOINS, BUCKET_ANALYSIS_CACHE)))
        kept_elsewhere += (f"KV_{BUCKET_TRANSCRIPT_CACHE}", f"KV_{BUCKET_PIECES}", f"KV_{BUCKET_ANSWERED}")
        for stream in kept_elsewhere:
            purge = f"$JS.API.STREAM.PURGE.{stream}"
            await refused(guarded, "gateway", purge, me.nc.request(purge, b"{}", timeout=1))
        delete = f"$JS.API.STREAM.MSG.DELETE.{STREAM}"
        await refused(guarded, "gateway", delete, me.nc.request(delete, b'{"seq": 1}', timeout=1))
        # What it keeps itself it erases: a chat's settings on /forget. And it reads the usage for /stats.
        await (await me.kv(BUCKET_CHATS)).put("chat-key", b"{}")
        await me.erase(BUCKET_CHATS, "chat-key")
        assert isinstance(await usage.last_day(me), list)
    finally:
        for bus in (me, desk, admin):
            await bus.close(grace=1)


async def test_no_service_creates_the_topology_and_one_that_finds_none_says_what_to_run(tmp_path: Path) -> None:
    server = NatsServer(free_port(), tmp_path, accounts=Accounts())
    server.start()
    try:
        gateway = await login(server, "gateway")
        try:
            with pytest.raises(ConnectionError, match=r"run `voice-insight provision` first"):
                await gateway.await_topology(wait=1)
            await refused(server, "gateway", "$JS.API.STREAM.CREATE.VOICE", gateway.ensure_topology())
        finally:
            await gateway.close(grace=1)
        # The admin provisions, from the command line as compose's one-shot service does; then the check passes.
        admin = server.logins.env(ADMIN)
        done = subprocess.run(
            [sys.executable, "-m", "voice_insight", "provision"],
            env={"PATH": os.environ["PATH"], "NATS_URL": server.url, **admin},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "streams and buckets ready; modes seeded: DEFAULT, TONE" in done.stdout
        gateway = await login(server, "gateway")
        try:
            await gateway.await_topology(wait=5)
        finally:
            await gateway.close(grace=1)
    finally:
        server.stop()


def test_the_readme_shows_the_accounts_as_the_code_grants_them() -> None:
    assert table(Accounts()) in (REPO / "docs" / "architecture.md").read_text(), (
        "docs/architecture.md, Accounts: voice-insight nats-users --table"
    )


async def test_the_launcher_s_own_server_has_the_accounts_and_takes_a_new_mode_s_on_reload(tmp_path: Path) -> None:
    """`voice-insight up`: an account per service, one per external mode (`--external`), and a new mode's account
    once the running server reloads; passwords in files only the owner reads."""
    store = tmp_path / "nats"
    store.mkdir()
    local = LocalAccounts(store, ["DEFAULT", "TONE"], external=("WORDS",))
    port = free_port()
    server = subprocess.Popen([nats_server_binary(), "-c", str(local.config), "-a", "127.0.0.1", "-p", str(port)])
    local.reload = lambda: server.send_signal(signal.SIGHUP)
    try:
        assert oct(local.config.stat().st_mode)[-3:] == "600"
        assert all(oct(local.logins.file(u).stat().st_mode)[-3:] == "600" for u in Accounts().users)

        async def logs_in(user: str) -> bool:
            password = local.logins.password(user)
            try:
                bus = await Bus.connect([f"nats://127.0.0.1:{port}"], name=user, wait=3, user=user, password=password)
            except ConnectionError:
                return False
            await bus.close(grace=1)
            return True

        assert await logs_in("analyzer-WORDS") and await logs_in("gateway")
        local.logins.ensure(["analyzer-NEW"])
        assert not await logs_in("analyzer-NEW")  # no account yet
        await local.allow("NEW")
        assert await logs_in("analyzer-NEW")
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(
    ("account", "service"),
    [
        ("gateway", "gateway.updates:UpdateHandler"),
        ("gateway", "gateway.admin:AdminInbox"),
        ("gateway", "gateway.forget:IntakeForgetter"),
        ("transcriber", "transcriber.forget:TranscriptForgetter"),
        ("formatter", "formatter.forget:ChatForgetter"),
        ("analyzer-TONE", "analyzers.forget:AnalysisForgetter"),
        ("transcriber", "transcriber.service:TranscriberService"),
        ("formatter", "formatter.service:FormatterService"),
        ("analyzer-TONE", "analyzers.service:AnalyzerService"),
        ("registrar", "analyzers.desk:Registrar"),
        ("registrar", "analyzers.chat_desk:ChatModeRegistrar"),
        ("gateway", "gateway.chat_modes:ChatModeReplies"),
        ("asker", "analyzers.chat_analysis:ChatModeAnalyzer"),
        ("asker", "analyzers.asking:AskerService"),
        ("asker", "analyzers.digesting:DigestWriter"),
        ("formatter", "formatter.questions:QuestionDesk"),
        ("formatter", "formatter.replies:QuestionReplies"),
        ("formatter", "formatter.digest:DigestDesk"),
        ("formatter", "formatter.digest:DigestReplies"),
    ],
)
def test_every_declared_durable_is_granted_with_its_filter_and_no_other(account: str, service: str) -> None:
    """What each service declares with `@consumes` is what its account may create: the durable, on its stream,
    with its filter (issue 22 (1)). A durable added to a service without its grant fails here, not in production;
    and no create grant is left without a filter."""
    module, name = service.split(":")
    kind = getattr(importlib.import_module(module), name)
    (role,) = [r for r in Accounts().roles if r.user == account]
    allowed = role.publish_allow()
    for handler in vars(kind).values():
        declared = getattr(handler, "__consumes__", None)
        if declared is None:
            continue
        spec = declared.spec
        durable, subject = spec.durable.format(mode="TONE"), spec.filter_subject.format(mode="TONE")
        assert f"$JS.API.CONSUMER.CREATE.{spec.stream}.{durable}.{subject}" in allowed, durable
    creates = [s for s in allowed if s.startswith("$JS.API.CONSUMER.CREATE.") and s.count(".") <= 5]
    bucket_reads = [s for s in creates if s.split(".")[4].startswith(("KV_", "OBJ_"))]
    assert creates == bucket_reads, "a durable's create grant without its filter"
