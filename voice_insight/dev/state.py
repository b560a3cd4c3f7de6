"""Where a running development stack is: a small JSON file in its state folder, so `dev send` (another process,
perhaps another terminal) finds the stack's Telegram double, and a second `dev` in the same folder refuses to
start a second nats-server on the same store.

The file is written when the stack starts and again when it is ready, and removed when it stops. One left behind by
a stack that was killed counts as no stack: its process is gone, or its double no longer answers.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "dev.json"


def folder(state_dir: Path) -> Path:
    """The dev stack's own state folder (its NATS store, its accounts' passwords): never `up`'s, so the two can run
    side by side from one checkout."""
    return state_dir.resolve() / "dev"


@dataclass(frozen=True)
class Running:
    pid: int
    telegram: str
    """The Telegram double's base URL: the Bot API the gateway polls, and the `/_control` routes `send` uses."""
    nats: str = ""
    ready: bool = False
    """The gateway polls and every mode the stack runs has announced itself: a note sent now gets every analysis."""


class StackFile:
    def __init__(self, state_dir: Path) -> None:
        self.path = folder(state_dir) / FILE_NAME

    def write(self, running: Running) -> None:
        """Atomically: `send` may read it at any moment."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(running)))
        partial.replace(self.path)

    def read(self) -> Running | None:
        """The stack the file describes, if it is running."""
        try:
            found = Running(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return found if _alive(found.pid) and _answers(found.telegram) else None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(telegram: str) -> bool:
    try:
        with urllib.request.urlopen(f"{telegram}/_control/messages/0", timeout=3):
            return True
    except (OSError, urllib.error.URLError):
        return False
