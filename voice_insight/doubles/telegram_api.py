"""A Telegram Bot API double: a real HTTP server on 127.0.0.1 that answers like api.telegram.org.

aiogram reaches it through `TELEGRAM_API_BASE`. It implements what the bot uses (getMe, getUpdates with long
polling and offset confirmation, getFile, file download, sendMessage, editMessageText, sendDocument with uploads
as aiogram sends them, answerCallbackQuery, getChatMember, deleteWebhook, setMyCommands) with the real response
shapes, status codes and error descriptions, and the real limits: 4096 characters of text after entity parsing,
strict HTML parse mode, 20 MB for getFile, 64 bytes of callback data, 1024 characters of caption, 200 of a
press's answer, which Telegram takes for about 15 s only ("query is too old").

It plays the user and the group too: private chats, groups (negative ids) with members and admins, forum
topics (`message_thread_id`), replies that quote the message they answer, mentions, inline keyboards and their
presses (`press`), and the bot's privacy mode, on by default: in a group the bot sees commands, mentions and
replies to itself, nothing else, unless it is the group's admin.

It misbehaves the way Telegram does, always or on demand:

* flood control, always on: a token bucket per chat (a burst of 4, then one a second; a group 20 a minute) and
  one for the bot (30 a second) over sendMessage, editMessageText and sendDocument; beyond them `429 Too Many
  Requests: retry after N` with `parameters.retry_after`; `flood(chat, seconds)` forces one;
* failing and slow file downloads (`fail_downloads`, `download_delay`);
* outages: every call answered `502 Bad Gateway` (`outage`), or connections dropped without an answer
  (`drop_connections`);
* edits held for a while and dropped if the client hangs up meanwhile (`hold_edits`), as a request that
  times out on the client's side may or may not have landed.

The test side talks to it in-process: `send_media` injects an update as if a user sent a voice note, and the
chat log shows exactly what the user would see.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from voice_insight.doubles import LoopbackServer

DOWNLOAD_LIMIT = 20 * 1024 * 1024
LOCAL_DOWNLOAD_LIMIT = 2000 * 1024 * 1024
MESSAGE_LIMIT = 4096
ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
}
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:=\"[^\"]*\"|='[^']*'|=[^\s>]+)?)*)\s*>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")
_ENTITY_VALUES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class BadRequest(Exception):
    def __init__(self, description: str, code: int = 400) -> None:
        super().__init__(description)
        self.description = description
        self.code = code


def parse_html(text: str) -> str:
    """Visible text of a Telegram-HTML message, raising BadRequest exactly where Telegram would refuse."""
    visible: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG.match(text, i)
            if not m:
                raise BadRequest(
                    f"Bad Request: can't parse entities: Unexpected character '<' at byte offset {len(text[:i].encode())}"
                )
            closing, tag = m.group(1) == "/", m.group(2).lower()
            if tag not in ALLOWED_TAGS:
                raise BadRequest(
                    f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}" at byte offset {len(text[:i].encode())}'
                )
            if closing:
                if not stack or stack[-1] != tag:
                    raise BadRequest(
                        f'Bad Request: can\'t parse entities: Unmatched end tag at byte offset {len(text[:i].encode())}, expected "</{stack[-1] if stack else ""}>", found "</{tag}>"'
                    )
                stack.pop()
            else:
                stack.append(tag)
            i = m.end()
        elif ch == "&":
            m = _ENTITY.match(text, i)
            if not m:
                raise BadRequest(
                    f"Bad Request: can't parse entities: Character '&' is reserved and must be escaped at byte offset {len(text[:i].encode())}"
                )
            name = m.group(1)
            visible.append(
                _ENTITY_VALUES.get(name) or chr(int(name[2:], 16) if name.startswith("#x") else int(name[1:]))
            )
            i = m.end()
        elif ch == ">":
            raise BadRequest(
                f"Bad Request: can't parse entities: Character '>' is reserved and must be escaped at byte offset {len(text[:i].encode())}"
            )
        else:
            visible.append(ch)
            i += 1
    if stack:
        raise BadRequest(
            f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"{stack[-1]}\""
        )
    return "".join(visible)


def utf16_len(value: str) -> int:
    return len(value.encode("utf-16-le")) // 2


class Signal:
    """Something changed (the bot wrote, an update came): whoever waits looks again. No lock: the double's request
    handlers only fire it, so no test that waits (or stopped waiting) can hold up the Bot API's answer, as an
    `asyncio.Condition`, whose notifier must take its lock, could."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Until the next change, or `timeout` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass


