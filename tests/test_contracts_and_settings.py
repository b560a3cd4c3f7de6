"""Contracts decode strictly at the edge; settings fail fast with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from infra.bus import decoder, encode
from infra.domain.contracts import Analysis, AudioReceived, AudioRef, Event, Origin, Transcript
from infra.runtime.logs import REDACTED, Redactor
from infra.runtime.settings import SettingsError, load_settings
from tests.support import NatsServer, free_port

ORIGIN = Origin(chat_id=1, message_id=2, status_message_id=3, ui_language="ru")


def test_events_round_trip_through_the_union_decoder_by_their_tag() -> None:
    audio = AudioReceived(
        correlation_id="c", origin=ORIGIN, audio=AudioRef(object_name="c", kind="voice", size=10), modes=("DEFAULT",)
    )
    wire = encode(audio)
    assert b'"schema":"voice.audio/1"' in wire
    assert decoder(Event).decode(wire) == audio


def test_an_unknown_version_or_a_wrong_shape_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        decoder(Event).decode(b'{"schema":"voice.audio/2","correlation_id":"c"}')
    with pytest.raises(msgspec.ValidationError):
        decoder(Transcript).decode(encode(Analysis(correlation_id="c", mode="M", title="t", model="m")))
    with pytest.raises(msgspec.ValidationError):
        decoder(AudioReceived).decode(b'{"schema":"voice.audio/1","correlation_id":"c"}')


def test_contracts_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ORIGIN.chat_id = 5  # type: ignore[misc]


def test_settings_come_from_env_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nexport JOIN_TIMEOUT=30\nWHISPER_MODEL='small'\nOPENAI_API_KEY=\n")
    settings = load_settings(
        (), environ={"JOIN_TIMEOUT": "45", "NATS_URL": "nats://a:4222,nats://b:4222"}, dotenv=dotenv
    )
    assert settings.join_timeout == 45.0 and settings.whisper_model == "small"
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]
    with pytest.raises(SettingsError, match="OPENAI_API_KEY is not set"):
        load_settings(("OPENAI_API_KEY",), environ={}, dotenv=dotenv)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAX_AUDIO_SECONDS": "ten"}, "MAX_AUDIO_SECONDS must be a number"),
        ({"JOIN_TIMEOUT": "-1"}, "JOIN_TIMEOUT must be greater than 0"),
        ({"NATS_URL": "localhost:4222"}, "NATS_URL must be a nats/tls/ws/wss URL"),
        ({"WHISPER_DEVICE": "tpu"}, "WHISPER_DEVICE must be one of auto, cpu, cuda"),
        ({"TELEGRAM_TOKEN": "not-a-token"}, "TELEGRAM_TOKEN does not look like a bot token"),
        ({"TRANSCRIPTION_DEADLINE": "60"}, "TRANSCRIPTION_DEADLINE must be from 3600"),
        ({"TRANSCRIPTION_DEADLINE": "86400"}, "TRANSCRIPTION_DEADLINE must be from 3600"),
    ],
)
def test_invalid_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings((), environ=env, dotenv=None)


def test_secrets_stay_out_of_repr() -> None:
    settings = load_settings(
        (), environ={"TELEGRAM_TOKEN": "123:" + "A" * 30, "OPENAI_API_KEY": "sk-secret"}, dotenv=None
    )
    assert "sk-secret" not in repr(settings) and "AAAA" not in repr(settings)


@pytest.mark.slow  # starts real processes, each importing the whole stack
@pytest.mark.parametrize("role", [["gateway"], ["formatter"], ["analyzer", "--mode", "TONE"], ["up"]])
def test_a_service_with_a_missing_setting_stops_with_one_line(role: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voice_insight", *role],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not set" in lines[0], result.stderr


@pytest.mark.slow  # processes of their own
def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    """Modes live in the registry: an analyzer for a mode nobody registered exits on a configuration error."""
    server = NatsServer(free_port(), tmp_path)
    server.start()
    try:
        server.provision()
        result = subprocess.run(
            [sys.executable, "-m", "voice_insight", "analyzer", "--mode", "NOPE"],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "x", "NATS_URL": server.url, "METRICS_PORT": "0"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert result.returncode == 2 and "unknown mode 'NOPE'; known: DEFAULT, TONE" in result.stderr


def test_a_mode_model_per_deployment_and_analyses_without_a_key_on_a_server_of_ones_own() -> None:
    plain = load_settings(environ={"MODEL_TONE": "llama3.2", "MODEL_lower": "x", "MODEL_DEFAULT": " "}, dotenv=None)
    assert plain.mode_models == {"TONE": "llama3.2"}
    assert not plain.analyses_possible, "OpenAI's own server needs a key"
    local = load_settings(environ={"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}, dotenv=None)
    assert local.analyses_possible and local.llm_api_key == "not-needed"
    keyed = load_settings(environ={"OPENAI_API_KEY": "sk-1"}, dotenv=None)
    assert keyed.analyses_possible and keyed.llm_api_key == "sk-1"


def test_webhook_mode_needs_a_secret_telegram_accepts() -> None:
    with pytest.raises(SettingsError, match="WEBHOOK_SECRET is not set"):
        load_settings(environ={"WEBHOOK_URL": "https://bot.example.org/telegram"}, dotenv=None)
    with pytest.raises(SettingsError, match="16 to 256 characters"):
        load_settings(environ={"WEBHOOK_URL": "https://bot.example.org/t", "WEBHOOK_SECRET": "short!"}, dotenv=None)
    hooked = load_settings(
        environ={"WEBHOOK_URL": "https://bot.example.org/t", "WEBHOOK_SECRET": "a" * 32, "WEBHOOK_LISTEN": "[::]:8443"},
        dotenv=None,
    )
    assert hooked.webhook_listen == "[::]:8443" and "a" * 32 in hooked.secrets and not hooked.webhook_delete_on_stop


def test_every_secret_may_come_from_a_file(tmp_path: Path) -> None:
    """Issue 19: a container's environment is what `docker inspect` shows; a secret mounted as a file is not."""
    token, key, hook = "123456:" + "A" * 30, "sk-from-a-file", "w" * 32
    for name, value in (("token", token), ("key", key), ("hook", hook)):
        (tmp_path / name).write_text(value + "\n")  # as `echo` writes it: the newline is not part of the secret
    settings = load_settings(
        ("TELEGRAM_TOKEN",),
        environ={
            "TELEGRAM_TOKEN_FILE": str(tmp_path / "token"),
            "OPENAI_API_KEY_FILE": str(tmp_path / "key"),
            "WEBHOOK_SECRET_FILE": str(tmp_path / "hook"),
        },
        dotenv=None,
    )
    assert (settings.telegram_token, settings.openai_api_key, settings.webhook_secret) == (token, key, hook)
    assert {token, key, hook} <= set(settings.secrets), "redacted from logs like any secret"
    with pytest.raises(SettingsError, match="both set"):
        load_settings(environ={"OPENAI_API_KEY": "sk-x", "OPENAI_API_KEY_FILE": str(tmp_path / "key")}, dotenv=None)
    with pytest.raises(SettingsError, match="cannot be read") as refused:
        load_settings(environ={"TELEGRAM_TOKEN_FILE": str(tmp_path / "missing")}, dotenv=None)
    assert token not in str(refused.value)


