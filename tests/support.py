"""What the tests share: the test session's constants, a nats-server, speech, the stack as a user runs it, and
helpers to drive handlers or wait for the bot. Fixtures live in `conftest.py` and use these; tests import from here."""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
import yaml

from analyzers.llm import ChatLLM, make_client
from analyzers.service import AnalyzerService
from bench.speech import voice_note
from gateway.admin import AdminInbox, Admins
from gateway.dispatch import build_dispatcher, handler_context
from gateway.intake import Intake, correlation_key
from gateway.storage import StoreRoom
from gateway.updates import GIVE_UP_AFTER, UpdateHandler, UpdatePoller
from gateway.webhook import WebhookReceiver
from infra.bus import Bus, ConsumerSpec, Declared, Delivery, declaration, decoder, deliver
from infra.bus.names import BUCKET_ANSWERED, CONSUMER_FORMATTER, STREAM, STREAM_ASK, STREAM_ASKER
from infra.domain.contracts import Transcript
from infra.domain.definitions import shipped
from infra.domain.registry import ModeRegistry
from infra.ops.access import ADMIN, Accounts, Logins, render
from infra.ops.launcher import nats_config, nats_server_binary
from infra.ops.provision import provision
from infra.runtime.settings import Limits, Settings
from infra.voice.languages import LANGUAGES
from infra.voice.telegram import make_bot
from infra.voice.texts import text
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import SentMessage, TelegramDouble

REPO = Path(__file__).resolve().parents[1]
TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
OPENAI_KEY = "sk-test-voice-insight-0123456789"
MAX_AUDIO_SECONDS = 30
JOIN_TIMEOUT = 12
NOTIFY_AFTER = 20.0
"""The stack's wait past which an answer comes as a message of its own (the default): above any note of these
tests that does not wait on purpose, so their answers replace the status in place."""


def subscriber(
    spec: ConsumerSpec,
    kind: type,
    handler: Callable[[Any, Delivery], Awaitable[None]],
    give_up: Callable[[Any, BaseException], Awaitable[None]] | None = None,
    then: tuple[ConsumerSpec, ...] = (),
) -> object:
    """A service of one handler around plain functions, declared as a service declares its handlers: a test
    subscribes through `Bus.start`, the one way there is. `then`: lower-priority durables its workers also take
    from, each a method of its own as in the transcriber."""

    def declared(consumer: ConsumerSpec, lower: tuple[str, ...] = ()) -> Callable[..., Awaitable[None]]:
        async def on_message(self: object, event: Any, delivery: Delivery) -> None:
            await handler(event, delivery)

        on_message.__annotations__ = {"event": kind, "delivery": Delivery, "return": None}
        on_message.__consumes__ = Declared(consumer, lower, "give_up" if give_up else None)  # type: ignore[attr-defined]
        return on_message

    lower = {f"on_lower_{index}": declared(consumer) for index, consumer in enumerate(then)}
    namespace: dict[str, Any] = {"on_message": declared(spec, tuple(lower)), **lower}
    if give_up is not None:

        async def tell(self: object, event: Any, exc: BaseException) -> None:
            await give_up(event, exc)

        namespace["give_up"] = tell
    return type(f"Subscriber_{spec.durable}", (), namespace)()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(size: int = 10) -> int:
    """A base port such that base+1 .. base+size are free now (the launcher hands them to its children)."""
    for _ in range(200):
        base = random.randint(20000, 60000)
        try:
            for port in range(base + 1, base + size + 1):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")


