"""The chat's digest, the formatter's part: it keeps the notes, so it gathers a chat's for a digest, and it sends
the digest once.

`DigestDesk` takes `/digest` and the daily digests (`ask.digest`, durable `formatter-digests`): the chat's notes
answered in the hours asked for (a button's re-run of a note is the same note), oldest first, the newest
`MAX_NOTES` at most, are posed to any asker with their transcripts and speakers (`asker.digest`). With none,
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
    STREAM_ASKER,
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
from infra.domain.forgotten import forget_mark
from infra.domain.notes import NoteStore, StoredNote
from infra.voice.texts import text

log = logging.getLogger("voice_insight.formatter")

MAX_NOTES = 60
"""Notes one digest is made of at most, the newest: a day of a busy group's voice notes, read in one go."""
POSED_CHARS = 300_000
"""Characters of transcripts one digest is posed with at most: under half a megabyte, Cyrillic included."""
LINE_ROOM = 600
"""Characters of one point at most: a model that writes an essay in one still leaves room for the rest."""
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

    @consumes(
        SUBJECT_DIGEST, CONSUMER_FORMATTER_DIGESTS, stage="answer", stream=STREAM_ASK, max_attempts=5, give_up="give_up"
    )
    async def on_digest(self, asked: DigestAsked, delivery: Delivery) -> None:
        marks = await self.bus.kv(BUCKET_ANSWERED)
        mark, _ = await read_mark(marks, asked.correlation_id)
        if isinstance(mark, Sent):
            return
        found = await NoteStore(self.bus).of_chat(asked.chat_key)
        kept = [n for _, n in found if isinstance(n, StoredNote)]
        forgotten = await forget_mark(marks, asked.chat_key)
        if forgotten is not None:  # the chat's /forget is erasing these right now: none of them is digested
            kept = [n for n in kept if n.origin.message_id > forgotten.message_id]
        notes = gathered(kept, asked.asked_at - asked.hours * 3600)
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
        texts = trimmed([n.transcript.text for n in notes])
        posed = DigestPosed(**about, sources=sources, texts=texts)  # type: ignore[arg-type]
        msg_id = f"{asked.correlation_id}.posed"
        await self.bus.publish(SUBJECT_DIGEST_POSED, posed, msg_id=msg_id, stream=STREAM_ASKER)
        log.info("%s: a digest of %d notes posed", asked.correlation_id, len(notes))

    async def give_up(self, asked: DigestAsked, exc: BaseException) -> None:
        """The notes could not be gathered (NATS failing it every time): the chat hears so, not nothing."""
        failed = DigestWritten(
            correlation_id=asked.correlation_id,
            chat_key=asked.chat_key,
            reply=asked.reply,
            refusal="failed",
            hours=asked.hours,
            daily=asked.daily,
            asked_at=asked.asked_at,
        )
        msg_id = f"{asked.correlation_id}.digest"
        await self.bus.publish(SUBJECT_DIGEST_WRITTEN, failed, msg_id=msg_id, stream=STREAM_ASK)


def trimmed(texts: list[str], total: int = POSED_CHARS) -> tuple[str, ...]:
    """The transcripts as posed: whole, or each cut to an equal share of `total` characters, so the request stays
    well within a NATS message (1 MB by default) whatever a day held; the asker condenses them anyway."""
    if sum(len(t) for t in texts) <= total:
        return tuple(texts)
    share = max(1000, total // len(texts))
    return tuple(t if len(t) <= share else t[:share].rsplit(" ", 1)[0] + " …" for t in texts)


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
            who = f"<b>{html.escape(short(point.speaker, 60))}</b>: " if point.speaker else ""
            lines.append(f"• {who}{html.escape(short(point.text, LINE_ROOM))}{refs(point)}")
    if not said_any:
        lines += ["", text("digest_nothing_new", lang)]
    footer = ""
    if not written.links:  # what the numbers stand for: kept whole, the points cut to make room for it
        listed = [
            f"[{s.number}] {datetime.datetime.fromtimestamp(s.at, datetime.UTC):%H:%M}"
            + (f" {html.escape(short(s.speaker, 30))}" if s.speaker else "")
            for s in written.sources
        ]
        footer = f"\n\n<i>{text('digest_sources', lang)} (UTC): {' · '.join(listed)}</i>"
    return fit(lines, MESSAGE_ROOM - len(footer)) + footer


def short(value: str, room: int) -> str:
    return value if len(value) <= room else value[: room - 1].rstrip() + "…"


def fit(lines: list[str], room: int = MESSAGE_ROOM) -> str:
    """The lines that fit `room` characters; a cut is marked. Whole lines only, so no tag is left open."""
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > room:
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