def test_a_slow_llm_gets_a_deadline_that_fits_it() -> None:
    """Issue 19: a local model takes 20-60 s a call; the formatter's deadline follows LLM_TIMEOUT unless set."""
    assert load_settings(environ={}, dotenv=None).join_timeout == 90.0
    assert load_settings(environ={"LLM_TIMEOUT": "120"}, dotenv=None).join_timeout == 270.0
    assert load_settings(environ={"LLM_TIMEOUT": "20"}, dotenv=None).join_timeout == 90.0
    chosen = load_settings(environ={"LLM_TIMEOUT": "120", "JOIN_TIMEOUT": "400"}, dotenv=None)
    assert (chosen.llm_timeout, chosen.join_timeout) == (120.0, 400.0)
    with pytest.raises(SettingsError, match="not longer than LLM_TIMEOUT"):
        load_settings(environ={"LLM_TIMEOUT": "120", "JOIN_TIMEOUT": "90"}, dotenv=None)


def test_a_settings_error_never_echoes_credentials() -> None:
    """Issue 22 (5): a settings error is printed before logging (and its redaction) is set up, and it quoted the
    value it refused: a mistyped scheme printed the NATS password in the URL."""
    with pytest.raises(SettingsError) as refused:
        load_settings((), environ={"NATS_URL": "nat://gateway:hunter22@nats:4222"}, dotenv=None)
    assert "hunter22" not in str(refused.value) and "NATS_URL" in str(refused.value)


def test_short_secrets_are_redacted_too() -> None:
    """Issue 22 (5): secrets under eight characters were skipped as "not secrets"; a short NATS password then went
    to the logs in a URL. Every secret is redacted, whatever its length."""
    redact = Redactor(["s3cr", "", "sk-long-secret-key"])
    line = redact("connect nats://u:s3cr@nats:4222 failed; key sk-long-secret-key")
    assert "s3cr" not in line and "sk-long" not in line and line.count(REDACTED) == 2
