"""The answer as it gets ready: the status message shows the transcript as soon as it exists, then each analysis
as it lands, until the full answer replaces it.

Progress is an edit of the status message, never a message of its own, so the note still ends in exactly one
answer. Each edit holds the note's answer mark briefly (`AnswerMarks.claim(brief=True)`): the final answer
cannot be sent while a progress edit is in flight, and once the answer is sent no progress edit can come after
it. Edits are paced per note (a group's more slowly, as Telegram limits groups to twenty messages a minute): when
pieces land faster, only the newest state is shown. Progress is a courtesy: an edit that fails is logged and
the answer comes anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from formatter.join import JoinState
from formatter.marks import AnswerMarks, Owned
from formatter.render import render_progress
from infra.domain.contracts import Origin

log = logging.getLogger("voice_insight.formatter")

PROGRESS_INTERVAL = 1.5
"""Seconds between two progress edits of one note in a private chat (twice that in a group)."""
EDIT_PATIENCE = 5.0
"""A progress edit that takes longer (flood control) is dropped: the answer must not wait behind it."""

Edit = Callable[[Origin, str], Awaitable[None]]


class Progress:
    def __init__(self, marks: AnswerMarks, edit: Edit, interval: float = PROGRESS_INTERVAL) -> None:
        self.marks = marks
        self.edit = edit
        self.interval = interval
        self._newest: dict[str, tuple[Origin, str]] = {}
        self._last: dict[str, float] = {}
        self._shown: dict[str, str] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def show(self, cid: str, state: JoinState) -> None:
        """Show this state of the note when its turn comes (at once, if the last edit is long enough ago)."""
        body = render_progress(state)
        if body is not None and state.origin is not None:
            self.say(cid, state.origin, body)

    def say(self, cid: str, origin: Origin, body: str) -> None:
        """Put `body` in the note's status message when its turn comes; a newer body replaces one still waiting."""
        if self._shown.get(cid) == body:
            return
        self._newest[cid] = (origin, body)
        if cid not in self._tasks:
            self._tasks[cid] = asyncio.create_task(self._run(cid))

    def forget(self, cid: str) -> None:
        """The note is answered: nothing more to show."""
        self._newest.pop(cid, None)
        self._last.pop(cid, None)
        self._shown.pop(cid, None)

    async def _run(self, cid: str) -> None:
        try:
            while cid in self._newest:
                origin, _ = self._newest[cid]
                interval = self.interval * (2 if origin.chat_id < 0 else 1)
                wait = self._last.get(cid, 0.0) + interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if cid not in self._newest:
                    return
                origin, body = self._newest.pop(cid)
                await self._edit(cid, origin, body)
                self._last[cid] = time.monotonic()
                self._shown[cid] = body
        finally:
            self._tasks.pop(cid, None)

    async def _edit(self, cid: str, origin: Origin, body: str) -> None:
        try:
            claim = await self.marks.claim(cid, brief=True)
        except Exception as exc:
            log.warning("%s: progress not shown (%s)", cid, type(exc).__name__)
            return
        if not isinstance(claim, Owned):
            return  # answered already, or the answer is going out right now
        try:
            if claim.parts_sent == 0:
                await asyncio.wait_for(self.edit(origin, body), EDIT_PATIENCE)
        except Exception as exc:
            log.warning("%s: progress not shown (%s)", cid, type(exc).__name__)
        finally:
            await claim.release()
