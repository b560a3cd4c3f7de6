"""A local Bot API server still downloading the file (issue 19): it answers getFile only once the file is on its
disk, minutes for a big one. A module of its own: its own nats-server, so no formatter of another test's pipeline
(bound to that test's Bot API double, gone) competes for its events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.bus import Bus
from tests.support import (
    TOKEN,
    Speech,
    answer_of,
    telegram_of_its_own,  # noqa: F401  (the `telegram` fixture here: a double of the test's own)
)
from tests.test_big_files import SLOW, local_pipeline
from voice_insight.doubles.telegram_api import TelegramDouble

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
async def patient_pipeline(private_bus: Bus, telegram: TelegramDouble, model_dir: Path) -> AsyncIterator[None]:
    """The local pipeline, with the Bot API client's request timeout scaled down to 2 s (30 s in production)."""
    async with local_pipeline(private_bus, telegram, model_dir, request_timeout=2):
        yield


async def test_a_local_server_still_downloading_the_file_is_waited_for(
    patient_pipeline: None, telegram: TelegramDouble, speech: Speech
) -> None:
    """Issue 19: a `--local` server answers getFile only once it has downloaded the file from Telegram (minutes,
    for a big one); the usual request timeout gave up after 30 s, three times, and said "download failed".
    Scaled down: a 2 s request timeout (three tries and their pauses: 9 s) and a 12 s download. The file lands
    as telegram-bot-api writes it."""
    telegram.local_download_seconds = 12.0
    await telegram.send_media(SLOW, speech.say("The quarterly budget review is moved to Thursday morning."), duration=4)
    answer = await answer_of(telegram, SLOW, timeout=120)
    assert answer.text.startswith("📝 Transcript") and "budget" in answer.text.lower(), answer.text
    written = next(telegram.local_dir.glob(f"{TOKEN}/voices/*"))
    assert oct(written.stat().st_mode & 0o777) == "0o600" and oct(written.parent.stat().st_mode & 0o777) == "0o700"
