"""The transcribers' backlog is measured from outside them: a transcriber exports its own durables' backlog, so
with every transcriber gone nobody did, and NotesWaiting stayed silent while notes piled up. The formatter, run
as `voice-insight formatter` runs it (`formatter.__main__.serve`) and logged in as its own account on a
nats-server with every service's account, exports what waits for the transcribers while none runs."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from prometheus_client.parser import text_string_to_metric_families

from formatter.__main__ import serve
from infra.bus import Bus, declaration
from infra.bus.names import SUBJECT_AUDIO, SUBJECT_AUDIO_QUEUED
from infra.domain.contracts import AudioReceived, AudioRef, Origin
from infra.ops.access import Accounts
from infra.ops.provision import provision
from infra.runtime.settings import Settings
from infra.voice.telegram import make_bot
from tests.support import TOKEN, NatsServer, free_port, new_chat
from transcriber.service import TranscriberService
from voice_insight.doubles.telegram_api import TelegramDouble


@pytest.fixture
async def nats_with_accounts(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    """A nats-server of the test's own with an account per service, as production runs: the formatter's account
    must be allowed whatever it reads (no violation in the server's log)."""
    server = NatsServer(free_port(), tmp_path_factory.mktemp("backlog-nats"), accounts=Accounts())
    server.start()
    yield server
    server.stop()
    assert not server.violations(), "\n".join(server.violations()[:20])


def scrape(port: int) -> dict[tuple[str, str], float]:
    """The backlog gauges on a side door's /metrics, by metric and consumer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    return {
        (sample.name, sample.labels["consumer"]): sample.value
        for family in families
        if family.name.startswith("voice_insight_consumer_")
        for sample in family.samples
        if "consumer" in sample.labels
    }


async def a_waiting_note(bus: Bus, bot: Bot, subject: str, name: str) -> None:
    """A note the gateway handed over: its status message sent, its event on `subject`."""
    chat = new_chat()
    status = await bot.send_message(chat, "🎧 Listening…")
    origin = Origin(chat_id=chat, message_id=1, status_message_id=status.message_id, ui_language="en")
    audio = AudioRef(object_name=name, kind="voice", size=1)
    await bus.publish(subject, AudioReceived(correlation_id=name, origin=origin, audio=audio, modes=()), msg_id=name)


@pytest.mark.timeout(60)
async def test_the_formatter_exports_the_transcribers_backlog_while_no_transcriber_runs(
    nats_with_accounts: NatsServer, telegram: TelegramDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = nats_with_accounts
    monkeypatch.setattr(Bus, "backlog_every", 0.2)  # a look every 0.2 s instead of 5 s
    admin = await Bus.connect([server.url], name="tests-admin", **server.admin())
    bot = make_bot(Settings(telegram_token=TOKEN, telegram_api_base=telegram.base_url))
    stop = asyncio.Event()
    port = free_port()
    formatter: asyncio.Task[None] | None = None
    try:
        await provision(admin)
        # The transcribers ran once (their durables exist), then every one of them went away.
        for handler in (TranscriberService.handle, TranscriberService.handle_queued):
            await admin.ensure_consumer(declaration(handler).spec)
        for n in range(3):
            await a_waiting_note(admin, bot, SUBJECT_AUDIO, f"backlog-{n}")
        await a_waiting_note(admin, bot, SUBJECT_AUDIO_QUEUED, "backlog-queued")
        stored = time.time()

        settings = Settings(
            nats_url=server.url,
            nats_user="formatter",
            nats_password=server.logins.password("formatter"),
            telegram_token=TOKEN,
            telegram_api_base=telegram.base_url,
            metrics_port=port,
        )
        formatter = asyncio.create_task(serve(settings, stop))

        async def until(check: object, timeout: float = 20.0) -> dict[tuple[str, str], float]:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    seen = await asyncio.to_thread(scrape, port)
                except OSError:  # the side door is not up yet
                    seen = {}
                if callable(check) and check(seen):
                    return seen
                assert formatter is not None and not formatter.done(), "the formatter stopped"
                assert time.monotonic() < deadline, f"never: {seen}"
                await asyncio.sleep(0.2)

        pending, age = "voice_insight_consumer_pending_messages", "voice_insight_consumer_backlog_age_seconds"
        first = await until(
            lambda seen: (
                seen.get((pending, "transcriber")) == 3
                and seen.get((pending, "transcriber-queued")) == 1
                and seen.get((age, "transcriber"), 0) >= 1.0
            )
        )
        # Measured now, not a value left behind: the oldest note's age grows with the clock.
        assert first[(age, "transcriber")] <= time.time() - stored + 5.0
        later = await until(lambda seen: seen.get((age, "transcriber"), 0) >= first[(age, "transcriber")] + 1.0)
        assert later[(age, "transcriber-queued")] > 0
    finally:
        stop.set()
        if formatter is not None:
            await asyncio.wait_for(formatter, 30)
        await bot.session.close()
        await admin.close(grace=1)
