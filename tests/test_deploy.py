"""The compose stack and the image, checked without a Docker engine (these machines have none).

compose.yaml against the Compose Specification JSON schema; every command a real subcommand; every variable
one the services read; every health check on the port the service listens on; Prometheus scraping what
compose runs; the dashboard asking only for metrics that exist; the Dockerfile following its rules.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import REGISTRY

import infra.runtime.metrics  # noqa: F401  (registers the metrics)
from infra.ops.access import Accounts, password_variable
from infra.ops.launcher import STOP_GRACE
from infra.runtime.settings import KNOWN_VARIABLES, SettingsError, load_settings
from infra.service.run import CONFIG_ERROR_EXIT
from tests.support import SHIPPED as MODES
from voice_insight.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
APP_SERVICES = ("gateway", "transcriber", "analyzer-default", "analyzer-tone", "registrar", "asker", "formatter")
ONE_SHOTS = ("provision",)
"""Run once and exit; the others wait for them to complete (`service_completed_successfully`)."""
ACCOUNTS = {
    "provision": "admin",
    "gateway": "gateway",
    "transcriber": "transcriber",
    "formatter": "formatter",
    "analyzer-default": "analyzer-DEFAULT",
    "analyzer-tone": "analyzer-TONE",
    "registrar": "registrar",
    "asker": "asker",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_compose_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((REPO / "tests" / "compose" / "compose-spec.json").read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)


def test_compose_has_the_whole_stack_with_health_checks_and_limits(compose: dict[str, Any]) -> None:
    services = compose["services"]
    optional = {"webhook-proxy": "webhook", "telegram-bot-api": "local-bot-api"}
    monitoring = {"jaeger", "prometheus", "alertmanager", "grafana"}
    assert set(services) == {"nats", *monitoring, *optional, *APP_SERVICES, *ONE_SHOTS}
    for name, profile in optional.items():
        assert services[name]["profiles"] == [profile], f"{name} only on request"
    shared = "telegram-bot-api-data:/var/lib/telegram-bot-api"
    assert shared in services["telegram-bot-api"]["volumes"] and f"{shared}:ro" in services["gateway"]["volumes"]
    for name, service in services.items():
        limits = service["deploy"]["resources"]["limits"]
        assert limits["memory"] and limits["cpus"], name
        if name in ONE_SHOTS:  # again while NATS is not up (podman-compose starts it without waiting)
            assert service["restart"] == "on-failure" and service["healthcheck"] == {"disable": True}, name
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service.get("restart") == "unless-stopped", name
    for name in APP_SERVICES:
        # No service depends on the one-shot: podman cannot start the dependents of a one-shot that has
        # dependencies of its own. Each service waits for provisioning itself (tests/test_compose.py).
        assert "provision" not in services[name].get("depends_on", {}), name
        # What podman refuses: a host port range for one container port, and host-gateway.
        assert not any("-" in port.split(":")[-2] for port in services[name].get("ports", []) if ":" in port), name
        assert "extra_hosts" not in services[name], name
    for name in ("gateway", *(n for n in APP_SERVICES if n.startswith("analyzer"))):
        # The gateway says what the deployment offers (analyses on or off) as the analyzers see it.
        assert {"OPENAI_API_KEY_FILE", "OPENAI_BASE_URL"} <= set(services[name]["environment"]), name
    assert services["transcriber"]["environment"]["WHISPER_MODEL"].endswith("/opt/models/packaged-base}")
    # The local Bot API server's files are 0600 as uid 101 (aiogram/telegram-bot-api): the gateway is that user.
    assert services["gateway"]["user"] == "101:101"
    assert "WHISPER_BAKE:-packaged-base" in services["gateway"]["build"]["args"]["WHISPER_BAKE"]
    assert services["provision"]["depends_on"]["nats"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert "nats-data:/data" in services["nats"]["volumes"], "JetStream on a named volume"
    assert "whisper-models:/var/cache/voice-insight" in services["transcriber"]["volumes"], (
        "model cache survives restarts"
    )
    assert "ports" not in services["transcriber"], "a fixed host port would stop --scale transcriber=3"


def test_every_command_is_a_real_subcommand(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name in (*APP_SERVICES, *ONE_SHOTS):
        args = parser.parse_args(compose["services"][name]["command"])
        assert args.command in ("gateway", "transcriber", "analyzer", "registrar", "asker", "formatter", "provision")
        if args.command == "analyzer":
            assert args.mode in MODES and name == f"analyzer-{args.mode.lower()}"


def test_every_variable_compose_sets_is_one_the_settings_know(compose: dict[str, Any]) -> None:
    for name in (*APP_SERVICES, *ONE_SHOTS):
        for variable in compose["services"][name]["environment"]:
            known = variable in KNOWN_VARIABLES or variable.startswith(("OTEL_", "MODEL_"))
            assert known, f"{name}: {variable}"


def test_health_checks_probe_the_port_each_service_serves(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in APP_SERVICES:
        port = services[name]["environment"]["METRICS_PORT"]
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/health" in probe, name
    nats_conf = (REPO / "infra" / "config" / "nats" / "nats.conf").read_text()
    monitor = re.search(r"http_port:\s*(\d+)", nats_conf).group(1)  # type: ignore[union-attr]
    assert f"127.0.0.1:{monitor}/healthz" in " ".join(services["nats"]["healthcheck"]["test"])
    assert any(p.endswith(f":{monitor}") for p in services["nats"]["ports"]), "monitoring port published"
    assert "127.0.0.1:9090/-/ready" in " ".join(services["prometheus"]["healthcheck"]["test"])
    assert "127.0.0.1:3000/api/health" in " ".join(services["grafana"]["healthcheck"]["test"])
    assert "127.0.0.1:9093/-/ready" in " ".join(services["alertmanager"]["healthcheck"]["test"])
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert services["gateway"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"


def test_each_service_logs_in_as_its_own_account_with_a_password_no_url_or_environment_shows(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """`docker inspect` shows every container's environment and command: no password is in either, only in
    secret files, one per account (infra/ops/access.py), that the server's entrypoint and each service read."""
    users = Accounts(modes=tuple(MODES)).users
    assert set(ACCOUNTS.values()) == set(users), "every account of users.conf has a service, and no more"
    nats_conf = (REPO / "infra" / "config" / "nats" / "nats.conf").read_text()
    assert 'include "users.conf"' in nats_conf and "password:" not in nats_conf
    nats_secrets = {f"nats_{user}": {"file": f"${{SECRETS_DIR:-./secrets}}/nats/{user}"} for user in users}
    assert {k: v for k, v in compose["secrets"].items() if k.startswith("nats_")} == nats_secrets
    nats = compose["services"]["nats"]
    assert "environment" not in nats and set(nats["secrets"]) == set(nats_secrets)
    for name, user in ACCOUNTS.items():
        service = compose["services"][name]
        env = service["environment"]
        assert env["NATS_URL"] == "nats://nats:4222", "no credentials in the URL"
        assert env["NATS_USER"] == user and env["NATS_PASSWORD_FILE"] == "/run/secrets/nats_password", name
        assert service["secrets"][0] == {"source": f"nats_{user}", "target": "nats_password"}, name
        assert not any("PASSWORD" in key and not key.endswith("_FILE") for key in env), name
    assert "secrets/" in (REPO / ".gitignore").read_text().split()

    # The entrypoint, run as the container would (with its paths here): every account's password reaches the
    # server's environment under the name users.conf reads.
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    for user in users:
        (secrets / f"nats_{user}").write_text(f"pw-of-{user}\n")
    script = nats["entrypoint"][-1].replace("$$", "$").replace("/run/secrets", str(secrets))
    assert script.endswith("exec nats-server -c /etc/nats/nats.conf")
    script = script.removesuffix("nats-server -c /etc/nats/nats.conf") + "env"
    shown = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert {f"{password_variable(user)}=pw-of-{user}" for user in users} <= set(shown)


