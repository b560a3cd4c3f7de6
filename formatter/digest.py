"""The chat's digest, the formatter's part: it keeps the notes, so it gathers a chat's for a digest, and it sends
the digest once.

`DigestDesk` takes `/digest` and the daily digests (`ask.digest`, durable `formatter-digests`): the chat's notes
answered in the hours asked for (a button's re-run of a note is the same note), oldest first, the newest
`MAX_NOTES` at most, are posed to any asker with their transcripts and speakers (`ask.digest.posed`). With none,
`/digest` is told so at once (`ask.digest.written`, `empty`), and a daily digest says nothing: a quiet day is no
news. `DigestReplies` takes the written digests (`ask.digest.written`, durable `formatter-digested`) and sends each
once (its answered mark, under the digest's ID), rendered here: each point names the notes it comes from, as
links to them in a supergroup, elsewhere as numbers listed under the digest with their time and speaker.
"""

from __future__ import annotations

import datetime
import html
import logging

from formatter.marks import AnswerMarks
from formatter.sending import Sender
from formatter.single import reply_origin, send_once
from infra.bus import Bus, Delivery, consumes
from infra.bus.names import (
    BUCKET_ANSWERED,
    CONSUMER_FORMATTER_DIGESTED,
    CONSUMER_FORMATTER_DIGESTS,
    STREAM_ASK,
    SUBJECT_DIGEST,
    SUBJECT_DIGEST_POSED,
    SUBJECT_DIGEST_WRITTEN,
)
from infra.domain.answers import Sent, read_mark
from infra.domain.contracts import (
    DigestAsked,
    DigestPoint,
    DigestPosed,
    DigestSource,
    DigestWritten,
)
from infra.domain.notes import NoteStore, StoredNote
from infra.voice.texts import text

log = logging.getLogger("voice_insight.formatter")

MAX_NOTES = 60
"""Notes one digest is made of at most, the newest: a day of a busy group's voice notes, read in one go."""
MESSAGE_ROOM = 3900
"""Characters of a digest's message, under Telegram's 4096 with its markup."""
SECTIONS = (
    ("topics", "digest_topics"),
    ("decisions", "digest_decisions"),
    ("open_questions", "digest_open_questions"),
    ("actions", "digest_actions"),
)


def gathered(notes: list[StoredNote], since: float) -> list[StoredNote]:
    """The notes transcribed since `since`, each once (a re-run is its note again), oldest first, the newest
    `MAX_NOTES` at most."""
    first: dict[int, StoredNote] = {}
    for note in sorted(notes, key=lambda n: n.transcript.published_at):
        first.setdefault(note.origin.message_id, note)  # a re-run is transcribed again later: the note is its first
    kept = [n for n in first.values() if n.transcript.published_at >= since and n.transcript.text.strip()]
    return kept[-MAX_NOTES:]


class DigestDesk:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @consumes(SUBJECT_DIGEST, CONSUMER_FORMATTER_DIGESTS, stage="answer", stream=STREAM_ASK)
    async def on_digest(self, asked: DigestAsked, delivery: Delivery) -> None:
        mark, _ = await read_mark(await self.bus.kv(BUCKET_ANSWERED), asked.correlation_id)
        if isinstance(mark, Sent):
            return
        found = await NoteStore(self.bus).of_chat(asked.chat_key)
        notes = gathered([n for _, n in found if isinstance(n, StoredNote)], asked.asked_at - asked.hours * 3600)
        about = dict(
            correlation_id=asked.correlation_id,
            chat_key=asked.chat_key,
            reply=asked.reply,
            hours=asked.hours,
            links=asked.links,
            daily=asked.daily,
            asked_at=asked.asked_at,
        )
        if not notes:
            if asked.daily:
                log.info("%s: a quiet day, no daily digest", asked.correlation_id)
                return
            empty = DigestWritten(**about, refusal="empty")  # type: ignore[arg-type]
            msg_id = f"{asked.correlation_id}.digest"
            await self.bus.publish(SUBJECT_DIGEST_WRITTEN, empty, msg_id=msg_id, stream=STREAM_ASK)
            return
        sources = tuple(
            DigestSource(
                number=i, message_id=n.origin.message_id, at=n.transcript.published_at, speaker=n.origin.speaker or ""
            )
            for i, n in enumerate(notes, 1)
        )
        posed = DigestPosed(**about, sources=sources, texts=tuple(n.transcript.text for n in notes))  # type: ignore[arg-type]
        msg_id = f"{asked.correlation_id}.posed"
        await self.bus.publish(SUBJECT_DIGEST_POSED, posed, msg_id=msg_id, stream=STREAM_ASK)
        log.info("%s: a digest of %d notes posed", asked.correlation_id, len(notes))


