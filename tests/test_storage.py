"""The JetStream store near its cap: measured against the cap the deployment's NATS config sets, and a big file is
refused with a clear message before it could fill the store for everyone, while ordinary voice notes still go
through. The gateway in-process against a nats-server of the module's own whose store is capped at 16 MiB, and a
Telegram double of its own."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.intake import correlation_id, correlation_key
from gateway.storage import ALWAYS_ROOM_FOR, FULL_AT, StoreRoom
from infra.bus import Bus, decoder
from infra.bus.names import STREAM, SUBJECT_AUDIO, SUBJECT_AUDIO_QUEUED
from infra.domain.contracts import AudioReceived
from infra.ops.launcher import nats_config
from infra.ops.provision import provision
from infra.runtime.settings import MAX_FILE_STORE, Limits, Settings, SettingsError, load_settings
from tests.support import REPO, Gateway, NatsServer, free_port
from voice_insight.doubles.telegram_api import TelegramDouble

TOKEN = "515151515:EEHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw6"
CAP = 16 * 1024 * 1024
FILLER = "filler"
"""An object that takes three quarters of the store (a day's big recordings, say), removed when a test is done."""
_chats = itertools.count(83_000_001)
OGG = b"OggS" + bytes(2000)  # the gateway does not decode: any bytes will do
BIG = b"OggS" + bytes(3 * 1024 * 1024)


def test_the_default_cap_is_the_one_the_nats_configs_set() -> None:
    for config in ("nats.conf", "cluster.conf"):
        written = re.findall(
            r"^\s*max_file_store:\s*(\S+)", (REPO / "infra" / "config" / "nats" / config).read_text(), re.M
        )
        told = [load_settings(environ={"JETSTREAM_MAX_FILE_STORE": value}, dotenv=None) for value in written]
        assert [settings.jetstream_max_file_store for settings in told] == [MAX_FILE_STORE], config
    assert Settings().jetstream_max_file_store == MAX_FILE_STORE == 4 * 1024**3
    assert load_settings(environ={"JETSTREAM_MAX_FILE_STORE": "512MB"}, dotenv=None).jetstream_max_file_store == 2**29
    with pytest.raises(SettingsError, match="JETSTREAM_MAX_FILE_STORE must be a size"):
        load_settings(environ={"JETSTREAM_MAX_FILE_STORE": "lots"}, dotenv=None)


def test_voice_insight_up_gives_its_embedded_server_the_cap(tmp_path: Path) -> None:
    config = nats_config(tmp_path / "store", max_file_store=512 * 1024**2).read_text()
    assert re.search(r"jetstream \{[^}]*max_file_store: 536870912\n[^}]*\}", config), config


@pytest.fixture(scope="module")
async def small_store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bus]:
    server = NatsServer(free_port(), tmp_path_factory.mktemp("small-store"), max_file_store=CAP)
    server.start()
    connected = await Bus.connect([server.url], name="tests-small-store")
    await provision(connected)
    yield connected
    await connected.close(grace=1)
    server.stop()


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramDouble]:  # its own bot, so the session stack never polls it
    double = TelegramDouble(TOKEN)
    await double.start()
    yield double
    await double.stop()


@pytest.fixture
async def nearly_full(small_store: Bus) -> AsyncIterator[Bus]:
    """The store three quarters full."""
    store = await small_store.audio_store()
    await store.put(FILLER, bytes(12 * 1024 * 1024))
    yield small_store
    await small_store.erase_object(FILLER)