def test_bootstrap_writes_a_password_for_every_account_once(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "bootstrap.sh").write_text((REPO / "infra" / "bootstrap.sh").read_text())
    run = ["bash", str(tmp_path / "infra" / "bootstrap.sh"), "secrets", "analyzer-WORDS"]
    subprocess.run(run, check=True, capture_output=True)
    folder = tmp_path / "secrets" / "nats"
    written = {path.name: path.read_text() for path in folder.iterdir()}
    assert set(written) == {*Accounts(modes=tuple(MODES)).users, "analyzer-WORDS"}
    assert all(len(password) >= 24 for password in written.values()) and len(set(written.values())) == len(written)
    assert oct((tmp_path / "secrets").stat().st_mode)[-3:] == "700"
    subprocess.run(run, check=True, capture_output=True)  # a second run keeps them
    assert {path.name: path.read_text() for path in folder.iterdir()} == written


def test_the_password_file_is_read_once_and_kept_out_of_logs(tmp_path: Path) -> None:
    secret = tmp_path / "nats_password"
    secret.write_text("s3cret-Pass-word\n")
    settings = load_settings(environ={"NATS_USER": "voice", "NATS_PASSWORD_FILE": str(secret)}, dotenv=None)
    assert settings.nats_credentials == {"user": "voice", "password": "s3cret-Pass-word"}
    assert "s3cret-Pass-word" in settings.secrets and "s3cret" not in repr(settings)
    with pytest.raises(SettingsError, match="NATS_PASSWORD_FILE"):
        load_settings(environ={"NATS_USER": "voice"}, dotenv=None)
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(environ={"NATS_USER": "voice", "NATS_PASSWORD_FILE": str(tmp_path / "none")}, dotenv=None)
    assert load_settings(environ={}, dotenv=None).nats_credentials == {}


