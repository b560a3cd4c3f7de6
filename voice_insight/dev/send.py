"""`voice-insight dev send FILE`: a development user sends FILE as a voice note to the running dev stack, and the
answer is printed as the chat shows it (texts, sections, the buttons' labels).

It talks to the stack's Telegram double over HTTP, through the routes a test uses to play a user
(`voice_insight/doubles/serve.py`): one to send the note, one to read the chat. Exit status: 0 with the answer
printed; 1 when no stack runs here, the file cannot be sent, or no answer comes in time.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from infra.service.run import load_or_exit
from voice_insight.dev import DEV_CHAT
from voice_insight.dev.audio import AudioError, voice_note
from voice_insight.dev.chat import in_progress, render
from voice_insight.dev.state import Running, StackFile

QUIET = 2.0
"""Seconds without a change after the status became the answer: files of a long transcript come after it."""
EVERY = 0.25


class Failed(Exception):
    """Why there is no answer to print, in one line."""


def send(args: argparse.Namespace) -> int:
    stack = StackFile(load_or_exit("dev send", ()).state_dir)
    try:
        running = stack.read()
        if running is None:
            raise Failed(
                f"no development stack is running here (none in {stack.path.parent}): start one with "
                "`voice-insight dev` in this folder, in another terminal"
            )
        note = voice_note(Path(args.file))
        deadline = time.monotonic() + args.timeout
        running = _ready(stack, running, deadline)
        chat = args.chat if args.chat is not None else DEV_CHAT
        sent = _call(
            running,
            "/_control/media",
            {
                "chat_id": chat,
                "data": base64.b64encode(note.data).decode(),
                "kind": "voice",
                "duration": note.seconds,
                "language_code": args.lang,
                "mime_type": "audio/ogg",
            },
        )
        answer = _answer(stack, running, chat, int(sent["message_id"]), deadline, args.timeout)
    except (Failed, AudioError) as exc:
        print(f"voice-insight dev send: {exc}", file=sys.stderr)
        return 1
    print(render(answer), end="")
    return 0


def _ready(stack: StackFile, running: Running, deadline: float) -> Running:
    """A stack still starting gets its analyzers up before the note goes in: a note takes the modes live then."""
    while not running.ready:
        if time.monotonic() > deadline:
            raise Failed("the development stack did not get ready in time (its output says what it waits for)")
        time.sleep(EVERY * 2)
        found = stack.read()
        if found is None:
            raise Failed("the development stack stopped while starting (its output says why)")
        running = found
    return running


def _answer(
    stack: StackFile, running: Running, chat: int, sent: int, deadline: float, timeout: float
) -> list[dict[str, Any]]:
    """The bot's messages after the note, once the status holds the answer and the chat has been quiet a moment."""
    last: list[dict[str, Any]] = []
    changed = time.monotonic()
    while True:
        messages = [m for m in _call(running, f"/_control/messages/{chat}") if m["message_id"] > sent]
        now = time.monotonic()
        if messages != last:
            last, changed = messages, now
        elif last and not in_progress(last[0]["text"]) and now - changed >= QUIET:
            return last
        if now > deadline:
            so_far = f"; the chat so far:\n{render(last)}" if last else ""
            raise Failed(f"no answer within {timeout:g} s (the `voice-insight dev` output says why){so_far}")
        if stack.read() is None:
            raise Failed("the development stack stopped before it answered")
        time.sleep(EVERY)


def _call(running: Running, route: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{running.telegram}{route}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise Failed(f"the stack's Telegram double at {running.telegram} did not answer ({exc})") from None
