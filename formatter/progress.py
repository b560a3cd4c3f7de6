"""The answer as it gets ready: the status message shows the transcript as soon as it exists, then each analysis
as it lands, until the full answer replaces it.

Progress is an edit of the status message, never a message of its own, so the note still ends in exactly one
answer. Each edit holds the note's answer mark briefly (`AnswerMarks.claim(brief=True)`): the final answer
cannot be sent while a progress edit is in flight, and once the answer is sent no progress edit can come after
it. Edits are paced per note (a group's more slowly, as Telegram limits groups to twenty messages a minute): when
pieces land faster, only the newest state is shown. Progress is a courtesy: an edit that fails is logged and
the answer comes anyway, and when the bot writes at its rate (a busy minute past it) no edit is made at all
(`optional_write`): the slots go to statuses and answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from formatter.join import JoinState
from formatter.marks import BRIEF_WAIT, AlreadySent, AnswerMarks, HeldElsewhere, Owned
from formatter.render import render_progress
from infra.domain.answers import Claimed, Released, Sent
from infra.domain.contracts import Origin
from infra.voice.telegram import BotBusy, optional_write

log = logging.getLogger("voice_insight.formatter")

PROGRESS_INTERVAL = 1.5
"""Seconds between two progress edits of one note in a private chat (twice that in a group)."""
EDIT_PATIENCE = 5.0
"""A progress edit that takes longer (flood control) is dropped: the answer must not wait behind it."""
SLOT_PATIENCE = 0.0
"""A progress edit is made only if its Bot API slots are free now: the bot's (otherwise the bot writes at its
rate, the gateway and the formatters together, and the slots go to statuses and answers; the reservations never
queue far ahead, since the backlog waits in JetStream, so any wait at all means the bot is saturated) and the
chat's (otherwise the chat was just written to, e.g. its status, and an edit now would delay its answer)."""

NOT_NOW = -1.0
"""`_edit`'s answer for an edit the Bot API's pace had no free slot for: dropped, and not counted as shown."""

Edit = Callable[[Origin, str], Awaitable[None]]


class Progress:
    """Puts a note's newest state in its status message, paced. What the status shows, and when, is kept in the
    note's answered mark (`Claimed.progress`), not in this process: with several formatters, each taking some of
    a note's events, the status still only moves forward, one edit per turn, and a state that finds another
    formatter's edit in flight waits for its turn instead of being dropped."""

    def __init__(self, marks: AnswerMarks, edit: Edit, interval: float = PROGRESS_INTERVAL) -> None:
        self.marks = marks
        self.edit = edit
        self.interval = interval
        self._newest: dict[str, tuple[Origin, str, float]] = {}
        self._shown: dict[str, str] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def show(self, cid: str, state: JoinState) -> None:
        """Show this state of the note when its turn comes (at once, if the last edit is long enough ago)."""
        body = render_progress(state)
        if body is not None and state.origin is not None:
            self.say(cid, state.origin, body, level=1.0 + len(state.analyses))

    def say(self, cid: str, origin: Origin, body: str, level: float) -> None:
        """Put `body` in the note's status message when its turn comes, unless the status already shows as much
        (`level`: how far along the note it is; higher is newer). A newer body replaces one still waiting."""
        if self._shown.get(cid) == body:
            return
        waiting = self._newest.get(cid)
        if waiting is None or level >= waiting[2]:
            self._newest[cid] = (origin, body, level)
        if cid not in self._tasks:
            self._tasks[cid] = asyncio.create_task(self._run(cid))

    def forget(self, cid: str) -> None:
        """The note is answered: nothing more to show."""
        self._newest.pop(cid, None)
        self._shown.pop(cid, None)

    async def _run(self, cid: str) -> None:
        try:
            while cid in self._newest:
                origin, body, level = self._newest.pop(cid)
                wait = await self._edit(cid, origin, body, level)
                if wait is None:
                    self._shown[cid] = body
                    continue
                if wait == NOT_NOW:
                    continue  # not shown: the same text may be asked for again, and tried again then
                self._newest.setdefault(cid, (origin, body, level))  # unless something newer came meanwhile
                await asyncio.sleep(wait)
        finally:
            self._tasks.pop(cid, None)

    async def _edit(self, cid: str, origin: Origin, body: str, level: float) -> float | None:
        """Show `body` if it is this note's turn and news; None when done with it (shown, or no longer worth
        showing), else the seconds until its turn. The mark is read first and claimed only when it is the turn of
        something new: a progress claim briefly holds the answer back, so none is taken in vain."""
        interval = self.interval * (2 if origin.chat_id < 0 else 1)  # groups: twenty messages a minute
        try:
            match mark := await self.marks.peek(cid):
                case Sent() | Claimed(brief=False):
                    return None  # answered, or the answer is going out and overwrites the status
                case Claimed(brief=True):
                    return BRIEF_WAIT  # another formatter's edit in flight
                case Released():
                    if (turn := _turn(mark.parts_sent, mark.progress, mark.progress_at, level, interval)) != 0:
                        return turn
            claim = await self.marks.claim(cid, brief=True)
        except Exception as exc:
            log.warning("%s: progress not shown (%s)", cid, type(exc).__name__)
            return None
        match claim:
            case AlreadySent():
                return None
            case HeldElsewhere(retry_in=wait):
                return wait  # another formatter's edit, or the answer itself: look again in a moment
        assert isinstance(claim, Owned)
        try:
            if (turn := _turn(claim.parts_sent, claim.progress, claim.progress_at, level, interval)) != 0:
                return turn  # the mark moved since it was read
            with optional_write(SLOT_PATIENCE):
                await asyncio.wait_for(self.edit(origin, body), EDIT_PATIENCE)
            claim.progress, claim.progress_at = level, time.time()
        except BotBusy:
            log.debug("%s: progress not shown: the bot or the chat writes at its rate", cid)
            return NOT_NOW
        except Exception as exc:
            log.warning("%s: progress not shown (%s)", cid, type(exc).__name__)
        finally:
            await claim.release()
        return None


def _turn(parts_sent: int, shown: float | None, shown_at: float, level: float, interval: float) -> float | None:
    """0 when a state of `level` is the status's next edit; None when it never will be (the answer is partly out,
    or the status shows as much already); else the seconds until its turn."""
    if parts_sent or (shown is not None and level <= shown):
        return None
    return max(0.0, shown_at + interval - time.time())
