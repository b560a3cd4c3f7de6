"""Scale-out for real: a three-node JetStream cluster that loses its stream leader, and two transcribers.

Every process here is real: three `nats-server`s routed into one cluster on loopback, `voice-insight up` with
all its services, real Whisper. Only Telegram and OpenAI are doubles.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.bus import Bus
from infra.bus.names import CONSUMER_FORMATTER, STREAM
from infra.ops.launcher import nats_config, nats_server_binary
from tests.support import (
    KEYWORDS,
    NOTES,
    NatsServer,
    Speech,
    answered,
    answered_once,
    free_port,
    stack_env,
    wait_for_modes,
)
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = pytest.mark.timeout(600)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.nodes = [(f"n{i}", free_port(), free_port(), root / f"n{i}") for i in range(3)]
        routes = ",".join(f"nats://127.0.0.1:{cport}" for _, _, cport, _ in self.nodes)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for name, port, cport, store in self.nodes:
            store.mkdir(parents=True, exist_ok=True)
            config = nats_config(store / "js")
            config.write_text(config.read_text().replace("server_name: voice-insight", f"server_name: {name}"))
            self.procs[name] = subprocess.Popen(
                [
                    nats_server_binary(),
                    "-c",
                    str(config),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "--cluster_name",
                    "voice-insight",
                    "--cluster",
                    f"nats://127.0.0.1:{cport}",
                    "--routes",
                    routes,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{port}" for _, port, _, _ in self.nodes)

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)


async def run_up(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "voice_insight", "up", *args], env=env, stdout=sink, stderr=subprocess.STDOUT
        )


def stop_up(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()


async def answers(telegram: TelegramDouble, chats: list[int], timeout: float) -> None:
    def all_answered() -> bool:
        """Every chat's status message holds its answer: the transcript alone is progress, not yet the answer."""
        return all(answered(telegram, c) for c in chats)

    await telegram.wait_for(all_answered, timeout)


@pytest.fixture
async def fresh_telegram() -> AsyncIterator[TelegramDouble]:
    double = TelegramDouble("555000111:CCHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw3")
    await double.start()
    yield double
    await double.stop()


async def test_a_cluster_that_loses_its_stream_leader_still_answers_every_note_once(
    openai_double: OpenAIDouble, model_dir: Path, speech: Speech, tmp_path: Path, fresh_telegram: TelegramDouble
) -> None:
    telegram = fresh_telegram
    cluster = Cluster(tmp_path)
    up = None
    bus = None
    try:
        deadline = time.monotonic() + 60
        while True:  # the cluster needs a JetStream meta leader before anything can be created
            try:
                bus = await Bus.connect(cluster.url.split(","), name="test-cluster", replicas=3)
                await bus.ensure_topology()
                break
            except Exception:
                if bus:
                    await bus.close(grace=0)
                    bus = None
                assert time.monotonic() < deadline, "the cluster never formed"
                await asyncio.sleep(0.5)
        info = await bus.js.stream_info(STREAM)
        assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2

        env = stack_env(NatsServer(0, tmp_path), telegram, openai_double, model_dir, tmp_path / "state")
        env.update(NATS_URL=cluster.url, JETSTREAM_REPLICAS="3", TELEGRAM_TOKEN=telegram.token)
        up = await run_up(env, tmp_path / "up.log")
        await wait_for_modes(bus, {"DEFAULT", "TONE"})

        audio = [speech.say(text) for text in NOTES]
        chats = list(range(1, len(NOTES) + 1))
        for chat, clip in zip(chats[:3], audio[:3]):
            await telegram.send_media(chat, clip, duration=4)
            await asyncio.sleep(0.3)
        leader = (await bus.js.stream_info(STREAM)).cluster.leader
        cluster.kill(leader)  # in the middle of the stream
        for chat, clip in zip(chats[3:], audio[3:]):
            await telegram.send_media(chat, clip, duration=4)
            await asyncio.sleep(0.3)

        await answers(telegram, chats, timeout=300)
        new_leader = (await bus.js.stream_info(STREAM)).cluster.leader
        assert new_leader and new_leader != leader
        deadline = time.monotonic() + 120
        while True:
            consumer = await bus.js.consumer_info(STREAM, CONSUMER_FORMATTER)
            if consumer.num_pending == 0 and consumer.num_ack_pending == 0:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        for chat, keyword in zip(chats, KEYWORDS):
            messages = telegram.messages(chat)
            assert len(messages) == 1 and answered_once(messages[0]), f"chat {chat}: {[m.history for m in messages]}"
            assert keyword in messages[0].text.lower()
    finally:
        if up:
            stop_up(up)
        if bus:
            await bus.close(grace=0)
        cluster.stop()


async def test_two_transcribers_split_the_work(
    openai_double: OpenAIDouble, model_dir: Path, speech: Speech, tmp_path: Path, fresh_telegram: TelegramDouble
) -> None:
    telegram = fresh_telegram
    env = stack_env(NatsServer(0, tmp_path), telegram, openai_double, model_dir, tmp_path / "state")
    del env["NATS_URL"]  # the embedded server: nobody else's transcribers share this consumer
    env["TELEGRAM_TOKEN"] = telegram.token
    log = tmp_path / "up.log"
    up = await run_up(env, log, "--transcribers", "2")
    try:
        deadline = time.monotonic() + 120
        while (
            len(re.findall(r"^(transcriber-\d) .*\| .* ready$", log.read_text(), re.M)) < 2
            or "gateway       | " not in log.read_text()
        ):
            assert time.monotonic() < deadline and up.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # the gateway's first poll
        chats = list(range(1, len(NOTES) + 1))
        for chat, text in zip(chats, NOTES):
            await telegram.send_media(chat, speech.say(text), duration=4)
        await answers(telegram, chats, timeout=240)
    finally:
        stop_up(up)
    handled: dict[str, list[str]] = defaultdict(list)
    for replica, cid in re.findall(r"^(transcriber-\d)\s*\| .* ([0-9a-f]{32}): transcribed", log.read_text(), re.M):
        handled[cid].append(replica)
    assert len(handled) == len(NOTES), handled
    assert all(len(replicas) == 1 for replicas in handled.values()), f"a note was transcribed twice: {handled}"
    assert {r for replicas in handled.values() for r in replicas} == {"transcriber-1", "transcriber-2"}, handled
    for chat in chats:
        assert len(telegram.messages(chat)) == 1