def test_prometheus_sends_its_alerts_to_the_alertmanager_compose_runs_with_its_config_rendered(
    compose: dict[str, Any],
) -> None:
    """The config Alertmanager runs is rendered at its start (infra/config/alertmanager/render.sh, run for real by
    tests/test_alerting.py) from the mounted template onto a tmpfs, and it is the one Alertmanager reads."""
    config = yaml.safe_load((REPO / "infra" / "config" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    service = compose["services"]["alertmanager"]
    assert targets == ["alertmanager:9093"] and "127.0.0.1:9093:9093" in service["ports"]
    assert "./infra/config/alertmanager:/etc/alertmanager:ro" in service["volumes"]
    shell, script, template, rendered, binary = service["entrypoint"]
    assert (shell, script, binary) == ("/bin/sh", "/etc/alertmanager/render.sh", "/bin/alertmanager")
    assert (REPO / "infra" / "config" / "alertmanager" / Path(template).name).is_file()
    assert f"--config.file={rendered}" in service["command"] and "--cluster.listen-address=" in service["command"]
    assert service["tmpfs"] == ["/tmp"] and rendered.startswith("/tmp/"), "the rendered config holds the bot's token"
    env = service["environment"]
    assert env["TELEGRAM_API_BASE"] == compose["services"]["gateway"]["environment"]["TELEGRAM_API_BASE"]
    assert env["ADMIN_USER_IDS"] == compose["services"]["gateway"]["environment"]["ADMIN_USER_IDS"]
    assert {"ALERT_CHAT_IDS", "TELEGRAM_TOKEN_FILE", "ALERT_WEBHOOK_URL_FILE"} <= set(env)


def test_prometheus_scrapes_every_app_service(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "infra" / "config" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        name: sd["port"] for job in config["scrape_configs"] for sd in job["dns_sd_configs"] for name in sd["names"]
    }
    for name in APP_SERVICES:
        service = compose["services"][name]
        aliases = service.get("networks", {}).get("default", {}).get("aliases", [])
        found = [targets[n] for n in (name, *aliases) if n in targets]
        assert found == [int(service["environment"]["METRICS_PORT"])], name


def test_a_new_analyzer_in_compose_is_its_command_and_nothing_else(compose: dict[str, Any]) -> None:
    """docs/compose.md: a new mode needs one more block that differs from the others only in its command; Prometheus
    finds it by the alias every analyzer block shares, not by a list of names."""
    analyzers = {name: dict(s) for name, s in compose["services"].items() if name.startswith("analyzer-")}
    assert set(analyzers) == {f"analyzer-{mode.lower()}" for mode in MODES}

    # What differs: the command, and the account it logs in as (its user and its secret).
    def shape(block: dict[str, Any]) -> dict[str, Any]:
        env = {k: v for k, v in block["environment"].items() if k != "NATS_USER"}
        return {k: v for k, v in block.items() if k not in ("command", "secrets", "environment")} | {"env": env}

    shapes = [shape(block) for block in analyzers.values()]
    assert all(s == shapes[0] for s in shapes)
    prometheus = (REPO / "infra" / "config" / "prometheus" / "prometheus.yml").read_text()
    for name in analyzers:
        assert name not in prometheus


def test_the_dashboard_asks_only_for_metrics_that_exist() -> None:
    dashboard = json.loads((REPO / "infra" / "config" / "grafana" / "dashboards" / "voice-insight.json").read_text())
    known = {sample.name for family in REGISTRY.collect() for sample in family.samples} | {
        family.name for family in REGISTRY.collect()
    }
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b(voice_insight_[a-z_]+)", expr)}
    assert len(used) >= 10
    for name in used:
        base = re.sub(r"_(bucket|count|sum|total)$", "", name)
        assert name in known or base in known, name
    provisioning = yaml.safe_load(
        (REPO / "infra" / "config" / "grafana" / "provisioning" / "dashboards" / "voice-insight.yml").read_text()
    )
    assert provisioning["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), rest.strip()))
        else:
            assert instruction.upper() == "ARG", "only ARG may come before the first FROM"
    return stages


def test_dockerfile_rules() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage"
    final = stages[-1]
    instructions = dict(final)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert base and re.match(r"python:3\.1\d-slim$", base.group(1)), "slim Python base by default"
    assert final[0][1].startswith("${BASE_IMAGE}"), "a base of one's own where there is no registry"
    assert "ARG WHISPER_BAKE=packaged-base" in (REPO / "Dockerfile").read_text(), "the image carries a model"
    user = [rest for ins, rest in final if ins == "USER"]
    assert user and user[-1] not in ("root", "0"), "runs as a non-root user"
    assert instructions.get("STOPSIGNAL") == "SIGTERM"
    assert json.loads(instructions["ENTRYPOINT"]) == ["voice-insight"]
    assert "HEALTHCHECK" in instructions
    final_runs = " ".join(rest for ins, rest in final if ins == "RUN")
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in final_runs, f"no build tools or installs in the final stage: {tool}"
    build_runs = [rest for ins, rest in stages[0] if ins == "RUN"]
    assert any("-r requirements.lock" in r and "--no-deps" in r for r in build_runs), "deterministic install"
    ignored = (REPO / ".dockerignore").read_text().split()
    for path in (".git", ".venv", ".env", "tests", ".cache"):
        assert path in ignored


def test_the_lock_pins_every_runtime_dependency() -> None:
    import tomllib

    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"unpinned: {line}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0]
        assert re.sub(r"[-_.]+", "-", name).lower() in pins, name


def test_env_example_lists_every_setting_without_values_for_secrets() -> None:
    entries = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for variable in KNOWN_VARIABLES | {"GRAFANA_ADMIN_PASSWORD", "WHISPER_BAKE"}:
        assert variable in entries, variable
    for secret in (
        "TELEGRAM_TOKEN",
        "OPENAI_API_KEY",
        "NATS_PASSWORD_FILE",
        "GRAFANA_ADMIN_PASSWORD",
        "WEBHOOK_SECRET",
        "TELEGRAM_API_HASH",
    ):
        assert entries[secret] == "", f"{secret} must not have a value in the example"
    compose_vars = set(re.findall(r"\$\{([A-Z_]+)", (REPO / "compose.yaml").read_text()))
    assert compose_vars <= set(entries), compose_vars - set(entries)


def test_the_shipped_modes_are_installed_with_the_package() -> None:
    """The image installs the package (not the checkout): every file `infra` reads at run time must be data."""
    import tomllib

    def covered(path: str, pattern: str) -> bool:  # setuptools' globs: `*` stays within one folder
        return re.fullmatch(re.escape(pattern).replace(r"\*", "[^/]*"), path) is not None

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["infra"]
    files = [p.relative_to(REPO / "infra").as_posix() for p in (REPO / "infra" / "config" / "modes").glob("*.toml")]
    assert files and all(any(covered(f, pattern) for pattern in patterns) for f in files), files
    assert not covered("config/modes/DEFAULT.toml", "config/*")


def test_bootstrap_says_clearly_when_python_is_too_old(tmp_path: Path) -> None:
    """Issue 11: on a machine whose python3 is 3.10, one clear line, before anything is installed."""
    old = tmp_path / "python3.10"
    old.write_text(
        '#!/bin/sh\ncase "$*" in *version_info*\\<*) exit 1;; *python_version*) echo 3.10.12;; *) exit 0;; esac\n'
    )
    old.chmod(0o755)
    done = subprocess.run(
        ["bash", str(REPO / "infra" / "bootstrap.sh"), "up"],
        env={**os.environ, "PYTHON": str(old)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs Python 3.11 or newer; " in done.stderr and "is 3.10.12" in done.stderr


def test_the_systemd_unit_runs_up_and_does_not_restart_on_bad_settings() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "infra" / "systemd" / "voice-insight.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("/.venv/bin/voice-insight up")
    assert service["ExecStart"].startswith(service["WorkingDirectory"])
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == str(CONFIG_ERROR_EXIT)
    assert float(service["TimeoutStopSec"]) > STOP_GRACE, "systemd waits for the drain before it kills"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


APP_SECRETS = {
    "telegram_token": "TELEGRAM_TOKEN",
    "openai_api_key": "OPENAI_API_KEY",
    "webhook_secret": "WEBHOOK_SECRET",
    "telegram_api_hash": "TELEGRAM_API_HASH",
    "grafana_admin_password": "GRAFANA_ADMIN_PASSWORD",
    "alert_webhook_url": "ALERT_WEBHOOK_URL",
}


def test_every_secret_is_a_file_no_container_environment_shows(compose: dict[str, Any]) -> None:
    """Issue 19: `docker inspect` shows a container's environment; every secret is a mounted file instead."""
    for secret in APP_SECRETS:
        assert compose["secrets"][secret] == {"file": f"${{SECRETS_DIR:-./secrets}}/{secret}"}
    wanted = {
        "gateway": {"telegram_token": "TELEGRAM_TOKEN_FILE", "openai_api_key": "OPENAI_API_KEY_FILE",
                    "webhook_secret": "WEBHOOK_SECRET_FILE"},
        "formatter": {"telegram_token": "TELEGRAM_TOKEN_FILE"},
        "analyzer-default": {"openai_api_key": "OPENAI_API_KEY_FILE"},
        "analyzer-tone": {"openai_api_key": "OPENAI_API_KEY_FILE"},
        "registrar": {"openai_api_key": "OPENAI_API_KEY_FILE"},
        "asker": {"openai_api_key": "OPENAI_API_KEY_FILE"},
        "telegram-bot-api": {"telegram_api_hash": "TELEGRAM_API_HASH_FILE"},
        "grafana": {"grafana_admin_password": "GF_SECURITY_ADMIN_PASSWORD__FILE"},
        "alertmanager": {"telegram_token": "TELEGRAM_TOKEN_FILE", "alert_webhook_url": "ALERT_WEBHOOK_URL_FILE"},
    }  # fmt: skip
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for variable in (*APP_SECRETS.values(), "GF_SECURITY_ADMIN_PASSWORD"):
            assert variable not in env, f"{name}: {variable} in its environment"
        for secret, variable in wanted.get(name, {}).items():
            assert secret in service["secrets"] and env[variable] == f"/run/secrets/{secret}", name
        mounted = {s for s in service.get("secrets", []) if isinstance(s, str) and not s.startswith("nats_")}
        assert mounted == set(wanted.get(name, {})), f"{name} mounts only what it reads"


def test_bootstrap_writes_the_app_secrets_from_the_environment_or_env_once(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "bootstrap.sh").write_text((REPO / "infra" / "bootstrap.sh").read_text())
    (tmp_path / ".env").write_text('export TELEGRAM_TOKEN="123:from-dotenv"\nOPENAI_API_KEY=\nWEBHOOK_SECRET=old\n')
    env = {**os.environ, "WEBHOOK_SECRET": "w" * 32, "SECRETS_DIR": str(tmp_path / "kept")}
    run = ["bash", str(tmp_path / "infra" / "bootstrap.sh"), "secrets"]
    subprocess.run(run, check=True, capture_output=True, cwd=tmp_path, env=env)
    folder = tmp_path / "kept"
    written = {secret: (folder / secret).read_text() for secret in APP_SECRETS}
    assert written["telegram_token"] == "123:from-dotenv" and written["webhook_secret"] == "w" * 32
    assert written["openai_api_key"] == "" and written["telegram_api_hash"] == "", "empty: unset"
    assert len(written["grafana_admin_password"]) >= 24
    assert oct(folder.stat().st_mode)[-3:] == "700" and not (tmp_path / "secrets").exists()
    (tmp_path / ".env").write_text("TELEGRAM_TOKEN=123:changed\n")
    subprocess.run(run, check=True, capture_output=True, cwd=tmp_path, env=env)  # a second run keeps them
    assert {secret: (folder / secret).read_text() for secret in APP_SECRETS} == written
    (tmp_path / ".env").write_text("OPENAI_API_KEY = 'sk-given-later'\n")
    subprocess.run(run, check=True, capture_output=True, cwd=tmp_path, env=env)  # an unset one is filled in
    assert (folder / "openai_api_key").read_text() == "sk-given-later"