@dataclass
class NatsServer:
    port: int
    store: Path
    proc: subprocess.Popen[bytes] | None = None
    login: tuple[str, str] | None = None
    """A user and password every client must log in with."""
    accounts: Accounts | None = None
    """An account per service (`infra.ops.access`), passwords in `logins`: as production runs."""
    max_file_store: int | None = None
    """The JetStream store's cap in bytes; None: nats-server's default."""

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def logins(self) -> Logins:
        return Logins(self.store / "logins")

    @property
    def log(self) -> Path:
        return self.store / "nats-server.log"

    def admin(self) -> dict[str, str]:
        """`Bus.connect` keywords of the admin user (provisioning, the tests' own look at the state)."""
        return {"user": ADMIN, "password": self.logins.password(ADMIN)} if self.accounts else {}

    def provision(self) -> None:
        """What a deployment does once before any service starts: `voice-insight provision`, as the admin."""
        env = {"PATH": os.environ["PATH"], "NATS_URL": self.url}
        if self.accounts:
            env.update(self.logins.env(ADMIN))
        subprocess.run(
            [sys.executable, "-m", "voice_insight", "provision"],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def violations(self) -> list[str]:
        """What the server refused an account, from its log."""
        return [line for line in self.log.read_text(errors="replace").splitlines() if "Violation" in line]

    def start(self) -> None:
        # The same durability as `voice-insight up` and compose: every write synced before it is acknowledged.
        (self.store / "nats").mkdir(parents=True, exist_ok=True)
        accounts = ""
        if self.accounts is not None:
            self.logins.ensure(self.accounts.users)
            accounts = render(self.accounts, self.logins.passwords(self.accounts.users))
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-c",
                str(nats_config(self.store / "nats", accounts, self.max_file_store)),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-l",
                str(self.log),
                *(("--user", self.login[0], "--pass", self.login[1]) if self.login else ()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)


class Speech:
    """Speech as Telegram delivers voice notes: espeak-ng → WAV → OGG/Opus (48 kHz mono, VoIP tuning)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._n = 0

    def _path(self, suffix: str) -> Path:
        self._n += 1
        return self.folder / f"clip{self._n}{suffix}"

    def say(self, text: str, voice: str = "en-us", speed: int = 150) -> bytes:
        wav = self._path(".wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True)
        return voice_note(wav)

    def video_note(self, text: str) -> bytes:
        """A round video note as Telegram stores it: a square H.264 MP4 with the speech as AAC."""
        wav, mp4 = self._path(".wav"), self._path(".mp4")
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "color=c=teal:s=240x240:r=15",
                "-i",
                str(wav),
                "-shortest",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                str(mp4),
            ],
            check=True,
        )
        return mp4.read_bytes()

    def lavfi(self, source: str, seconds: float) -> bytes:
        """Synthetic non-speech sound (`anullsrc` silence, `sine`, `anoisesrc`) of a given length."""
        return voice_note(synth(self._path(".wav"), seconds, "-ar", "16000", "-ac", "1", source=source))


def synth(out: Path, seconds: float, *encoding: str, source: str = "sine=frequency=300:sample_rate=16000") -> Path:
    """`seconds` of an ffmpeg lavfi `source` (a tone by default), encoded as `encoding` says, written to `out`."""
    command = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds)]
    subprocess.run([*command, *encoding, str(out)], check=True)
    return out


def live_stream(out: Path, seconds: float) -> Path:
    """6 kbps Opus as a live WebM stream: tiny, and no duration in its metadata for anyone to trust."""
    return synth(out, seconds, "-c:a", "libopus", "-b:a", "6k", "-f", "webm", "-live", "1")


def a_transcript(cid: str, text: str = "We ship on Monday.", **fields: Any) -> Transcript:
    """A transcript as the transcriber publishes it, for tests that start after transcription."""
    values: dict[str, Any] = dict(
        language="en",
        language_probability=0.99,
        duration=2.0,
        segments=(),
        ui_language="en",
        model="base",
        transcribe_seconds=0.5,
    )
    return Transcript(correlation_id=cid, text=text, **{**values, **fields})


STACK_ADMIN = 49_000_001
"""The session stack's one bot admin (`ADMIN_USER_IDS`): its private chat is this id."""


def stack_env(
    nats: NatsServer, telegram: TelegramDouble, openai: OpenAIDouble, model: Path, state: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NATS_", "TELEGRAM_", "OPENAI_"))}
    env.update(
        NATS_URL=nats.url,
        **({"NATS_CREDENTIALS_DIR": str(nats.logins.folder)} if nats.accounts else {}),
        TELEGRAM_TOKEN=TOKEN,
        TELEGRAM_API_BASE=telegram.base_url,
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=openai.base_url,
        WHISPER_MODEL=str(model),
        WHISPER_DEVICE="cpu",
        MAX_AUDIO_SECONDS=str(MAX_AUDIO_SECONDS),
        JOIN_TIMEOUT=str(JOIN_TIMEOUT),
        NOTIFY_AFTER=str(NOTIFY_AFTER),
        VOICE_INSIGHT_STATE_DIR=str(state),
        METRICS_PORT=str(free_port_block()),
        ALLOWED_USERS="open",
        ADMIN_USER_IDS=str(STACK_ADMIN),
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_base: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def child(self, command: str) -> int:
        """The pid of this stack's one child running `voice-insight <command>` (not another stack's)."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid), "-f", f"voice_insight {command}"], capture_output=True, text=True
        ).stdout.split()
        assert len(found) == 1, f"{len(found)} children run {command}"
        return int(found[0])

    def port(self, service: str) -> int:
        """The launcher's port plan for the default stack (see infra.ops.launcher.plan): the fixed children, then
        the analyzers of the registry's modes as they start."""
        order = ["gateway", "formatter", "transcriber", "registrar", "asker", "analyzer-default", "analyzer-tone"]
        return self.metrics_base + 1 + order.index(service)


async def eventually(condition: Callable[[], object], timeout: float = 20.0, every: float = 0.01) -> None:
    """Wait until `condition()` holds; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(every)


async def wait_for_modes(bus: Bus, modes: set[str], timeout: float = 120.0) -> None:
    from infra.domain.modes import live_modes

    deadline = time.monotonic() + timeout
    while {m.mode for m in await live_modes(bus)} < modes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"modes {modes} never went live")
        await asyncio.sleep(0.2)


async def wait_for_log(stack: Stack, service: str, word: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(line.startswith(service) and word in line for line in stack.output().splitlines()):
        if stack.proc.poll() is not None:
            raise RuntimeError(f"the stack exited:\n{stack.output()[-5000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service} never logged {word!r}:\n{stack.output()[-5000:]}")
        await asyncio.sleep(0.2)


NOTES = [
    "The budget review moves to Thursday morning.",
    "Please send the sales report before Wednesday evening.",
    "Our new office opens next Monday in the city center.",
    "Call the supplier about the delayed shipment today.",
    "The team dinner is on Friday at seven o'clock.",
    "Remember to renew the software licenses this month.",
]
"""Short notes that the packaged `base` model gets right; `KEYWORDS` finds each in its answer."""
KEYWORDS = ["budget", "sales", "office", "supplier", "friday", "licen"]


SHIPPED = {d.name: d for d in shipped()}
"""The shipped mode definitions (DEFAULT, TONE), as the registry is seeded with them."""


async def an_analyzer(bus: Bus, openai_base_url: str, mode: str = "TONE", **options: Any) -> AnalyzerService:
    """An analyzer of a registered mode, its LLM client pointed at the OpenAI double."""
    registry = await ModeRegistry.open(bus)
    definition = (await registry.get(mode)).definition
    return AnalyzerService(bus, ChatLLM(make_client(OPENAI_KEY, openai_base_url)), registry, definition, **options)


def first_delivery(handler: Callable[..., Awaitable[None]]) -> Delivery:
    """A message's first delivery to `handler`, with the attempts its `@consumes` declares: a handler that does
    something else on its last attempt is not tested with a delivery that never has one."""
    spec = declaration(handler).spec
    return Delivery(subject=spec.filter_subject, attempt=1, max_attempts=spec.max_attempts)


class Redelivered:
    """Delivers an event to a handler the way JetStream does: through the bus's outcome table (`deliver`), again
    after each `Retry`, with the attempt count and the attempts its `@consumes` declares (so a test of a long
    outage fails if the consumer would give up sooner). An exception that the bus would retry is raised."""

    def __init__(self, handler: Callable[[Any, Delivery], Awaitable[None]], time_scale: float = 1.0) -> None:
        self.handler = handler
        self.time_scale = time_scale
        self.retries: list[float] = []
        self.max_attempts = declaration(handler).spec.max_attempts

    async def __call__(self, event: Any, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            delivery = Delivery(subject="voice.test", attempt=attempt, max_attempts=self.max_attempts)
            verdict = await deliver(self.handler, event, delivery)
            match verdict.outcome:
                case "retry":
                    self.retries.append(verdict.delay)
                    assert time.monotonic() + verdict.delay * self.time_scale < deadline, f"still retrying: {verdict}"
                    await asyncio.sleep(verdict.delay * self.time_scale)
                case "rejected":
                    return f"rejected:{verdict.reason}"
                case "gave_up":
                    return "gave_up"  # out of attempts: never to be mistaken for an answer
                case "error":
                    assert verdict.cause is not None
                    raise verdict.cause
                case _:
                    return "acked"


# --- the gateway in-process ---------------------------------------------------------------------


@pytest.fixture(name="telegram")
async def telegram_of_its_own() -> AsyncIterator[TelegramDouble]:
    """A Bot API double of the test's own, for modules that import this fixture: a webhook (or `--local` mode)
    set there must not reach the session's stack, which polls the session's double meanwhile."""
    double = TelegramDouble(TOKEN)
    await double.start()
    yield double
    await double.stop()


class Gateway:
    """The gateway's parts, as `gateway.__main__` wires them, with the limits under test."""

    def __init__(
        self,
        bus: Bus,
        telegram: TelegramDouble,
        limits: Limits,
        give_up_after: int = GIVE_UP_AFTER,
        admins: tuple[int, ...] = (),
        webhook_secret: str | None = None,
        local_files: bool = False,
        max_audio_seconds: float = 600.0,
        request_timeout: float | None = None,
        store_cap: int | None = None,
    ) -> None:
        """`webhook_secret`: take updates through a webhook receiver (registered with the double) instead of
        polling; several such gateways may run side by side, as behind a load balancer. `store_cap`: the JetStream
        store's cap the intake measures the room left against (`JETSTREAM_MAX_FILE_STORE`)."""
        self.store_cap = store_cap
        self.webhook_secret = webhook_secret
        self.max_audio_seconds = max_audio_seconds
        self.local_files = local_files
        self.request_timeout = request_timeout
        self.webhook_url = ""
        self.server, self.telegram, self.limits = f"nats://{bus.nc.connected_url.netloc}", telegram, limits  # type: ignore[union-attr]
        self.admins = Admins(admins, correlation_key(telegram.token))
        if limits.allowed is not None:  # as `Settings.limits`: admins are always let in
            self.limits = dataclasses.replace(limits, allowed=limits.allowed | frozenset(admins))
        self.give_up_after = give_up_after

    async def __aenter__(self) -> Gateway:
        self.bus = bus = await Bus.connect([self.server], name="test-gateway")
        self.bot = make_bot(
            Settings(telegram_token=self.telegram.token, telegram_api_base=self.telegram.base_url),
            **({"request_timeout": self.request_timeout} if self.request_timeout else {}),
        )
        key = correlation_key(self.telegram.token)
        room = StoreRoom(bus, self.store_cap) if self.store_cap else None
        intake = Intake(
            bus, self.bot, key, self.max_audio_seconds, self.limits, local_files=self.local_files, room=room
        )
        dispatcher = build_dispatcher(self.limits, self.admins)
        context = handler_context(bus, intake, self.admins, key, None, self.max_audio_seconds)
        updates = UpdateHandler(self.bot, dispatcher, context, give_up_after=self.give_up_after)
        await bus.start(updates)
        await bus.start(AdminInbox(self.bot, self.admins))
        if self.webhook_secret is None:
            self.poller: asyncio.Task[None] | None = asyncio.create_task(
                UpdatePoller(self.bot, bus, poll_timeout=1).run()
            )
            return self
        self.poller = None
        port = free_port()
        self.webhook_url = f"http://127.0.0.1:{port}/telegram/{port}"
        self.receiver = WebhookReceiver(bus, self.bot.id, self.webhook_secret, f"/telegram/{port}")
        await self.receiver.start("127.0.0.1", port)
        await self.bot.set_webhook(self.webhook_url, secret_token=self.webhook_secret)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.poller is not None:
            self.poller.cancel()
        else:
            await self.receiver.stop()
            await self.bot.delete_webhook()  # the session's double goes back to being polled
        await self.bus.close(grace=5)
        await self.bot.session.close()


# --- waiting for the bot --------------------------------------------------------------------------

LISTENING = tuple(text("listening", lang) for lang in LANGUAGES)
PROGRESS = tuple(
    text(key, lang, **{name: "\0" for name in ("modes", "ahead", "eta", "done", "total")}).split("\0")[0]
    for key in ("on_its_way", "queue_position", "transcribing")
    for lang in LANGUAGES
)
"""How a status message shows progress (the transcript so far, modes on their way, a place in the queue)."""


def in_progress(text: str) -> bool:
    """Listening, progress, or a mode on its way after a button ("⏳ 🎭 Tone…")."""
    return text in LISTENING or any(mark in text for mark in PROGRESS) or (text.startswith("⏳") and text.endswith("…"))


def answered(telegram: TelegramDouble, chat: int) -> bool:
    """The chat's status message holds the answer now (neither "listening" nor progress)."""
    messages = telegram.messages(chat)
    return bool(messages) and not in_progress(messages[0].text)


def answered_once(message: SentMessage) -> bool:
    """The status message went from "listening" through progress (if any) to one answer, and stayed there; or,
    for a note answered past `NOTIFY_AFTER` (a test that kills a service, say), the answer came as one new reply
    that notified, written once (its status deleted: the chat shows one message, which callers count)."""
    history = message.history
    if len(history) == 1:
        return not in_progress(history[0]) and message.reply_to is not None and not message.silent
    return (
        len(history) >= 2
        and history[0] in LISTENING
        and all(in_progress(t) for t in history[1:-1])
        and not in_progress(history[-1])
    )


EN_TEXT = (
    "Hello team. The quarterly budget review is moved to Thursday morning. "
    "Please send me the sales report before Wednesday evening."
)
LONG_EN_TEXT = (
    "Good morning everyone, this is a quick update on the product launch. The marketing campaign starts on Monday, "
    "and the landing page must be ready by Friday afternoon. Maria will review the copy, and Tom will check the "
    "pricing table with finance. Please send me your comments before the end of the week."
)
DECIDED = """
name = "DECIDED"
model = "gpt-4o-mini"
max_tokens = 300
timeout = 8.0
prompt = '''
What was decided in this note?

Text: {text}'''

[titles]
ru = "🧭 Решено"
en = "🧭 Decided"

[[fields]]
name = "decisions"
kind = "list"
[fields.headings]
ru = "Решения"
en = "Decisions"
"""
"""A custom mode as an admin writes it: a definition, no code."""

_fresh = itertools.count(1)


def fresh(text: str) -> str:
    """`text` with words of its own at the end: a note no cache has seen (the analysis cache answers the same
    transcript within the hour), for tests about what the LLM is asked or how it fails."""
    return f"{text} This is reference {next(_fresh)}."


RU_TEXT = "Привет! Позвони мне завтра утром, пожалуйста. Нужно обсудить новый проект и бюджет."


_chats = itertools.count(50_000_001)


def new_chat() -> int:
    """A chat nobody has written in yet this session."""
    return next(_chats)


def final(telegram: TelegramDouble, chat: int) -> list[SentMessage]:
    return telegram.messages(chat)


async def answer_of(telegram: TelegramDouble, chat: int, timeout: float = 120.0) -> SentMessage:
    """Wait until the status message holds the answer (not "listening", not progress), and return it."""

    await telegram.wait_for(lambda: answered(telegram, chat), timeout)
    return telegram.messages(chat)[0]


async def answer_to(telegram: TelegramDouble, chat: int, note: int, timeout: float = 120.0) -> SentMessage:
    """The answer to one note in a chat that has other messages too: the status message replying to it, once it
    holds the answer."""

    def status() -> SentMessage | None:
        return next((m for m in telegram.messages(chat) if m.reply_to == note and m.document is None), None)

    await telegram.wait_for(lambda: (m := status()) is not None and not in_progress(m.text), timeout)
    found = status()
    assert found is not None
    return found


async def reply_to(telegram: TelegramDouble, chat: int, message: int, timeout: float = 90.0) -> SentMessage:
    """The bot's reply to one message of the user's (a question, a command), once it is there."""

    def found() -> SentMessage | None:
        return next((m for m in telegram.messages(chat) if m.reply_to == message), None)

    await telegram.wait_for(lambda: found() is not None, timeout)
    reply = found()
    assert reply is not None
    return reply


def forgotten_mark(stream: str, data: bytes) -> bool:
    """What `/forget` leaves of each note it erased, so that the note's update, sent again, is not taken in again:
    its answered mark (under the note's ID, a keyed hash), saying only that it was forgotten."""
    if stream != f"KV_{BUCKET_ANSWERED}":
        return False
    try:
        return bool(json.loads(data) == {"type": "sent", "outcome": "forgotten", "parts": 0})
    except ValueError:
        return False


async def settled(bus: Bus, consumer: str = CONSUMER_FORMATTER, timeout: float = 60.0, stream: str = STREAM) -> None:
    """Wait until a consumer has seen and acked everything in the stream (a positive signal, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        info = await bus.js.consumer_info(stream, consumer)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{consumer} did not settle: {info}")
        await asyncio.sleep(0.1)


async def until_health(url: str, status: int, word: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                got, body = response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            got, body = err.code, err.read().decode()
        if got == status and word in body:
            return
        assert time.monotonic() < deadline, f"/health stayed {got} {body}"
        await asyncio.sleep(0.1)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def aligned(said: list[str], heard: list[str]) -> tuple[dict[int, list[int]], int]:
    """The script's sentences aligned with the words heard, in order (difflib): per sentence, the indices of its
    words found in `heard`; and the longest run of words heard beyond those said (a doubled sentence's mark)."""
    script = [(n, w) for n, sentence in enumerate(said) for w in words(sentence)]
    matcher = difflib.SequenceMatcher(a=[w for _, w in script], b=heard, autojunk=False)
    found: dict[int, list[int]] = {}
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            found.setdefault(script[block.a + k][0], []).append(block.b + k)
    excess = max((b2 - b1) - (a2 - a1) for _, a1, a2, b1, b2 in matcher.get_opcodes())
    return found, excess


def lost_sentences(said: list[str], heard: list[str]) -> list[str]:
    """Sentences of which fewer than 60 % of the words were heard, in the script's order."""
    found, _ = aligned(said, heard)
    return [s for n, s in enumerate(said) if len(found.get(n, [])) < 0.6 * len(words(s))]


def counted(recognizer: Any) -> list[float]:
    """Where each piece a `SpeechRecognizer` transcribes from now on starts (the `offset` it is called with): which
    transcriber took which pieces, and how often."""
    offsets: list[float] = []
    recognize: Callable[..., Any] = recognizer.recognize

    def counting(*args: Any, **kwargs: Any) -> Any:
        offsets.append(kwargs.get("offset", 0.0))
        return recognize(*args, **kwargs)

    recognizer.recognize = counting
    return offsets


def start_up(env: dict[str, str], folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`voice-insight up` as a person runs it, in `folder`, its output in `folder/up.log`."""
    log = folder / "up.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voice_insight", "up"],
            env=env,
            cwd=folder,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return proc, log


async def embedded_nats(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> re.Match[str]:
    """The embedded server `up` said it started: group 1 its URL, group 2 its store."""
    deadline = time.monotonic() + timeout
    said = re.compile(r"embedded nats-server on (nats://[^\s,]+), store (\S+)")
    while not (found := said.search(output := _text(log))):
        assert time.monotonic() < deadline and proc.poll() is None, output
        await asyncio.sleep(0.1)
    return found


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


async def admin_bus(url: str, state: Path, name: str) -> Bus:
    """The test's look at `up`'s embedded server, as its admin account (passwords in the state folder)."""
    logins = Logins((state / "nats-credentials").resolve())
    return await Bus.connect([url], name=name, user=ADMIN, password=logins.password(ADMIN))


class PrometheusProcess:
    """Debian's Prometheus (installed by the repo's setup) on a free port, with `config` as its prometheus.yml in
    `folder`; its log beside it."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.folder, self.port = folder, free_port()
        self.log_path = folder / "prometheus.log"

    def __enter__(self) -> PrometheusProcess:
        assert shutil.which("prometheus"), "prometheus is missing: run the README's test set-up command"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


async def provisioned_server(folder: Path, accounts: Accounts) -> NatsServer:
    """A nats-server of a test module's own with every account of `accounts`, provisioned as the admin."""
    server = NatsServer(free_port(), folder, accounts=accounts)
    server.start()
    admin = await Bus.connect([server.url], name="admin", **server.admin())
    await provision(admin)
    await admin.close(grace=1)
    return server


async def everything_stored(bus: Bus) -> list[tuple[str, str, bytes]]:
    """Every message of every stream (buckets and the object store are streams too): (stream, subject, data)."""
    found = []
    for info in await bus.js.streams_info():
        name, state = info.config.name, info.state
        assert name is not None
        seq = state.first_seq
        while seq and seq <= state.last_seq:
            try:  # the next message on any subject: a note's erased events leave gaps
                msg = await bus.js.get_msg(name, seq=seq, subject=">", next=True)
            except nats.js.errors.NotFoundError:
                break
            assert msg.seq is not None and msg.subject is not None
            found.append((name, msg.subject, (msg.data or b"") + str(msg.headers or "").encode()))
            seq = msg.seq + 1
    return found


async def waiting_on(bus: Bus, subject: str, kind: type[Any]) -> list[Any]:
    """The requests and answers published on `subject` (in `ASK`, or the askers' `ASKER`) that nobody has taken:
    what the test's own handlers were given no chance to consume."""
    stream = STREAM_ASKER if subject.startswith("asker.") else STREAM_ASK
    info = await bus.js.stream_info(stream)
    found: list[Any] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            stored = await bus.js.get_msg(stream, seq)
        except nats.js.errors.APIError:
            continue  # taken (a work queue) or deleted meanwhile: the server says not found, or a bad request
        if stored.subject == subject:
            found.append(decoder(kind).decode(stored.data))
    return found
