"""`docker compose up`, for real: the shipped `compose.yaml` run by podman and podman-compose.

The image is built from the Dockerfile through compose's `build:` section (on a Debian base made here: there is
no registry), the stack comes up as a person brings it up, and a user sends voice notes through the Telegram
double, a container on the stack's network like the OpenAI double. The override (`tests/compose/podman.yaml`)
changes image sources and adds the doubles, nothing else. See `tests/compose_stack.py`.

Each finding of the first run by hand is a check here: the gateway knows the LLM is configured (it was not given
OPENAI_*), the gateway waits for Telegram instead of exiting in a loop, every service starts although podman
ignores `depends_on` conditions and cannot start the dependents of a one-shot, the analyzers are created at all
(podman refuses `host-gateway`), the transcriber has its model without a model hub (it is baked into the image).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose_stack import (
    Compose,
    RemoteTelegram,
    build_base_image,
    build_service_images,
    get_json,
    missing_tools,
    podman,
    wait_until,
)
from tests.support import EN_TEXT, REPO, Speech

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

TOKEN = "7000000001:AAH-compose-test-token_0123456789abcdef"
OPENAI_KEY = "sk-compose-test-0123456789"
SECRETS = {
    "TELEGRAM_TOKEN": TOKEN,
    "OPENAI_API_KEY": OPENAI_KEY,
    "WEBHOOK_SECRET": "compose-test-webhook-secret-0123456789",
    "TELEGRAM_API_HASH": "0123456789abcdef0123456789abcdef",
    "GRAFANA_ADMIN_PASSWORD": "compose-test-grafana-0123456789",
}
"""Every secret the stack has (NATS passwords aside), filed by `bootstrap.sh secrets` as README says."""
CONTROL_PORT = 18081
LOCAL_CONTROL_PORT = 18082
APP_SERVICES = ("gateway", "transcriber", "analyzer-default", "analyzer-tone", "registrar", "formatter")
SERVICES = ("nats", "jaeger", "prometheus", "alertmanager", "grafana", "openai", "telegram", *APP_SERVICES)
ALERT_CHAT = -1005100099
"""The admins' group Alertmanager's alerts go to (ALERT_CHAT_IDS in .env)."""
SCRAPED_JOBS = {"gateway": 1, "transcriber": 1, "analyzer": 2, "registrar": 1, "formatter": 1}
"""Prometheus' jobs (infra/config/prometheus/prometheus.yml) and how many targets each finds by DNS."""


def compose_settings(folder: Path, secrets: Path, local_bot_api: bool = False) -> Path:
    """What a person puts in `.env` (README), pointed at the doubles on the stack's network; `local_bot_api`: as
    README "Files up to 2 GB" says, at the local Bot API server of the `local-bot-api` profile."""
    env_file = folder / ("compose-local.env" if local_bot_api else "compose.env")
    telegram = (
        ["TELEGRAM_API_BASE=http://telegram-bot-api:8081", "TELEGRAM_LOCAL_MODE=true"]
        if local_bot_api
        else ["TELEGRAM_API_BASE=http://telegram:8081"]
    )
    env_file.write_text(
        "\n".join(
            [
                f"TELEGRAM_TOKEN={TOKEN}",  # for the doubles' commands only: the services read files
                *telegram,
                f"OPENAI_API_KEY={OPENAI_KEY}",
                "OPENAI_BASE_URL=http://openai:8000/v1",
                "ALLOWED_USERS=open",
                f"ALERT_CHAT_IDS={ALERT_CHAT}",
                "BASE_IMAGE=localhost/voice-insight-base:bookworm",
                f"TELEGRAM_CONTROL_PORT={CONTROL_PORT}",
                f"LOCAL_BOT_API_CONTROL_PORT={LOCAL_CONTROL_PORT}",
                f"SECRETS_DIR={secrets}",
            ]
        )
        + "\n"
    )
    return env_file


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    missing = missing_tools()
    assert not missing, f"{', '.join(missing)} missing: run the README's test set-up command"
    folder = tmp_path_factory.mktemp("compose")
    secrets = folder / "secrets"  # as README: `bootstrap.sh secrets` files the token and key from the environment
    env = {**os.environ, "SECRETS_DIR": str(secrets), **SECRETS}  # not the developer's .env: these, each one
    subprocess.run(["bash", str(REPO / "infra" / "bootstrap.sh"), "secrets"], check=True, capture_output=True, env=env)
    stack = Compose(compose_settings(folder, secrets))
    stack.secrets = secrets
    stack.down()  # what a run before this one may have left
    build_base_image()
    build_service_images()
    stack.run("build", "gateway", timeout=900)  # compose's own build: section, the Dockerfile on the base
    yield stack
    stack.down()


def failure_report(stack: Compose) -> str:
    return "\n".join(f"--- {service}\n{stack.logs(service, 30)}" for service in SERVICES)


