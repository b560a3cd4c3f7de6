"""Settings, read once at start from the environment (and a `.env` file) and passed in.

A missing or invalid setting stops the service with one line naming it, before anything connects:
an operator should learn about a typo from the first line of output, not from a stack trace later.
Secrets live only in the environment and are never part of `repr()`.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, TypeVar

T = TypeVar("T")

PUBLIC_TELEGRAM_API = "https://api.telegram.org"
PUBLIC_OPENAI_API = "https://api.openai.com/v1"
MAX_FILE_STORE = 4 * 1024**3
"""The JetStream store's cap, as `max_file_store: 4GB` in infra/config/nats/nats.conf and cluster.conf say (a test
keeps them in step)."""


class NatsCredentials(TypedDict, total=False):
    """How a service logs in to NATS, beside the URL: `Bus.connect(servers, name, **credentials)`."""

    user: str
    password: str
    tls: ssl.SSLContext


class SettingsError(Exception):
    """One bad or missing setting; `str()` is the single line shown to the operator."""


@dataclass(frozen=True)
class Limits:
    """Who may use the bot and how much, as configured; `infra.domain.limits` holds users to it."""

    allowed: frozenset[int] | None = frozenset()
    """Ids of users and chats that may use the bot; None: anyone (`ALLOWED_USERS=open`)."""
    max_pending: int = 30
    per_minute: int = 40
    daily_minutes: float = 240.0
    daily_tokens: int = 500_000
    """0 turns the budget off."""

    def admits(self, user_id: int | None, chat_id: int) -> bool:
        if self.allowed is None:
            return True
        return chat_id in self.allowed or (user_id is not None and user_id in self.allowed)


@dataclass(frozen=True)
class Settings:
    nats_url: str | None = None
    nats_user: str | None = None
    nats_password: str = field(default="", repr=False)
    """Read from the file NATS_PASSWORD_FILE names (a container secret), never from a URL or the environment."""
    nats_credentials_dir: Path | None = None
    """`voice-insight up` against a NATS of your own: a password file per account (infra/ops/access.py), by user."""
    nats_tls_ca_file: Path | None = None
    """The CA that signed the NATS servers' certificates (`tls://` URLs, infra/config/nats/cluster.conf)."""
    telegram_token: str = field(default="", repr=False)
    telegram_api_base: str = PUBLIC_TELEGRAM_API
    openai_api_key: str = field(default="", repr=False)
    openai_base_url: str = PUBLIC_OPENAI_API
    whisper_model: str = "base"
    whisper_device: str = "auto"
    whisper_compute_type: str = "default"
    whisper_threads: int = 0
    """CPU threads of one transcriber's model; 0: every core it may use (`up --transcribers N` shares them out)."""
    max_audio_seconds: float = 10800.0
    join_timeout: float = 90.0
    """How long the formatter waits for every analysis after the transcript; with `LLM_TIMEOUT` set and this not,
    long enough for a slow model (`join_timeout_for`)."""
    transcription_deadline: float = 6 * 3600.0
    """How long after it arrived a note may wait for its transcript before the user is told it could not be
    transcribed in time (and transcribers skip it): within the day its audio is kept."""
    notify_after: float = 20.0
    """How long after a note arrived (or its button was pressed) its answer may still replace the status in place,
    an edit, which notifies nobody; later, it comes as a new message, which does, and the status goes."""
    llm_timeout: float = 0.0
    """How long one analysis may take on this deployment, retries included; every mode gets at least this long
    (0: each mode's own timeout). A local model on a small machine: 120."""
    log_level: str = "INFO"
    state_dir: Path = Path(".voice-insight")
    metrics_port: int | None = None
    """Port of /metrics and /health; None means the service's default, 0 turns the endpoint off."""
    metrics_host: str = "127.0.0.1"
    """Interface /metrics and /health listen on: loopback unless told otherwise."""
    jetstream_replicas: int = 1
    """Replicas of the stream and buckets when a service creates them: 3 on a three-node cluster."""
    jetstream_max_file_store: int = MAX_FILE_STORE
    """The JetStream store's cap on each server (its `max_file_store`), in bytes: the account info JetStream
    answers names none, so the gateway is told it, to measure the room left and refuse big files near the cap.
    `voice-insight up` gives its embedded server this cap."""
    allowed_users: frozenset[int] | None = frozenset()
    """User and chat ids that may use the bot; None means open to anyone. Empty (unset): closed."""
    admin_user_ids: frozenset[int] = frozenset()
    """Users who may change analysis modes in the bot (and are let in, whatever ALLOWED_USERS says)."""
    user_max_pending: int = 30
    user_notes_per_minute: int = 40
    user_daily_minutes: float = 240.0
    daily_token_budget: int = 500_000
    telegram_rate: int = 25
    """Messages a second the whole bot writes, every process together: under the 30 Telegram documents for
    notifications to many users. Replies may go faster when Telegram allows the bot more (docs/performance.md)."""
    telegram_local_mode: bool = False
    """The Bot API server runs with `--local` and shares its disk with the gateway: files up to 2 GB."""
    webhook_url: str | None = None
    """Where Telegram posts updates (webhook mode); None: long polling, for a single gateway."""
    webhook_secret: str = field(default="", repr=False)
    webhook_listen: str = "0.0.0.0:8080"
    """Interface and port the webhook receiver listens on (the load balancer's upstream)."""
    webhook_delete_on_stop: bool = False
    """Remove the webhook when this gateway stops: for a single gateway. With several, keep it (the default)."""
    mode_models: dict[str, str] = field(default_factory=dict)
    """`MODEL_<MODE>=model`: the model a mode should use on this deployment (a local server's, say)."""
    ask_model: str = ""
    """The model that answers questions about a recording; empty: the DEFAULT mode's, whatever it is now."""

    @property
    def analyses_possible(self) -> bool:
        """OpenAI needs a key; a server of one's own (Ollama, vLLM, LM Studio) may need none."""
        return bool(self.openai_api_key) or self.openai_base_url != PUBLIC_OPENAI_API

    @property
    def llm_api_key(self) -> str:
        """The key to send: the one set, or a placeholder for a server that asks for none (the SDK wants one)."""
        return self.openai_api_key or "not-needed"

    @property
    def limits(self) -> Limits:
        return Limits(
            allowed=None if self.allowed_users is None else self.allowed_users | self.admin_user_ids,
            max_pending=self.user_max_pending,
            per_minute=self.user_notes_per_minute,
            daily_minutes=self.user_daily_minutes,
            daily_tokens=self.daily_token_budget,
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never be written anywhere: redacted from every log line."""
        passwords = [m.group(1) for u in self.nats_servers if (m := re.search(r"//[^:/@]*:([^@/]+)@", u))]
        secrets = (self.telegram_token, self.telegram_token.partition(":")[2], self.openai_api_key, self.webhook_secret)
        return (*secrets, *passwords, self.nats_password)

    @property
    def nats_credentials(self) -> NatsCredentials:
        """What `Bus.connect` logs in with: NATS_USER and the password from NATS_PASSWORD_FILE, if set."""
        credentials = NatsCredentials()
        if self.nats_user:
            credentials["user"], credentials["password"] = self.nats_user, self.nats_password
        if self.nats_tls_ca_file:
            credentials["tls"] = ssl.create_default_context(cafile=str(self.nats_tls_ca_file))
        return credentials

    @property
    def nats_servers(self) -> list[str]:
        """NATS_URL may list several servers, comma-separated (a cluster)."""
        return [u.strip() for u in (self.nats_url or "nats://127.0.0.1:4222").split(",") if u.strip()]


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines; `#` comments, `export ` prefixes and surrounding quotes are allowed."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise SettingsError(f"{path}:{lineno}: not a KEY=VALUE line")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _positive_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be greater than 0, got {text!r}")
    return value


LONGEST_TRANSCRIPTION_DEADLINE = 20 * 3600.0
"""A note's audio and events are kept a day: past 20 hours there would be nothing left to tell the user with."""


SHORTEST_TRANSCRIPTION_DEADLINE = 3600.0
"""Under an hour a long recording (hours of it, in pieces, behind new notes) would be given up on part-way."""


def _transcription_deadline(name: str, text: str) -> float:
    value = _positive_float(name, text)
    if not SHORTEST_TRANSCRIPTION_DEADLINE <= value <= LONGEST_TRANSCRIPTION_DEADLINE:
        raise SettingsError(f"{name} must be from 3600 (1 h) to 72000 (20 h) seconds, got {text!r}")
    return value


def _url(name: str, text: str, schemes: tuple[str, ...]) -> str:
    for part in text.split(","):
        if not re.match(rf"^({'|'.join(schemes)})://[^/\s]+", part.strip()):
            # Printed before logging (and its redaction) is set up: the URL without any credentials in it.
            shown = re.sub(r"^([^/]*//)?[^@/]*@", r"\1[redacted]@", part.strip())
            raise SettingsError(f"{name} must be a {'/'.join(schemes)} URL, got {shown!r}")
    return text.strip().rstrip("/")


def _port(name: str, text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise SettingsError(f"{name} must be a port number (0 turns it off), got {text!r}")
    return int(text)


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _size(name: str, text: str) -> int:
    """Bytes as NATS writes a size (`4GB`, `512MB`, `4G`, or a plain number): binary units, as nats-server reads
    its own config."""
    found = re.fullmatch(r"(\d+)\s*([KMGT]?)B?", text.strip().upper())
    if not found or int(found.group(1)) == 0:
        raise SettingsError(f"{name} must be a size such as 4GB, 512MB or a number of bytes, got {text!r}")
    return int(found.group(1)) * _SIZE_UNITS[found.group(2)]


def _choice(name: str, text: str, allowed: tuple[str, ...]) -> str:
    if text not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {text!r}")
    return text


def _count(name: str, text: str) -> int:
    if not text.isdigit():
        raise SettingsError(f"{name} must be a whole number (0 where it turns the limit off), got {text!r}")
    return int(text)


def _rate(name: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(f"{name} must be a whole number of messages a second, at least 1, got {text!r}")
    return int(text)


def _allowed(name: str, text: str) -> frozenset[int] | None:
    if text.strip().lower() == "open":
        return None
    try:
        return frozenset(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise SettingsError(f"{name} must be 'open' or comma-separated Telegram user/chat ids, got {text!r}") from None


def _ids(name: str, text: str) -> frozenset[int]:
    try:
        return frozenset(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise SettingsError(f"{name} must be comma-separated Telegram user ids, got {text!r}") from None


def _secret_token(name: str, text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", text):
        raise SettingsError(f"{name} must be 16 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
    return text


def _listen(name: str, text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise SettingsError(f"{name} must be host:port, got {text!r}")
    return text


def _flag(name: str, text: str) -> bool:
    return _choice(name, text.lower(), ("1", "0", "true", "false", "yes", "no")) in ("1", "true", "yes")


def _readable_file(name: str, text: str) -> Path:
    if not os.access(text, os.R_OK) or not Path(text).is_file():
        raise SettingsError(f"{name}: cannot read {text}")
    return Path(text)


def _password_file(name: str, text: str) -> str:
    try:
        password = Path(text).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {text} ({type(exc).__name__})") from None
    if not password:
        raise SettingsError(f"{name}: {text} is empty")
    return password


def _token(name: str, text: str) -> str:
    if not re.fullmatch(r"\d+:[A-Za-z0-9_-]{20,}", text):
        raise SettingsError(f"{name} does not look like a bot token from @BotFather (digits:secret)")
    return text


_PARSERS: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "NATS_URL": ("nats_url", lambda n, v: _url(n, v, ("nats", "tls", "ws", "wss"))),
    "NATS_USER": ("nats_user", lambda n, v: v),
    "NATS_PASSWORD_FILE": ("nats_password", _password_file),
    "NATS_TLS_CA_FILE": ("nats_tls_ca_file", _readable_file),
    "NATS_CREDENTIALS_DIR": ("nats_credentials_dir", lambda n, v: Path(v)),
    "TELEGRAM_TOKEN": ("telegram_token", _token),
    "TELEGRAM_API_BASE": ("telegram_api_base", lambda n, v: _url(n, v, ("http", "https"))),
    "OPENAI_API_KEY": ("openai_api_key", lambda n, v: v),
    "OPENAI_BASE_URL": ("openai_base_url", lambda n, v: _url(n, v, ("http", "https"))),
    "WHISPER_MODEL": ("whisper_model", lambda n, v: v),
    "WHISPER_DEVICE": ("whisper_device", lambda n, v: _choice(n, v, ("auto", "cpu", "cuda"))),
    "WHISPER_COMPUTE_TYPE": ("whisper_compute_type", lambda n, v: v),
    "WHISPER_THREADS": ("whisper_threads", _count),
    "MAX_AUDIO_SECONDS": ("max_audio_seconds", _positive_float),
    "JOIN_TIMEOUT": ("join_timeout", _positive_float),
    "LLM_TIMEOUT": ("llm_timeout", _positive_float),
    "TRANSCRIPTION_DEADLINE": ("transcription_deadline", _transcription_deadline),
    "NOTIFY_AFTER": ("notify_after", _positive_float),
    "LOG_LEVEL": ("log_level", lambda n, v: _choice(n, v.upper(), ("DEBUG", "INFO", "WARNING", "ERROR"))),
    "VOICE_INSIGHT_STATE_DIR": ("state_dir", lambda n, v: Path(v)),
    "METRICS_PORT": ("metrics_port", _port),
    "METRICS_HOST": ("metrics_host", lambda n, v: v),
    "JETSTREAM_REPLICAS": ("jetstream_replicas", lambda n, v: int(_choice(n, v, ("1", "3", "5")))),
    "JETSTREAM_MAX_FILE_STORE": ("jetstream_max_file_store", _size),
    "ALLOWED_USERS": ("allowed_users", _allowed),
    "ADMIN_USER_IDS": ("admin_user_ids", _ids),
    "USER_MAX_PENDING": ("user_max_pending", _count),
    "USER_NOTES_PER_MINUTE": ("user_notes_per_minute", _count),
    "USER_DAILY_MINUTES": ("user_daily_minutes", _positive_float),
    "DAILY_TOKEN_BUDGET": ("daily_token_budget", _count),
    "ASK_MODEL": ("ask_model", lambda n, v: v.strip()),
    "TELEGRAM_LOCAL_MODE": ("telegram_local_mode", _flag),
    "TELEGRAM_RATE": ("telegram_rate", _rate),
    "WEBHOOK_URL": ("webhook_url", lambda n, v: _url(n, v, ("https", "http"))),
    "WEBHOOK_SECRET": ("webhook_secret", _secret_token),
    "WEBHOOK_LISTEN": ("webhook_listen", _listen),
    "WEBHOOK_DELETE_ON_STOP": ("webhook_delete_on_stop", _flag),
}

SECRET_VARIABLES = ("TELEGRAM_TOKEN", "OPENAI_API_KEY", "WEBHOOK_SECRET")
"""Each may come from a file instead, `NAME_FILE` (a container secret): `docker inspect` shows a container's
environment, not the files mounted in it."""

KNOWN_VARIABLES = frozenset(_PARSERS) | {f"{name}_FILE" for name in SECRET_VARIABLES}


def _secrets_from_files(merged: dict[str, str]) -> None:
    """`NAME_FILE` → `NAME`, read once; setting both is a mistake worth a clear line, not a silent choice."""
    for name in SECRET_VARIABLES:
        path = merged.get(f"{name}_FILE", "").strip()
        if not path:
            continue
        if merged.get(name, "").strip():
            raise SettingsError(f"{name} and {name}_FILE are both set: keep one (the file, for a secret)")
        try:
            merged[name] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE={path} cannot be read ({type(exc).__name__})") from None
        # An empty file counts as unset, like an empty value: compose mounts every secret file, used or not.


def join_timeout_for(llm_timeout: float) -> float:
    """The formatter's deadline when analyses may take `llm_timeout`: a note's analyses wait their turn behind
    another note's in the LLM server's queue and the transcript's own trip, so twice that and a margin."""
    return max(90.0, 2 * llm_timeout + 30.0)


def _join_timeout_for(join_timeout: float | None, llm_timeout: float) -> float:
    if join_timeout is None:
        return join_timeout_for(llm_timeout)
    if join_timeout <= llm_timeout:
        raise SettingsError(
            f"JOIN_TIMEOUT ({join_timeout:g} s) is not longer than LLM_TIMEOUT ({llm_timeout:g} s): every analysis "
            f"would miss its answer. Leave JOIN_TIMEOUT unset (then {join_timeout_for(llm_timeout):g} s) or raise it"
        )
    return join_timeout


def load_settings(
    required: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = Path(".env"),
) -> Settings:
    """Build Settings from `.env` overlaid by the real environment; `required` names must be set.

    Empty values count as unset, so `FOO=` in a `.env` template does not pass for a real value.
    """
    merged: dict[str, str] = read_dotenv(dotenv) if dotenv else {}
    merged.update(os.environ if environ is None else environ)
    _secrets_from_files(merged)
    kwargs: dict[str, object] = {}
    for name, (attr, parse) in _PARSERS.items():
        text = merged.get(name, "").strip()
        if text:
            kwargs[attr] = parse(name, text)
        elif name in required:
            raise SettingsError(f"{name} is not set (see .env.example)")
    if kwargs.get("nats_user") and not kwargs.get("nats_password"):
        raise SettingsError("NATS_PASSWORD_FILE is not set: NATS_USER needs the password, read from that file")
    if kwargs.get("webhook_url") and not kwargs.get("webhook_secret"):
        raise SettingsError("WEBHOOK_SECRET is not set: webhook mode needs it, to refuse posts not from Telegram")
    if "llm_timeout" in kwargs:
        kwargs["join_timeout"] = _join_timeout_for(kwargs.get("join_timeout"), kwargs["llm_timeout"])  # type: ignore[arg-type]
    kwargs["mode_models"] = {
        name.removeprefix("MODEL_"): value.strip()
        for name, value in merged.items()
        if re.fullmatch(r"MODEL_[A-Z][A-Z0-9_]{0,31}", name) and value.strip()
    }
    return Settings(**kwargs)  # type: ignore[arg-type]
