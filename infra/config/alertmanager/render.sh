#!/bin/sh
# Writes the config Alertmanager runs from its template (alertmanager.yml, beside this file), filling the
# template's `#render:` lines in from the deployment's settings, then runs the command given, if any:
#   sh render.sh TEMPLATE OUTPUT [COMMAND ARGS...]      (compose: the alertmanager service's entrypoint)
# Settings, from the environment:
#   TELEGRAM_TOKEN_FILE  a file holding the bot's token (compose: the telegram_token secret); empty: no Telegram
#   ALERT_CHAT_IDS       the Telegram chats alerts go to, comma-separated; empty: ADMIN_USER_IDS (each admin's
#                        private chat with the bot: an admin must have started the bot once)
#   TELEGRAM_API_BASE    the Bot API server (default https://api.telegram.org)
#   ALERT_WEBHOOK_URL    where Alertmanager POSTs its webhook JSON, or ALERT_WEBHOOK_URL_FILE, a file holding it
#                        (compose: the alert_webhook_url secret: such URLs often carry a key); empty: no webhook
# A value that is not what it should be stops it with one line naming it (exit 2). The rendered config holds the
# bot's token: it is written 0600 (in compose on a tmpfs, never on a volume); the token and the webhook's URL are
# never printed.
# POSIX sh and awk: it runs in the prom/alertmanager image (busybox) as well as on Debian.
set -eu

fail() {
  echo "alertmanager: $*" >&2
  exit 2
}

[ $# -ge 2 ] || fail "usage: sh render.sh TEMPLATE OUTPUT [COMMAND ARGS...]"
template=$1
output=$2
shift 2
[ -r "$template" ] || fail "no template at $template"

token=""
if [ -n "${TELEGRAM_TOKEN_FILE:-}" ]; then
  [ -r "$TELEGRAM_TOKEN_FILE" ] || fail "TELEGRAM_TOKEN_FILE: cannot read $TELEGRAM_TOKEN_FILE"
  token=$(tr -d ' \t\r\n' < "$TELEGRAM_TOKEN_FILE")
  if [ -n "$token" ] && ! printf '%s\n' "$token" | grep -Eq '^[0-9]+:[A-Za-z0-9_-]+$'; then
    fail "TELEGRAM_TOKEN_FILE does not hold a bot token (digits, a colon, then letters, digits, _ and -)"
  fi
fi

chats=$(printf '%s' "${ALERT_CHAT_IDS:-${ADMIN_USER_IDS:-}}" | tr -d ' \t' | tr -s ',' | sed -e 's/^,//' -e 's/,$//')
if [ -n "$chats" ] && ! printf '%s\n' "$chats" | grep -Eq '^-?[0-9]+(,-?[0-9]+)*$'; then
  fail "ALERT_CHAT_IDS (or ADMIN_USER_IDS) must be comma-separated Telegram chat ids"
fi

check_url() {  # $1: the setting's name, $2: its value
  case "$2" in
    *[[:space:]]* | *\'* | *\"*) fail "$1 must be a URL without spaces or quotes" ;;
    http://?* | https://?*) ;;
    *) fail "$1 must be an http:// or https:// URL" ;;
  esac
}
api=${TELEGRAM_API_BASE:-https://api.telegram.org}
api=${api%/}
check_url TELEGRAM_API_BASE "$api"
webhook=${ALERT_WEBHOOK_URL:-}
if [ -z "$webhook" ] && [ -n "${ALERT_WEBHOOK_URL_FILE:-}" ]; then
  [ -r "$ALERT_WEBHOOK_URL_FILE" ] || fail "ALERT_WEBHOOK_URL_FILE: cannot read $ALERT_WEBHOOK_URL_FILE"
  webhook=$(tr -d '\r\n' < "$ALERT_WEBHOOK_URL_FILE")
fi
[ -z "$webhook" ] || check_url "ALERT_WEBHOOK_URL (or ALERT_WEBHOOK_URL_FILE)" "$webhook"

telegram=""
if [ -n "$token" ] && [ -n "$chats" ]; then
  telegram=yes
elif [ -n "$token" ]; then
  echo "alertmanager: the bot's token is set but no chat: set ALERT_CHAT_IDS or ADMIN_USER_IDS" >&2
elif [ -n "$chats" ]; then
  echo "alertmanager: chats are set but not the bot's token (TELEGRAM_TOKEN_FILE): no Telegram" >&2
fi

umask 077
folder=$(dirname "$output")
mkdir -p "$folder"
R_TOKEN="$token" R_CHATS="$chats" R_API="$api" R_WEBHOOK="$webhook" R_TELEGRAM="$telegram" awk '
  function indent(line) { match(line, /^ */); return substr(line, 1, RLENGTH) }
  /^ *#render: webhook *$/ {
    if (ENVIRON["R_WEBHOOK"] != "") {
      i = indent($0)
      print i "webhook_configs:"
      print i "  - url: '\''" ENVIRON["R_WEBHOOK"] "'\''"
      print i "    send_resolved: true"
    }
    next
  }
  /^ *#render: telegram( silent)? *$/ {
    if (ENVIRON["R_TELEGRAM"] != "") {
      i = indent($0)
      silent = ($0 ~ /silent/) ? "true" : "false"
      print i "telegram_configs:"
      n = split(ENVIRON["R_CHATS"], chats, ",")
      for (k = 1; k <= n; k++) {
        print i "  - bot_token: '\''" ENVIRON["R_TOKEN"] "'\''"
        print i "    chat_id: " chats[k]
        print i "    api_url: '\''" ENVIRON["R_API"] "'\''"
        print i "    parse_mode: HTML"
        print i "    disable_notifications: " silent
        print i "    message: '\''{{ template \"voice_insight.telegram\" . }}'\''"
        print i "    send_resolved: true"
      }
    }
    next
  }
  /^ *#render:/ { print "alertmanager: unknown line in the template: " $0 > "/dev/stderr"; failed = 1; exit 2 }
  { print }
  END { if (failed) exit 2 }
' "$template" > "$output.tmp" || { rm -f "$output.tmp"; exit 2; }
mv "$output.tmp" "$output"
# The message templates the config names (`templates:`), relative to it: beside the rendered config too.
for file in "$(dirname "$template")"/*.tmpl; do
  [ -e "$file" ] || continue
  [ "$file" -ef "$folder/${file##*/}" ] || cp "$file" "$folder/"
done

said=""
[ -z "$telegram" ] || said="$(printf '%s' "$chats" | tr ',' '\n' | grep -c .) Telegram chat(s)"
[ -z "$webhook" ] || said="${said:+$said and }the webhook"
if [ -n "$said" ]; then
  echo "alertmanager: alerts go to $said" >&2
else
  echo "alertmanager: WARNING: no receiver is set (TELEGRAM_TOKEN_FILE with ALERT_CHAT_IDS or ADMIN_USER_IDS," \
    "or ALERT_WEBHOOK_URL): alerts reach nobody" >&2
fi
[ $# -eq 0 ] || exec "$@"