def health_body(stack: Compose, service: str) -> dict[str, str]:
    """The service's own /health, asked from inside its container (app services publish no host port)."""
    script = (
        "import urllib.request, urllib.error\n"
        "try:\n    print(urllib.request.urlopen('http://127.0.0.1:9100/health', timeout=3).read().decode())\n"
        "except urllib.error.HTTPError as e:\n    print(e.read().decode())\n"
    )
    done = podman("exec", stack.container(service), "python", "-c", script, check=False, timeout=30)
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        return {}


def answer_in(telegram: RemoteTelegram, chat: int) -> dict[str, object] | None:
    """The status message once it holds the whole answer: no "listening", no progress, nothing still on its way."""
    messages = telegram.messages(chat)
    if messages and "🎧" not in str(messages[0]["text"]) and "⏳" not in str(messages[0]["text"]):
        return messages[0]
    return None


def assert_full_answer(answer: dict[str, object]) -> None:
    text = str(answer["text"])
    assert text.startswith("📝 Transcript · English"), text
    assert "budget" in text.lower() and "thursday" in text.lower()
    assert "Summary:" in text and "Key points:" in text, text  # DEFAULT, by the analyzer-default container
    assert "Hidden intentions:" in text and "How best to reply:" in text, text  # TONE, by analyzer-tone
    assert "Missing" not in text


def test_the_stack_comes_up_while_telegram_is_down_and_answers_once_it_is_up(compose: Compose, speech: Speech) -> None:
    everything_but_telegram = ["provision", *(s for s in SERVICES if s != "telegram")]
    compose.run("up", "-d", *everything_but_telegram, timeout=600)
    try:
        # The gateway waits for Telegram, says so, and is not restarted in a loop (it used to exit).
        wait_until(
            lambda: health_body(compose, "gateway").get("reason") == "waiting for Telegram", 120, "the gateway to wait"
        )
        restarts = compose.restarts("gateway")
        assert compose.state("gateway").get("Running"), compose.logs("gateway")
        for analyzer in ("analyzer-default", "analyzer-tone"):  # a note sent earlier is answered without them
            wait_until(lambda a=analyzer: health_body(compose, a).get("status") == "ok", 120, f"{analyzer} to be up")
        compose.run("up", "-d", "telegram")
        telegram = RemoteTelegram(f"http://127.0.0.1:{CONTROL_PORT}")
        wait_until(telegram.up, 60, "the Telegram double")
        chat = 5100001
        telegram.send_voice(chat, speech.say(EN_TEXT), duration=9)
        answer = wait_until(lambda: answer_in(telegram, chat), 300, "the answer", every=2)
        assert_full_answer(answer)
        assert compose.restarts("gateway") == restarts, "the gateway restarted instead of waiting"
        assert "setMyCommands" in telegram.calls()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{failure_report(compose)}") from None


def test_every_service_is_healthy_provisioned_scraped_and_traced(compose: Compose) -> None:
    try:
        provision = compose.state("provision")
        assert provision.get("Status") == "exited" and provision.get("ExitCode") == 0, compose.logs("provision")
        for service in SERVICES:  # podman runs no healthchecks without systemd: run compose.yaml's own, now
            wait_until(lambda service=service: compose.healthy(service), 120, f"{service} healthy", every=3)

        def scraped() -> bool:
            targets = get_json("http://127.0.0.1:9090/api/v1/targets")["data"]["activeTargets"]
            up: dict[str, int] = {}
            for target in targets:
                if target["health"] == "up":
                    up[target["labels"]["job"]] = up.get(target["labels"]["job"], 0) + 1
            return up == SCRAPED_JOBS

        wait_until(scraped, 90, "Prometheus to scrape every service", every=3)
        services = set(get_json("http://127.0.0.1:16686/api/services")["data"])
        assert {"gateway", "transcriber", "formatter"} <= services, services
        assert any(s.startswith("analyzer") for s in services), services

        # No secret in any container's environment or command, which `docker inspect` shows: only in files.
        for service in SERVICES:
            shown = podman(
                "inspect", "--format", "{{json .Config.Env}} {{json .Config.Cmd}}", compose.container(service)
            )
            for secret in (*SECRETS.values(), TOKEN.partition(":")[2], *compose.nats_passwords()):
                assert secret not in shown.stdout or service in ("telegram", "openai"), f"{service} shows a secret"

        # The gateway is told an LLM is configured: /help does not say analyses are off.
        telegram = RemoteTelegram(f"http://127.0.0.1:{CONTROL_PORT}")
        chat = 5100002
        telegram.send_text(chat, "/help")
        reply = wait_until(lambda: telegram.messages(chat), 60, "/help answered")
        assert "Analyses are off" not in reply[0]["text"], reply[0]["text"]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{failure_report(compose)}") from None