@dataclass
class SentMessage:
    message_id: int
    chat_id: int
    text: str
    """Visible text, after parsing (what the user reads)."""
    html: str
    reply_to: int | None
    history: list[str] = field(default_factory=list)
    """Every visible text this message has shown, oldest first."""
    times: list[float] = field(default_factory=list)
    """When each of those texts appeared (time.time())."""
    thread_id: int | None = None
    keyboard: list[list[dict[str, Any]]] = field(default_factory=list)
    """The inline keyboard under the message: rows of buttons (`text`, `callback_data`)."""
    document: SentDocument | None = None
    silent: bool = False
    """Sent with `disable_notification`: it reached the chat without notifying anyone."""
    deleted: bool = False
    """The bot deleted it (`deleteMessage`): the chat no longer shows it."""

    def button(self, starting: str) -> dict[str, Any]:
        """The first button whose text starts with `starting`."""
        found = [b for row in self.keyboard for b in row if b["text"].startswith(starting)]
        assert found, (
            f"no button {starting!r} under the message; there are {[b['text'] for r in self.keyboard for b in r]}"
        )
        return found[0]


@dataclass
class SentDocument:
    file_name: str
    content: bytes
    caption: str


@dataclass
class StoredFile:
    file_id: str
    data: bytes
    path: str
    reported_size: int
    unique_id: str = ""
    local_path: str | None = None
    """Where a local Bot API server (`--local`) keeps the file on its disk."""


@dataclass
class Bucket:
    """Telegram-like flood control: `capacity` calls at once, refilled at `rate` per second."""

    capacity: float
    rate: float
    level: float = -1.0
    stamp: float = 0.0

    def take(self) -> float:
        """0 if a call may pass now (and takes a token), else the seconds until one may."""
        now = time.monotonic()
        if self.level < 0:
            self.level, self.stamp = self.capacity, now
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1:
            self.level -= 1
            return 0.0
        return (1 - self.level) / self.rate


@dataclass
class Chat:
    messages: list[SentMessage] = field(default_factory=list)

    def by_id(self, message_id: int) -> SentMessage | None:
        return next((m for m in self.messages if m.message_id == message_id), None)