async def audio_events(bus: Bus, chats: set[int]) -> list[AudioReceived]:
    """Every note of `chats` handed over to the transcribers."""
    info = await bus.js.stream_info(STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            stored = await bus.js.get_msg(STREAM, seq)
        except Exception:
            continue
        if stored.subject in (SUBJECT_AUDIO, SUBJECT_AUDIO_QUEUED):
            event = decoder(AudioReceived).decode(stored.data)
            if event.origin.chat_id in chats:
                found.append(event)
    return found


async def handed_over(bus: Bus, chat: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await audio_events(bus, {chat}):
        assert time.monotonic() < deadline, "the note was never handed over"
        await asyncio.sleep(0.2)


async def stored(bus: Bus, chat: int, message_id: int) -> bool:
    """Whether anything of the note's audio is in the object store."""
    name = correlation_id(correlation_key(TOKEN), chat, message_id)
    store = await bus.audio_store()
    try:
        await store.get_info(name)
    except Exception:
        return False
    return True


async def test_the_room_is_measured_against_the_cap_and_exported(small_store: Bus) -> None:
    room = StoreRoom(small_store, CAP)
    used = await room.used()
    assert 0 < used < CAP / 10
    assert REGISTRY.get_sample_value("voice_insight_jetstream_storage_bytes") == used
    assert REGISTRY.get_sample_value("voice_insight_jetstream_storage_limit_bytes") == CAP
    # Every replica is counted by JetStream; one server's disk holds one of them.
    assert await StoreRoom(small_store, CAP, replicas=3).used() == used // 3
    assert await room.admits(ALWAYS_ROOM_FOR) and await room.admits(int(FULL_AT * CAP) - used)
    assert not await room.admits(int(FULL_AT * CAP) - used + 1)
    # A long recording's pieces take their room too: an hour is 115 MB of 16 kHz PCM.
    assert StoreRoom.needs(3 * 1024 * 1024, 3600) == 3 * 1024 * 1024 + 115_200_000
    assert StoreRoom.needs(3 * 1024 * 1024, 120) == 3 * 1024 * 1024


@pytest.mark.timeout(120)
async def test_a_big_file_is_refused_clearly_when_the_store_is_nearly_full_and_a_voice_note_still_goes_through(
    nearly_full: Bus, telegram: TelegramDouble
) -> None:
    bus = nearly_full
    honest, liar, small = next(_chats), next(_chats), next(_chats)
    refused = REGISTRY.get_sample_value("voice_insight_limited_total", {"limit": "storage"}) or 0.0
    async with Gateway(bus, telegram, Limits(allowed=None), store_cap=CAP):
        before = await bus.storage_used()
        # Telegram says how big it is: refused before it is downloaded at all.
        first = await telegram.send_media(honest, BIG, kind="audio", duration=200, mime_type="audio/ogg")
        # Telegram says it is small (or says nothing): refused once the bytes show it, before any is stored.
        second = await telegram.send_media(liar, BIG, kind="document", reported_size=1000, language_code="ru")
        await telegram.wait_for(
            lambda: all(
                telegram.messages(chat) and telegram.messages(chat)[0].text.startswith("📦") for chat in (honest, liar)
            ),
            60,
        )
        # A voice note goes through, the store nearly full as it is.
        await telegram.send_media(small, OGG, duration=3)
        await handed_over(bus, small)
    english, russian = telegram.messages(honest)[0].text, telegram.messages(liar)[0].text
    assert english.startswith("📦 I have no room for a file this big right now"), english
    assert russian.startswith("📦 Для такого большого файла у меня сейчас нет места"), russian
    assert len(telegram.messages(honest)) == len(telegram.messages(liar)) == 1, "one message each, no other"
    file_ids = [params.get("file_id") for method, params in telegram.calls if method.lower() == "getfile"]
    assert len(file_ids) == 2, "the honest big file was never downloaded; the other and the voice note were"
    # Nothing of either is stored or handed over; the voice note is.
    assert not await stored(bus, honest, first) and not await stored(bus, liar, second)
    assert [e.origin.chat_id for e in await audio_events(bus, {honest, liar, small})] == [small]
    assert await bus.storage_used() - before < 64 * 1024 + len(OGG)
    assert REGISTRY.get_sample_value("voice_insight_limited_total", {"limit": "storage"}) == refused + 2


@pytest.mark.timeout(120)
async def test_a_big_file_goes_through_while_the_store_has_room(small_store: Bus, telegram: TelegramDouble) -> None:
    chat = next(_chats)
    async with Gateway(small_store, telegram, Limits(allowed=None), store_cap=CAP):
        message = await telegram.send_media(chat, BIG, kind="audio", duration=200, mime_type="audio/ogg")
        await handed_over(small_store, chat)
    assert telegram.messages(chat)[0].text == "🎧 Listening…"
    assert await stored(small_store, chat, message)