def test_an_alert_reaches_the_admins_through_the_bot(compose: Compose) -> None:
    """compose's `alertmanager`: its config rendered at its start from the bot's token (a secret) and `.env` onto its
    tmpfs; Prometheus finds it by its name; an alert sent to it reaches the admins' group through the bot."""
    try:
        wait_until(lambda: compose.healthy("alertmanager"), 120, "alertmanager healthy", every=3)
        assert "alertmanager: alerts go to 1 Telegram chat(s)" in compose.logs("alertmanager")

        def found() -> bool:
            data = get_json("http://127.0.0.1:9090/api/v1/alertmanagers")["data"]
            return any(am["url"].endswith(":9093/api/v2/alerts") for am in data["activeAlertmanagers"])

        wait_until(found, 90, "Prometheus to find Alertmanager", every=3)
        alert = {
            "labels": {"alertname": "ComposeCheck", "severity": "ticket", "job": "formatter"},
            "annotations": {"summary": "the compose test's alert", "runbook_url": "docs/runbook.md"},
        }
        request = urllib.request.Request(
            "http://127.0.0.1:9093/api/v2/alerts", json.dumps([alert]).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        telegram = RemoteTelegram(f"http://127.0.0.1:{CONTROL_PORT}")
        got = wait_until(lambda: telegram.messages(ALERT_CHAT), 120, "the alert in the admins' group", every=2)
        assert got[0]["text"] == (
            "🔥 ComposeCheck · ticket · firing\n• the compose test's alert\nRunbook: docs/runbook.md"
        ), got

        # Killed, it comes back by its restart policy with its config rendered again (onto a fresh tmpfs).
        before = compose.state("alertmanager")["Pid"]
        compose.crash("alertmanager")

        def back() -> bool:
            return compose.state("alertmanager").get("Pid") not in (None, 0, before)

        wait_until(lambda: back() and compose.healthy("alertmanager"), 90, "alertmanager back, healthy", every=3)
        assert compose.logs("alertmanager", 500).count("alertmanager: alerts go to 1 Telegram chat(s)") == 2
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{failure_report(compose)}") from None


@pytest.mark.parametrize("service", ["formatter", "transcriber"])
def test_a_crashed_container_comes_back_and_the_next_note_is_answered(
    compose: Compose, speech: Speech, service: str
) -> None:
    try:
        before = compose.state(service)["Pid"]
        compose.crash(service)
        wait_until(
            lambda: compose.state(service).get("Running") and compose.state(service).get("Pid") != before,
            60,
            f"{service} restarted by its policy",
        )
        telegram = RemoteTelegram(f"http://127.0.0.1:{CONTROL_PORT}")
        chat = 5100010 + len(service)
        telegram.send_voice(chat, speech.say(EN_TEXT), duration=9)
        assert_full_answer(wait_until(lambda: answer_in(telegram, chat), 300, "the answer", every=2))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{failure_report(compose)}") from None


def test_the_readme_names_the_engine_this_test_runs() -> None:
    readme = (REPO / "docs" / "compose.md").read_text()
    version = podman("--version").stdout.split()[-1]
    assert f"podman {version.rsplit('.', 1)[0]}" in readme, f"README does not name podman {version}"
    assert "podman-compose" in readme and "tests/test_compose.py" in readme
    assert os.path.exists(REPO / "tests" / "compose" / "podman.yaml")


def test_a_note_through_a_local_bot_api_server_is_read_from_its_disk(
    compose: Compose, speech: Speech, tmp_path: Path
) -> None:
    """Files up to 2 GB: the `local-bot-api` profile. The server writes what it downloads as its own user (101 in
    the aiogram/telegram-bot-api image), 0600 in 0700 folders, on the volume the gateway mounts read-only: the
    gateway must run as that user to read them (as uid 10001 it could read none, "download failed" for every
    file)."""
    local = Compose(compose_settings(tmp_path, compose.secrets, local_bot_api=True))
    compose.run("up", "-d", "provision", *(s for s in SERVICES if s != "telegram"), timeout=600)  # if alone
    try:
        local.run("--profile", "local-bot-api", "up", "-d", "telegram-bot-api")
        telegram = RemoteTelegram(f"http://127.0.0.1:{LOCAL_CONTROL_PORT}")
        wait_until(telegram.up, 60, "the local Bot API double")
        local.run("--profile", "local-bot-api", "up", "-d", "--force-recreate", "--no-deps", "gateway", "formatter")
        wait_until(lambda: health_body(local, "gateway").get("status") == "ok", 120, "the gateway on the local server")
        chat = 5100020
        telegram.send_voice(chat, speech.say(EN_TEXT), duration=9)
        assert_full_answer(wait_until(lambda: answer_in(telegram, chat), 300, "the answer", every=2))
        listing = podman(
            "exec", local.container("telegram-bot-api"), "ls", "-ln", f"/var/lib/telegram-bot-api/{TOKEN}/voices"
        )
        assert " 101 101 " in listing.stdout and listing.stdout.count("-rw-------") == 1, listing.stdout
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n{failure_report(local)}\n--- telegram-bot-api\n{local.logs('telegram-bot-api')}"
        ) from None
    finally:
        local.run("--profile", "local-bot-api", "down", "-v", "-t", "5", check=False, timeout=300)