def note_link(chat_id: int, message_id: int) -> str | None:
    """A supergroup message's link: `-100` and the group's own id, then the message."""
    digits = str(chat_id)
    return f"https://t.me/c/{digits[4:]}/{message_id}" if digits.startswith("-100") else None


def render_digest(written: DigestWritten) -> str:
    """The digest's one message: a title, the sections with their points, each naming its notes."""
    lang = written.reply.ui_language
    if written.refusal is not None:
        if written.refusal == "empty":
            return text("digest_empty", lang, count=int(written.hours))
        return text(f"digest_{written.refusal}", lang)
    by_number = {s.number: s for s in written.sources}
    count = len(written.sources)

    def refs(point: DigestPoint) -> str:
        marks = []
        for number in sorted(set(point.notes)):
            source = by_number.get(number)
            if source is None:
                continue
            link = note_link(written.reply.chat_id, source.message_id) if written.links else None
            marks.append(f'<a href="{link}">[{number}]</a>' if link else f"[{number}]")
        return f" {' '.join(marks)}" if marks else ""

    if written.daily:
        title = text("digest_daily_title", lang, count=count)
    else:
        span = text("last_hours", lang, count=int(written.hours))
        title = text("digest_title", lang, span=span, count=count)
    lines = [title]
    said_any = False
    for field, heading in SECTIONS:
        points: tuple[DigestPoint, ...] = getattr(written, field)
        if not points:
            continue
        said_any = True
        lines += ["", f"<b>{text(heading, lang)}</b>"]
        for point in points:
            who = f"<b>{html.escape(point.speaker)}</b>: " if point.speaker else ""
            lines.append(f"• {who}{html.escape(point.text)}{refs(point)}")
    if not said_any:
        lines += ["", text("digest_nothing_new", lang)]
    if not written.links:
        listed = [
            f"[{s.number}] {datetime.datetime.fromtimestamp(s.at, datetime.UTC):%H:%M}"
            + (f" {html.escape(s.speaker)}" if s.speaker else "")
            for s in written.sources
        ]
        lines += ["", f"<i>{text('digest_sources', lang)}: {' · '.join(listed)}</i>"]
    return fit(lines)


def fit(lines: list[str]) -> str:
    """The lines that fit one message; a cut is marked. Whole lines only, so no tag is left open."""
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > MESSAGE_ROOM:
            kept.append("…")
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


class DigestReplies:
    def __init__(self, bus: Bus, sender: Sender, marks: AnswerMarks) -> None:
        self.bus = bus
        self.sender = sender
        self.marks = marks

    @consumes(SUBJECT_DIGEST_WRITTEN, CONSUMER_FORMATTER_DIGESTED, stage="answer", stream=STREAM_ASK, max_backoff=60.0)
    async def on_written(self, written: DigestWritten, delivery: Delivery) -> None:
        origin = reply_origin(written.reply, written.chat_key)
        message = render_digest(written)
        if await send_once(
            self.marks, written.correlation_id, lambda: self.sender.send(origin, message), delivery, "digest"
        ):
            log.info("%s: digest sent", written.correlation_id)
