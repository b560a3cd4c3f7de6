#!/usr/bin/env bash
# One command per purpose on a fresh Debian/Ubuntu machine:
#   bash infra/bootstrap.sh up     install, then run the whole stack (`voice-insight up`)
#   bash infra/bootstrap.sh test   install with test extras and system tools, then run the test suite
# Idempotent: a second run reuses the virtual environment and installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-}"; shift || true
case "$what" in up|test) ;; *) echo "usage: bash infra/bootstrap.sh up|test [args]" >&2; exit 2;; esac

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip

if [ "$what" = up ]; then
  .venv/bin/python -m pip install --quiet -e .
  exec .venv/bin/voice-insight up "$@"
fi

# Tests need espeak-ng (speech) and ffmpeg (Opus encoding) from the system's packages.
if ! command -v espeak-ng >/dev/null || ! command -v ffmpeg >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq espeak-ng ffmpeg >/dev/null
fi
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/voice-insight install-model .cache/models/whisper-base >/dev/null
# Lint, format and types first: a minute's worth of checks before the suite's ten.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
