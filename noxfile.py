"""Every supported Python: the fast layer of the suite on each interpreter this machine has.

`bash infra/bootstrap.sh test` runs `nox -s fast` first, the fast layer (`-m "not slow"`) on every *other*
supported Python it finds (pyenv's shims, or `python3.X` on the PATH), then the whole suite on the machine's
`python3` (the project's `.venv`). An interpreter that is not installed is skipped, not failed: a Debian 12
machine has 3.11 only unless pyenv adds more; Debian 13's `python3` is 3.13.

    .venv/bin/nox -s fast                 # every other supported Python found here
    .venv/bin/nox -s fast-3.13            # one of them
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

SUPPORTED = ("3.11", "3.12", "3.13", "3.14")
"""`requires-python = ">=3.11"`: every release since, as far as one has been made."""

RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
"""The interpreter that runs nox is the project's own `.venv`, on which the whole suite runs already."""


def _pyenv_interpreters() -> None:
    """pyenv's shims answer `python3.12` only for the versions selected as global or local; nox looks interpreters
    up on the PATH, so every installed pyenv version's `bin` goes at its end (what is on the PATH already wins)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(str(bin_dir) for bin_dir in root.glob("versions/*/bin") if bin_dir.is_dir())
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *found])


_pyenv_interpreters()
nox.options.error_on_missing_interpreters = False  # "every supported Python it finds", not every one there is
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["fast"]


@nox.session(python=[version for version in SUPPORTED if version != RUNNING])
def fast(session: nox.Session) -> None:
    """The fast layer: contracts, settings, the bus against a real nats-server, rendering, doubles."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=list(SUPPORTED), default=False)
def full(session: nox.Session) -> None:
    """The whole suite on one interpreter (`nox -s full-3.13`): what a release checks beyond CI's fast layer."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
