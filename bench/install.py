"""What a first install takes: `bash infra/bootstrap.sh install` in a fresh clone, timed, and what it leaves on disk.

    .venv/bin/python bench/install.py [--keep]

Clones this repository's current commit into a temporary folder and runs the README's install step there with
pip's cache off (`PIP_NO_CACHE_DIR=1`), so every wheel is fetched from the package index this machine is set up
with. It prints the wall time and the sizes of the virtual environment (`.venv`) and of the packaged Whisper
model (`.voice-insight`), and writes them to bench/results/install.json. How long the download takes depends on
the index's distance: a mirror on the local network makes the time mostly unpacking.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import record  # noqa: E402


def size_mb(path: Path) -> float:
    total = sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return round(total / 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the clone behind and say where")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vi-install-"))
    clone = work / "voice-insight"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1"}
    env.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    done = subprocess.run(["bash", "infra/bootstrap.sh", "install"], cwd=clone, env=env, capture_output=True, text=True)
    seconds = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        sys.exit(f"bootstrap.sh install failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = {
        "install_seconds": seconds,
        "venv_mb": size_mb(clone / ".venv"),
        "model_mb": size_mb(clone / ".voice-insight"),
    }
    print(f"bootstrap.sh install: {seconds:.0f} s; .venv {result['venv_mb']:.0f} MB, model {result['model_mb']:.0f} MB")
    if args.keep:
        print(f"the clone is in {clone}")
    else:
        shutil.rmtree(work)
    print(f"written to {record.write(REPO / 'bench' / 'results' / 'install.json', result)}")


if __name__ == "__main__":
    main()