class TelegramDouble(LoopbackServer):
    BOT_USER: dict[str, Any] = {
        "id": 7000000001,
        "is_bot": True,
        "first_name": "Voice Insight",
        "username": "voice_insight_bot",
    }

    def __init__(self, token: str) -> None:
        self.token = token
        self.chats: dict[int, Chat] = {}
        self.files: dict[str, StoredFile] = {}
        self.last_unique_id = ""
        """The `file_unique_id` of the last file sent: what a forward of it carries."""
        self.updates: list[dict[str, Any]] = []
        self.sent_updates: dict[int, dict[str, Any]] = {}
        self.confirmed_offset = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_get_file: int | None = None
        self.flood_control = True
        self.bot_limit = True
        """The bot-wide 30 a second (per-chat limits stay): off, as if Telegram allowed this bot more."""
        self.floods: list[dict[str, Any]] = []
        """Every 429 this double answered: chat, method, retry_after."""
        self._chat_buckets: dict[int, Bucket] = {}
        self._bot_bucket = Bucket(30, 30)
        self._forced_floods: dict[int, int] = {}
        self._forced_retry_after = 2
        self.download_failures: list[int] = []
        """HTTP statuses the file server answers with, one per download, until empty."""
        self.download_delay = 0.0
        self.down = False
        self.dropping = False
        self.edit_hold = 0.0
        self.dropped_edits = 0
        self.gone_chats: set[int] = set()
        self.refusals: dict[int, list[tuple[int, str, str | None]]] = {}
        self.send_hold = 0.0
        self.privacy_mode = True
        """Like a bot's default: in a group it sees commands, mentions and replies to itself, nothing else,
        unless it is an admin of the group."""
        self.members: dict[tuple[int, int], str] = {}
        """(chat, user) → status in a group: `creator`, `administrator`, or `member` (the default)."""
        self.forums: set[int] = set()
        self.names: dict[int, str] = {}
        """Users' first names by id, as Telegram shows them ("User" for anyone not named here)."""
        self.callback_answers: dict[str, dict[str, Any]] = {}
        self.webhook: dict[str, str] | None = None
        """The webhook the bot set (`url`, `secret_token`): updates are POSTed there instead of polled."""
        self.webhook_posts: list[tuple[int, int]] = []
        """Every webhook POST: (update id, the bot's HTTP status; 0 if the connection failed)."""
        self._poster: asyncio.Task[None] | None = None
        self.allowed_updates: list[str] | None = None
        """What the bot last asked for (getUpdates or setWebhook `allowed_updates`); None: never said, Telegram's
        default (every type but `chat_member`, `message_reaction` and `message_reaction_count`)."""
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        """setMyCommands: (scope type, language_code or "") → the commands, as Telegram keeps a menu per pair."""
        self.callback_ttl = 15.0
        """Seconds a button press may be answered in; later, "query is too old" (as Telegram says)."""
        self.local_mode = False
        """Play a local Bot API server (`--local`): files up to 2 GB, `getFile` answering with a path on disk."""
        self.local_dir = Path(tempfile.mkdtemp(prefix="telegram-bot-api-"))
        self.local_owner: tuple[int, int] | None = None
        """Whose files a local server writes (uid, gid): the aiogram/telegram-bot-api image runs it as 101:101,
        and TDLib creates them 0600 in 0700 folders, readable by that user alone. None: the test's own user."""
        self.local_download_seconds = 0.0
        self._local_downloads: dict[str, asyncio.Task[None]] = {}
        """How long a local server's `getFile` blocks while it downloads the file from Telegram (it answers only
        once the file is on its disk: minutes for a big file on an ordinary link)."""
        self._open_queries: dict[str, float] = {}
        self._new_update = Signal()
        self._changed = Signal()
        self._ids = itertools.count(1000)
        # Telegram numbers updates on from a random point (after a quiet week it picks a new one).
        self._update_ids = itertools.count(random.randint(1, 2**30))

    # --- server -----------------------------------------------------------------------------------

    async def stop(self) -> None:
        if self._poster is not None:
            self._poster.cancel()
        await super().stop()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.can_read_body:
            form = await request.post()
            for k, v in form.items():
                if isinstance(v, web.FileField):  # an uploaded file (multipart/form-data), as sendDocument gets it
                    params[k] = {"filename": v.filename, "content": v.file.read()}
                else:
                    params[k] = v
        return params

    # --- misbehaviour on demand ---------------------------------------------------------------------

    def flood(self, chat_id: int, retry_after: int = 2, count: int = 1) -> None:
        """The next `count` writes to this chat get a 429 with `retry_after`, whatever the pace."""
        self._forced_floods[chat_id] = count
        self._forced_retry_after = retry_after

    def lift_bot_limit(self) -> None:
        self.bot_limit = False

    def fail_downloads(self, *statuses: int) -> None:
        self.download_failures = list(statuses)

    def outage(self, down: bool = True) -> None:
        self.down = down

    def drop_connections(self, dropping: bool = True) -> None:
        self.dropping = dropping

    def hold_edits(self, seconds: float) -> None:
        self.edit_hold = seconds

    def refuse_writes(self, chat_id: int, *descriptions: str, code: int = 400, method: str | None = None) -> None:
        """The next writes to this chat (only calls of `method`, if given) are refused with these descriptions,
        one each: `400 Bad Request` is what Telegram says of a message it will not take ("message is too long",
        "can't parse entities: …"), `500 Internal Server Error` what it says now and then of any request."""
        prefix = "Bad Request" if code == 400 else "Internal Server Error" if code == 500 else "Error"
        self.refusals.setdefault(chat_id, []).extend((code, f"{prefix}: {d}", method) for d in descriptions)

    def hold_sends(self, seconds: float) -> None:
        """New messages are answered only after `seconds`, as a Bot API under load does."""
        self.send_hold = seconds

    def forget_chat(self, chat_id: int) -> None:
        """The chat is gone for the bot (deleted, or the bot was removed): every write is 'chat not found'."""
        self.gone_chats.add(chat_id)

    def _refusal_check(self, method: str, params: dict[str, Any]) -> None:
        if method.lower() not in ("sendmessage", "editmessagetext", "senddocument", "deletemessage"):
            return
        waiting = self.refusals.get(int(params.get("chat_id", 0)), [])
        for index, (code, description, only) in enumerate(waiting):
            if only is None or only.lower() == method.lower():
                del waiting[index]
                raise BadRequest(description, code)

    def _flood_check(self, method: str, params: dict[str, Any]) -> int:
        """Seconds to wait if this call is over the limits (0 if it may pass)."""
        if method.lower() not in ("sendmessage", "editmessagetext", "senddocument"):
            return 0
        chat_id = int(params.get("chat_id", 0))
        if self._forced_floods.get(chat_id, 0) > 0:
            self._forced_floods[chat_id] -= 1
            return self._forced_retry_after
        if not self.flood_control:
            return 0
        bucket = self._chat_buckets.setdefault(chat_id, Bucket(20, 1 / 3) if chat_id < 0 else Bucket(4, 1))
        wait = max(self._bot_bucket.take() if self.bot_limit else 0.0, bucket.take())
        return int(wait) + 1 if wait > 0 else 0

    async def _api(self, request: web.Request) -> web.StreamResponse:
        if self.dropping:
            assert request.transport is not None
            request.transport.close()  # a dropped connection: no status line, nothing
            return web.Response()
        if self.down:
            return web.json_response({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status=502)
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append((method, params))
        handler = getattr(self, f"_m_{method.lower()}", None)
        if handler is None:
            return web.json_response(
                {"ok": False, "error_code": 404, "description": "Not Found: method not found"}, status=404
            )
        if retry_after := self._flood_check(method, params):
            self.floods.append({"chat_id": params.get("chat_id"), "method": method, "retry_after": retry_after})
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {retry_after}",
                    "parameters": {"retry_after": retry_after},
                },
                status=429,
            )
        if method.lower() == "sendmessage" and self.send_hold:
            await asyncio.sleep(self.send_hold)
        if method.lower() == "editmessagetext" and self.edit_hold:
            await asyncio.sleep(self.edit_hold)
            if request.transport is None or request.transport.is_closing():
                self.dropped_edits += 1  # the client hung up while we held it: the edit never happens
                return web.Response(status=499)
        try:
            self._refusal_check(method, params)
            result = await handler(params)
        except BadRequest as exc:
            return web.json_response(
                {"ok": False, "error_code": exc.code, "description": exc.description}, status=exc.code
            )
        return web.json_response({"ok": True, "result": result})

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        if self.download_delay:
            await asyncio.sleep(self.download_delay)
        if self.download_failures:
            status = self.download_failures.pop(0)
            return web.json_response(
                {"ok": False, "error_code": status, "description": "Internal Server Error"}, status=status
            )
        path = request.match_info["path"]
        stored = next((f for f in self.files.values() if f.path == path), None)
        if stored is None or self.local_mode:  # a local server serves no files over HTTP: they are on its disk
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # --- Bot API methods --------------------------------------------------------------------------

    async def _m_getme(self, p: dict[str, Any]) -> Any:
        return {
            **self.BOT_USER,
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
        }

    async def _m_deletewebhook(self, p: dict[str, Any]) -> Any:
        self.webhook = None
        return True

    async def _m_setwebhook(self, p: dict[str, Any]) -> Any:
        url = p.get("url") or ""
        parts = urlsplit(url)
        # Telegram wants HTTPS on port 443, 80, 88 or 8443; the double also takes plain HTTP on loopback, since a
        # test has no certificate Telegram would trust.
        if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost"):
            raise BadRequest("Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.get("secret_token") or ""
        if secret and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise BadRequest("Bad Request: secret token contains unallowed characters")
        self.webhook = {"url": url, "secret_token": secret}
        self._remember_allowed(p)
        if self._poster is None:
            self._poster = asyncio.create_task(self._post_updates())
        return True

    async def _m_getwebhookinfo(self, p: dict[str, Any]) -> Any:
        return {
            "url": (self.webhook or {}).get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates),
        }

    async def _post_updates(self) -> None:
        """Webhook delivery as Telegram does it: each update POSTed with the secret header, in order, again and
        again (with a pause) until the bot answers 2xx."""
        async with aiohttp.ClientSession() as session:
            while True:
                while not (self.webhook and self.updates):
                    await self._new_update.wait(60.0)
                hook = dict(self.webhook or {})
                update = self.updates[0]
                if not self._allowed(update):
                    self.updates.remove(update)
                    continue
                try:
                    async with session.post(
                        hook["url"],
                        json=update,
                        headers={"X-Telegram-Bot-Api-Secret-Token": hook["secret_token"]}
                        if hook["secret_token"]
                        else {},
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as response:
                        self.webhook_posts.append((update["update_id"], response.status))
                        delivered = 200 <= response.status < 300
                except (aiohttp.ClientError, TimeoutError):
                    self.webhook_posts.append((update["update_id"], 0))
                    delivered = False
                if delivered:
                    self.updates.remove(update)
                else:
                    await asyncio.sleep(0.5)

    async def _m_setmycommands(self, p: dict[str, Any]) -> Any:
        commands = self._json_param(p, "commands")
        if not isinstance(commands, list) or not all(
            re.fullmatch(r"[a-z0-9_]{1,32}", c.get("command", "")) and 1 <= len(c.get("description", "")) <= 256
            for c in commands
        ):
            raise BadRequest("Bad Request: BOT_COMMANDS_INVALID")
        language = p.get("language_code") or ""
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise BadRequest("Bad Request: LANG_CODE_INVALID")
        scope = (self._json_param(p, "scope") or {}).get("type", "default")
        self.commands[(scope, language)] = commands
        return True

    def _remember_allowed(self, p: dict[str, Any]) -> None:
        allowed = self._json_param(p, "allowed_updates")
        if allowed is not None:  # an omitted list keeps what was asked before, as Telegram does
            self.allowed_updates = list(allowed)

    def _allowed(self, update: dict[str, Any]) -> bool:
        kind = next(k for k in update if k != "update_id")
        if not self.allowed_updates:
            return kind not in ("chat_member", "message_reaction", "message_reaction_count")
        return kind in self.allowed_updates

    async def _m_getupdates(self, p: dict[str, Any]) -> Any:
        if self.webhook:
            raise BadRequest(
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the "
                "webhook first",
                code=409,
            )
        self._remember_allowed(p)
        self.updates = [u for u in self.updates if self._allowed(u)]  # never delivered, as Telegram drops them
        offset = int(p.get("offset") or 0)
        timeout = float(p.get("timeout") or 0)
        limit = int(p.get("limit") or 100)
        if offset:
            self.confirmed_offset = max(self.confirmed_offset, offset)
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        while not self.updates and (remaining := deadline - time.monotonic()) > 0:
            await self._new_update.wait(remaining)
        return self.updates[:limit]

    async def _m_getfile(self, p: dict[str, Any]) -> Any:
        stored = self.files.get(p.get("file_id", ""))
        if stored is None:
            raise BadRequest("Bad Request: invalid file_id")
        if self.fail_get_file:
            raise BadRequest("Internal Server Error", code=self.fail_get_file)
        if stored.reported_size > (LOCAL_DOWNLOAD_LIMIT if self.local_mode else DOWNLOAD_LIMIT):
            raise BadRequest("Bad Request: file is too big")
        path = stored.path
        if self.local_mode:  # `--local`: the absolute path on the server's disk, which the bot shares
            if stored.local_path is None:
                # One download per file, whoever asks meanwhile: a repeated getFile waits for the same one.
                if stored.file_id not in self._local_downloads:
                    self._local_downloads[stored.file_id] = asyncio.create_task(self._download_local(stored))
                await asyncio.shield(self._local_downloads[stored.file_id])
            assert stored.local_path is not None
            path = stored.local_path
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.unique_id or stored.file_id[::-1],
            "file_size": stored.reported_size,
            "file_path": path,
        }

    async def _download_local(self, stored: StoredFile) -> None:
        await asyncio.sleep(self.local_download_seconds)
        stored.local_path = str(await asyncio.to_thread(self._write_local, stored))

    def _write_local(self, stored: StoredFile) -> Path:
        """Where and how telegram-bot-api `--local` keeps a downloaded file: `<dir>/<token>/<kind>s/file_N.oga`,
        folders 0700 and the file 0600, owned by the server's user."""
        folder = self.local_dir / self.token / Path(stored.path).parent
        target = folder / Path(stored.path).name
        folder.mkdir(parents=True, exist_ok=True)
        target.write_bytes(stored.data)
        target.chmod(0o600)
        for part in (folder, folder.parent, self.local_dir / self.token):
            part.chmod(0o700)
        if self.local_owner is not None:
            for owned in (target, folder, folder.parent):
                os.chown(owned, *self.local_owner)
        return target

    def _text(self, p: dict[str, Any]) -> tuple[str, str]:
        raw = p.get("text", "")
        visible = parse_html(raw) if (p.get("parse_mode") or "").upper() == "HTML" else raw
        if not visible.strip():
            raise BadRequest("Bad Request: message text is empty")
        if utf16_len(visible) > MESSAGE_LIMIT:
            raise BadRequest("Bad Request: message is too long")
        return raw, visible

    def _chat_json(self, chat_id: int) -> dict[str, Any]:
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "User"}
        return {
            "id": chat_id,
            "type": "supergroup" if str(chat_id).startswith("-100") else "group",  # as Telegram numbers them
            "title": "Team",
            **({"is_forum": True} if chat_id in self.forums else {}),
        }

    def _message_json(self, m: SentMessage, edited: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": m.message_id,
            "date": int(time.time()),
            "chat": self._chat_json(m.chat_id),
            "from": self.BOT_USER,
        }
        if m.document is not None:
            data["document"] = {
                "file_id": f"BQAC{m.message_id}",
                "file_unique_id": f"AgAD{m.message_id}",
                "file_name": m.document.file_name,
                "file_size": len(m.document.content),
            }
            if m.document.caption:
                data["caption"] = m.document.caption
        else:
            data["text"] = m.text
        if m.thread_id is not None:
            data["message_thread_id"] = m.thread_id
            data["is_topic_message"] = True
        if m.keyboard:
            data["reply_markup"] = {"inline_keyboard": m.keyboard}
        if edited:
            data["edit_date"] = int(time.time())
        return data

    @staticmethod
    def _json_param(p: dict[str, Any], name: str) -> Any:
        value = p.get(name)
        return json.loads(value) if isinstance(value, str) else value

    def _keyboard(self, p: dict[str, Any]) -> list[list[dict[str, Any]]]:
        markup = self._json_param(p, "reply_markup") or {}
        rows = markup.get("inline_keyboard") or []
        for row in rows:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise BadRequest("Bad Request: BUTTON_DATA_INVALID")
                if not button.get("text"):
                    raise BadRequest("Bad Request: text buttons are unallowed in the inline keyboard")
        return rows

    @staticmethod
    def _flag(p: dict[str, Any], name: str) -> bool:
        return p.get(name) in (True, "true", "True")

    def _thread(self, p: dict[str, Any], chat_id: int) -> int | None:
        thread = p.get("message_thread_id")
        if thread is None:
            return None
        if chat_id not in self.forums:
            raise BadRequest("Bad Request: message thread not found")
        return int(thread)

    def _reply_to(self, p: dict[str, Any]) -> int | None:
        reply = self._json_param(p, "reply_parameters") or {}
        reply_to = reply.get("message_id")
        if reply_to is None and p.get("reply_to_message_id"):
            reply_to = int(p["reply_to_message_id"])
        return reply_to

    def _known_chat(self, p: dict[str, Any]) -> int:
        chat_id = int(p.get("chat_id", 0))
        if chat_id in self.gone_chats:
            raise BadRequest("Bad Request: chat not found")
        return chat_id

    async def _m_sendmessage(self, p: dict[str, Any]) -> Any:
        chat_id = self._known_chat(p)
        html, visible = self._text(p)
        message = SentMessage(
            next(self._ids),
            chat_id,
            visible,
            html,
            self._reply_to(p),
            [visible],
            [time.time()],
            thread_id=self._thread(p, chat_id),
            keyboard=self._keyboard(p),
            silent=self._flag(p, "disable_notification"),
        )
        self.chats.setdefault(chat_id, Chat()).messages.append(message)
        await self._notify()
        return self._message_json(message)

    async def _m_senddocument(self, p: dict[str, Any]) -> Any:
        chat_id = self._known_chat(p)
        document = p.get("document")
        if isinstance(document, str) and document.startswith("attach://"):  # how aiogram names an upload
            document = p.get(document.removeprefix("attach://"))
        if not isinstance(document, dict):
            raise BadRequest("Bad Request: there is no document in the request")
        if not document["content"]:
            raise BadRequest("Bad Request: file must be non-empty")
        if len(document["content"]) > 50 * 1024 * 1024:
            raise BadRequest("Request Entity Too Large", code=413)
        caption = p.get("caption") or ""
        if utf16_len(caption) > 1024:
            raise BadRequest("Bad Request: message caption is too long")
        message = SentMessage(
            next(self._ids),
            chat_id,
            caption,
            caption,
            self._reply_to(p),
            [caption],
            [time.time()],
            thread_id=self._thread(p, chat_id),
            document=SentDocument(document["filename"] or "document", document["content"], caption),
            silent=self._flag(p, "disable_notification"),
        )
        self.chats.setdefault(chat_id, Chat()).messages.append(message)
        await self._notify()
        return self._message_json(message)

    async def _m_answercallbackquery(self, p: dict[str, Any]) -> Any:
        query = str(p.get("callback_query_id", ""))
        opened = self._open_queries.pop(query, None)
        if opened is None or time.monotonic() - opened > self.callback_ttl:
            raise BadRequest("Bad Request: query is too old and response timeout expired or query ID is invalid")
        if utf16_len(p.get("text") or "") > 200:
            raise BadRequest("Bad Request: MESSAGE_TOO_LONG")
        show_alert = p.get("show_alert") in (True, "true", "True")
        self.callback_answers[query] = {"text": p.get("text") or "", "show_alert": show_alert}
        await self._notify()
        return True

    async def _m_getchatmember(self, p: dict[str, Any]) -> Any:
        chat_id, user_id = int(p.get("chat_id", 0)), int(p.get("user_id", 0))
        if chat_id > 0:
            raise BadRequest("Bad Request: chat member status can't be read in a private chat")  # not how bots ask
        return self._member_json(chat_id, user_id, self.members.get((chat_id, user_id), "member"))

    def _member_json(self, chat_id: int, user_id: int, status: str) -> dict[str, Any]:
        user = (
            dict(self.BOT_USER)
            if user_id == self.BOT_USER["id"]
            else {"id": user_id, "is_bot": False, "first_name": "User"}
        )
        if status in ("left", "kicked"):
            return {"status": status, "user": user, **({"until_date": 0} if status == "kicked" else {})}
        if status == "creator":
            return {"status": "creator", "user": user, "is_anonymous": False}
        if status == "administrator":
            rights = (
                "can_manage_chat can_delete_messages can_manage_video_chats can_restrict_members can_promote_members "
                "can_change_info can_invite_users can_post_stories can_edit_stories can_delete_stories can_send_welcome_messages"
            ).split()
            return {
                "status": "administrator",
                "user": user,
                "can_be_edited": False,
                "is_anonymous": False,
                **{right: right != "can_promote_members" for right in rights},
            }
        return {"status": "member", "user": user}

    async def _m_editmessagetext(self, p: dict[str, Any]) -> Any:
        chat = self.chats.get(self._known_chat(p))
        message = chat.by_id(int(p.get("message_id", 0))) if chat else None
        if message is None:
            raise BadRequest("Bad Request: message to edit not found")
        html, visible = self._text(p)
        keyboard = self._keyboard(p)
        if html == message.html and keyboard == message.keyboard:
            raise BadRequest(
                "Bad Request: message is not modified: specified new message content and reply markup are exactly "
                "the same as a current content and reply markup of the message"
            )
        message.html, message.text, message.keyboard = html, visible, keyboard
        message.history.append(visible)
        message.times.append(time.time())
        await self._notify()
        return self._message_json(message, edited=True)

    async def _m_sendchataction(self, p: dict[str, Any]) -> Any:
        return True

    async def _m_deletemessage(self, p: dict[str, Any]) -> Any:
        chat = self.chats.get(self._known_chat(p))
        message = chat.by_id(int(p.get("message_id", 0))) if chat else None
        if message is None or message.deleted:
            raise BadRequest("Bad Request: message to delete not found")
        message.deleted = True
        await self._notify()
        return True

    async def _notify(self) -> None:
        self._changed.fire()

    # --- the user's side --------------------------------------------------------------------------

    async def send_media(
        self,
        chat_id: int,
        data: bytes,
        *,
        kind: str = "voice",
        language_code: str = "en",
        duration: int | None = None,
        mime_type: str = "audio/ogg",
        reported_size: int | None = None,
        file_name: str = "note.ogg",
        forwarded_from: str | None = None,
        from_user: int | None = None,
        thread: int | None = None,
        local_path: Path | None = None,
    ) -> int:
        """Inject an update as if user `chat_id` sent a voice note (or audio, video note, document); in a group
        (a negative `chat_id`), sent by `from_user`, in forum topic `thread`.

        Like Telegram, every send has a file id of its own; the `file_unique_id` is new for a new recording and
        the same for a forward of an earlier file (`forwarded_from`: that file's unique id)."""
        file_id = f"AwACAgIAAx{next(self._ids)}"
        unique_id = forwarded_from or f"AgAD{next(self._ids):08d}"
        size = reported_size if reported_size else len(data)
        if local_path and not reported_size:
            size = await asyncio.to_thread(os.path.getsize, local_path)
        self.files[file_id] = StoredFile(
            file_id,
            data,
            f"{kind}s/file_{len(self.files)}.oga",
            size,
            unique_id,
            str(local_path) if local_path else None,
        )
        self.last_unique_id = unique_id
        attachment: dict[str, Any] = {
            "file_id": file_id,
            "file_unique_id": unique_id,
            "file_size": size,
        }
        if kind in ("voice", "audio", "video_note", "video"):  # the real API always reports these durations
            attachment["duration"] = duration if duration is not None else 1
        if kind == "video_note":
            attachment["length"] = 240
        elif kind in ("video", "photo", "sticker"):
            attachment |= {"width": 512, "height": 512}
            if kind == "video":
                attachment["mime_type"] = mime_type if mime_type.startswith("video/") else "video/mp4"
            if kind == "sticker":
                attachment |= {"type": "regular", "is_animated": False, "is_video": False, "emoji": "😂"}
        else:
            attachment["mime_type"] = mime_type
        if kind in ("audio", "document", "video"):
            attachment["file_name"] = file_name
        content: dict[str, Any] = {kind: [attachment] if kind == "photo" else attachment}  # a photo is its sizes
        return await self._push(chat_id, language_code, content, from_user, thread)

    async def bot_added(self, chat_id: int, by_user: int = 1, status: str = "member", language_code: str = "en") -> int:
        """Someone adds the bot to the group (as a member, or straight away as an admin): a `my_chat_member`
        update, as Telegram sends it to the bot; returns its update id."""
        return await self.bot_status(chat_id, status, by_user=by_user, language_code=language_code)

    async def bot_status(self, chat_id: int, status: str, by_user: int = 1, language_code: str = "en") -> int:
        """The bot's own membership changes (`member`, `administrator`, `left`, `kicked`): `my_chat_member`."""
        bot = self.BOT_USER["id"]
        old = self.members.get((chat_id, bot), "left")
        self.members[(chat_id, bot)] = status
        update_id = next(self._update_ids)
        update = {
            "update_id": update_id,
            "my_chat_member": {
                "chat": self._chat_json(chat_id),
                "from": {"id": by_user, "is_bot": False, "first_name": "User", "language_code": language_code},
                "date": int(time.time()),
                "old_chat_member": self._member_json(chat_id, bot, old),
                "new_chat_member": self._member_json(chat_id, bot, status),
            },
        }
        await self._deliver(update)
        return update_id

    async def send_text(
        self,
        chat_id: int,
        text: str,
        language_code: str = "en",
        *,
        reply_to: int | None = None,
        from_user: int | None = None,
        thread: int | None = None,
    ) -> int:
        """A text message; a leading `/command` and any `@username` get their entities, as Telegram marks them."""
        entities = (
            [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] if text.startswith("/") else []
        )
        entities += [
            {"type": "mention", "offset": m.start(), "length": m.end() - m.start()}
            for m in re.finditer(r"@[A-Za-z0-9_]{5,32}", text)
        ]
        content: dict[str, Any] = {"text": text, **({"entities": entities} if entities else {})}
        if reply_to is not None:
            content["reply_to_message"] = self._original(chat_id, reply_to)
        return await self._push(chat_id, language_code, content, from_user, thread)

    def _original(self, chat_id: int, message_id: int) -> dict[str, Any]:
        """The message a reply quotes, as Telegram embeds it: a user's, or one of the bot's own."""
        if message_id in self.sent_updates:
            return {k: v for k, v in self.sent_updates[message_id]["message"].items() if k != "reply_to_message"}
        mine = self.chats.get(chat_id, Chat()).by_id(message_id)
        assert mine is not None, f"no message {message_id} in chat {chat_id}"
        return self._message_json(mine)

    async def press(
        self, chat_id: int, message_id: int, data: str, from_user: int | None = None, language_code: str = "en"
    ) -> str:
        """The user presses an inline button under the bot's message: a `callback_query` update; returns its id,
        under which `callback_answers` holds what the bot answered (a toast, or an alert)."""
        message = self.chats[chat_id].by_id(message_id)
        assert message is not None
        assert any(b.get("callback_data") == data for row in message.keyboard for b in row), "no such button"
        query = f"{next(self._ids)}{random.randint(10**8, 10**9)}"
        self._open_queries[query] = time.monotonic()
        sender = from_user or (chat_id if chat_id > 0 else 1)
        update = {
            "update_id": next(self._update_ids),
            "callback_query": {
                "id": query,
                "from": {"id": sender, "is_bot": False, "first_name": "User", "language_code": language_code},
                "message": self._message_json(message),
                "chat_instance": str(abs(chat_id)),
                "data": data,
            },
        }
        await self._deliver(update)
        return query

    def _sees(self, chat_id: int, content: dict[str, Any]) -> bool:
        """Whether the bot gets a group message at all: with privacy mode on, only commands, mentions of it and
        replies to its own messages (all of them when it is the group's admin)."""
        if chat_id > 0 or not self.privacy_mode or self.members.get((chat_id, self.BOT_USER["id"])) == "administrator":
            return True
        body = content.get("text") or content.get("caption") or ""
        replied = content.get("reply_to_message") or {}
        return (
            body.startswith("/")
            or f"@{self.BOT_USER['username']}".lower() in body.lower()
            or replied.get("from", {}).get("id") == self.BOT_USER["id"]
        )

    async def _push(
        self,
        chat_id: int,
        language_code: str,
        content: dict[str, Any],
        from_user: int | None = None,
        thread: int | None = None,
    ) -> int:
        """A message from a user: in their private chat, or (a negative `chat_id`, like Telegram's) in a group,
        where the bot may not even see it (privacy mode)."""
        message_id = next(self._ids)
        sender = from_user or (chat_id if chat_id > 0 else 1)
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat_json(chat_id),
            "from": {
                "id": sender,
                "is_bot": False,
                "first_name": self.names.get(sender, "User"),
                "language_code": language_code,
            },
            **content,
        }
        if thread is not None:
            assert chat_id in self.forums, "topics exist only in forum groups"
            message |= {"message_thread_id": thread, "is_topic_message": True}
        update = {"update_id": next(self._update_ids), "message": message}
        self.sent_updates[message_id] = update
        if self._sees(chat_id, content):
            await self._deliver(update)
        return message_id

    async def redeliver(self, message_id: int) -> None:
        """Deliver a user's message again under a new update_id, as Telegram does when a bot lost its offset."""
        update = {**self.sent_updates[message_id], "update_id": next(self._update_ids)}
        await self._deliver(update)

    async def _deliver(self, update: dict[str, Any]) -> None:
        self.updates.append(update)
        self._new_update.fire()

    def messages(self, chat_id: int) -> list[SentMessage]:
        """What the chat shows of the bot's messages: all it sent, but those it deleted."""
        return [m for m in self.chats.get(chat_id, Chat()).messages if not m.deleted]

    def all_messages(self, chat_id: int) -> list[SentMessage]:
        """Every message the bot sent to the chat, deleted or not."""
        return list(self.chats.get(chat_id, Chat()).messages)

    def notified(self, chat_id: int) -> list[SentMessage]:
        """The bot's messages that notified the chat: sent without `disable_notification` (an edit never does),
        whether deleted since or not."""
        return [m for m in self.chats.get(chat_id, Chat()).messages if not m.silent]

    async def wait_for(self, predicate: Any, timeout: float) -> None:
        """Wait until `predicate()` is true; re-checked whenever the bot sends or edits something."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the bot did not get there in time")
            await self._changed.wait(min(remaining, 1.0))
