"""Message contracts: the only shapes that travel between services.

Every event is a frozen msgspec Struct tagged with its schema name and version (`"schema":
"voice.transcript/1"`), encoded as JSON. Consumers decode at the edge into these types, so a field
renamed on one side fails loudly at the boundary instead of as a KeyError three calls deep.

How a contract may change, since analyzers written elsewhere depend on these shapes:
* A new field gets a default, so messages from older publishers still decode; consumers ignore fields they do
  not know (`forbid_unknown_fields=False`), so older consumers read newer messages.
* A field is never renamed, retyped or removed within a version, and a default never changes meaning.
* `Segment` is encoded as an array (`array_like`): fields may only be appended, each with a default.
* Anything else is a breaking change: a new tag (`/2`), and a transition period in which publishers keep the old
  version and consumers accept both.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec


class Contract(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False, tag_field="schema"):
    """Base for bus events: frozen, keyword-only, tagged."""


# --- pieces -------------------------------------------------------------------------------------


class Origin(msgspec.Struct, frozen=True, kw_only=True):
    """Where the voice note came from and where the answer goes. Stays on the bus, never in logs."""

    chat_id: int
    message_id: int
    status_message_id: int
    ui_language: str
    """Language of the bot's own words: one of `infra.voice.languages.LANGUAGES` (a reader of any other gets
    English)."""
    language_hint: str | None = None
    """The user's Telegram `language_code`, a hint for speech recognition."""
    thread_id: int | None = None
    """The forum topic the note was posted in: every reply goes to the same topic."""
    transcript_view: Literal["message", "file", "off"] = "message"
    """How the chat wants the transcript: in the answer, as a `.txt` file, or not at all (the button still has it)."""
    follow_speech: bool = False
    """Answer in the language spoken in the note instead of `ui_language` (the chat's setting): the bot's words
    and the analyses alike."""
    analyses_follow_speech: bool = False
    """The analyses (not the bot's words) in the language spoken: what a chat gets unless it chose a language."""
    chat_key: str | None = None
    """The chat as the bus may know it (a keyed hash): the key its notes are kept and forgotten under."""
    modes_off: tuple[str, ...] = ()
    """The modes the chat switched off when the note came: the buttons under its answer never offer them."""
    speaker: str | None = None
    """Who the note is from, as Telegram names them (the sender, or whom a forward is from): for the chat's digest
    only, kept as long as the note."""


class AudioRef(msgspec.Struct, frozen=True, kw_only=True):
    object_name: str
    kind: Literal["voice", "audio", "video_note", "document"]
    mime_type: str | None = None
    size: int
    duration_hint: float | None = None
    """Duration as Telegram reported it, if it did; the transcriber measures the real one."""
    fingerprint: str | None = None
    """A keyed hash of Telegram's `file_unique_id`: the same file forwarded again is not transcribed again."""


class Segment(msgspec.Struct, frozen=True, array_like=True):
    start: float
    end: float
    text: str


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0


class Section(msgspec.Struct, frozen=True, kw_only=True):
    """A rendering-neutral piece of an analysis: a heading with prose and/or bullet items.

    Analyzers speak in sections so the formatter can render any mode, including ones that did not exist
    when it was written.
    """

    heading: str
    body: str = ""
    items: tuple[str, ...] = ()


FailureReason = Literal[
    "not_audio",  # undecodable, corrupt, or not sound at all
    "no_speech",  # decoded fine, nothing was said
    "too_long",  # over MAX_AUDIO_SECONDS
    "too_big",  # over the Bot API's 20 MB download limit
    "download_failed",  # the Bot API did not give us the file
    "internal",  # our fault; retries are exhausted
    "overdue",  # no transcript by TRANSCRIPTION_DEADLINE: transcribers gone or the queue too long
]


# --- events -------------------------------------------------------------------------------------


class AudioReceived(Contract, frozen=True, tag="voice.audio/1"):
    """Published by the gateway on `voice.audio` once the bytes are in the object store."""

    correlation_id: str
    origin: Origin
    audio: AudioRef
    modes: tuple[str, ...]
    """The analysis modes that were live when the note arrived: what the formatter waits for."""
    received_at: float = msgspec.field(default_factory=time.time)
    user_key: str | None = None
    """The sender as a keyed hash (never the id): whose daily minutes the note counts against."""
    vocabulary: str | None = None
    """Names and jargon the chat uses, given to Whisper as hotwords so they come out spelled right."""
    titles: dict[str, dict[str, str]] = {}
    """`modes` as people know them: each mode's title by language (`en` always), so the answer can name a mode
    that never answered (an analysis carries its own title)."""

    def transcript_due(self, deadline: float) -> float:
        """When its transcript is due at the latest (`TRANSCRIPTION_DEADLINE` after it arrived): past this the
        formatter tells the user it could not be transcribed in time, and transcribers leave it."""
        return self.received_at + deadline


class AnalysesRequested(Contract, frozen=True, tag="voice.rerun/1"):
    """Published by the gateway on `voice.rerun` when a button asks for modes a note did not get: the join opens
    as for new audio, and the note's stored transcript follows on `voice.transcript` under the same ID."""

    correlation_id: str
    origin: Origin
    modes: tuple[str, ...]
    of_note: str
    """The correlation ID of the note whose transcript is analysed again."""
    received_at: float = msgspec.field(default_factory=time.time)
    user_key: str | None = None
    titles: dict[str, dict[str, str]] = {}
    """As `AudioReceived.titles`."""


class Transcript(Contract, frozen=True, tag="voice.transcript/1"):
    """Published by the transcriber on `voice.transcript`."""

    correlation_id: str
    text: str
    language: str
    language_probability: float
    duration: float
    segments: tuple[Segment, ...]
    ui_language: str
    """The language the analyses are written in: the one spoken (`Origin.analyses_follow_speech`), or the one
    the chat chose; any code Whisper knows."""
    model: str
    transcribe_seconds: float
    published_at: float = msgspec.field(default_factory=time.time)
    modes: tuple[str, ...] | None = None
    """The modes this note asked for (the chat may have switched some off); None: every mode, as before."""
    chat_key: str | None = None
    """The note's chat as the bus knows it (`Origin.chat_key`): where a chat's own modes are looked up."""


class TranscriptionProgress(Contract, frozen=True, tag="voice.progress/1"):
    """Published by the transcriber on `voice.progress` while it works through a long recording: how much of it
    is transcribed. For the status message only; nothing waits for it."""

    correlation_id: str
    done_seconds: float
    total_seconds: float


class PieceRequested(Contract, frozen=True, tag="piece.transcribe/1"):
    """Published on `piece.transcribe` by the transcriber that split a long recording: one piece of it, for
    whichever transcriber is free. The piece's samples (16 kHz mono 16-bit PCM) are in the Object Store under
    `object_name`; the note itself travels along, so whoever transcribes the last piece can publish its
    `Transcript`."""

    correlation_id: str
    note: AudioReceived
    index: int
    bounds: tuple[float, ...]
    """Every cut, in seconds from the start, the recording's end included: piece i spans bounds[i] to bounds[i+1]."""
    object_name: str
    language: str | None = None
    """The language heard at the start, for every piece alike; None: each piece tells its own."""
    language_probability: float = 0.0
    split_at: float = msgspec.field(default_factory=time.time)

    @property
    def count(self) -> int:
        return len(self.bounds) - 1

    @property
    def start(self) -> float:
        return self.bounds[self.index]

    @property
    def duration(self) -> float:
        return self.bounds[self.index + 1] - self.bounds[self.index]


class Analysis(Contract, frozen=True, tag="voice.analysis/1"):
    """Published by an analyzer on `voice.analysis.<MODE>`; `error` set means the mode failed."""

    correlation_id: str
    mode: str
    title: str
    model: str
    sections: tuple[Section, ...] = ()
    text: str | None = None
    """Plain-text answer, used when the model could not give structured output."""
    usage: Usage = Usage()
    latency: float = 0.0
    error: str | None = None
    mode_version: int = 0
    """The version of the mode's definition this analysis used (0: an analyzer without a registered mode)."""


class Failure(Contract, frozen=True, tag="voice.failed/1"):
    """Published on `voice.failed` by whichever stage gave up on a voice note."""

    correlation_id: str
    stage: Literal["gateway", "transcriber", "analyzer", "formatter"]
    reason: FailureReason
    detail: str | None = None
    """Operator-facing detail; never user content."""


class ModeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A live analyzer's announcement, kept under key `mode` in the `voice-modes` bucket (30 s TTL) by its
    heartbeat (every 10 s). Only `mode` and `title` are required: an analyzer without an LLM leaves the rest."""

    mode: str
    """The key it is stored under, and the token in `voice.analysis.<mode>`: `[A-Z][A-Z0-9_]{0,31}`."""
    title: str
    titles: dict[str, str] = {}
    """The title per language (`ru`, `en`), if it has them; `title` otherwise."""
    model: str = ""
    max_tokens: int = 0
    temperature: float | None = None
    timeout: float = 0.0
    structured_output: bool = False
    announced_at: float = msgspec.field(default_factory=time.time)
    version: int = 0
    """The version of the mode's definition in use (0: an analyzer without a registered mode)."""
    problem: str = ""
    """Why the mode cannot answer now, for people (its model is not on the server, and how to pick another)."""


class TelegramUpdate(Contract, frozen=True, tag="telegram.update/1"):
    """An update as Telegram sent it, taken in on `telegram.update` before its offset is confirmed.

    The payload stays Telegram's JSON; the gateway validates it into aiogram's `Update` when it handles it.
    """

    update_id: int
    payload: msgspec.Raw


Event = AudioReceived | AnalysesRequested | Transcript | TranscriptionProgress | Analysis | Failure

# --- administration: the mode registry -----------------------------------------------------------

ModeAction = Literal["add", "replace", "set_model", "edit_prompt", "enable", "disable", "rollback"]


class ReplyTo(msgspec.Struct, frozen=True, kw_only=True):
    """The admin's chat and message a result answers, and the language to answer in."""

    chat_id: int
    message_id: int
    ui_language: str
    thread_id: int | None = None
    """The forum topic the message was posted in: the answer goes to the same topic."""


class ModeChange(Contract, frozen=True, tag="admin.mode.change/1"):
    """A request to change the mode registry, from an admin in the bot (`admin.mode.change`). Validated and
    applied by the registrar, which owns an LLM client for the canary; the answer comes back as a `ModeChangeResult`."""

    request_id: str
    action: ModeAction
    mode: str
    requested_by: str
    """`cli`, `auto`, or `admin:<keyed hash>`: never a raw user id."""
    model: str | None = None
    prompt: str | None = None
    definition: str | None = None
    """A whole definition as TOML (`add`, `replace`)."""
    version: int | None = None
    """`rollback`: the version to go back to; None: the one before the current."""
    reply: ReplyTo | None = None


class ModeChangeResult(Contract, frozen=True, tag="admin.mode.changed/1"):
    """What became of a `ModeChange` (`admin.mode.changed`): applied, or refused with every reason."""

    request_id: str
    action: ModeAction
    mode: str
    accepted: bool
    problems: tuple[str, ...] = ()
    version: int | None = None
    model: str | None = None
    reply: ReplyTo | None = None


ChatModeAction = Literal["define", "drop", "forget", "policy"]
ChatModeRefusal = Literal[
    "off",  # the bot's admins switched chat modes off
    "too_many",  # the chat has as many as it may (`values["count"]`)
    "name",  # the name is not 1-24 capital letters, digits or _
    "title",  # the title is empty or too long (`values["max"]`)
    "instruction",  # the instruction is too short or too long (`values["min"]`, `values["max"]`)
    "refused",  # the model would not follow the instruction (a canary call was refused or gave nothing usable)
    "unchecked",  # the check could not run now (the model or the server failed): nothing is stored, try again
    "unknown",  # `drop`: the chat has no mode by that name
    "model",  # `policy`: the model chosen for chat modes failed its canary (`values["model"]`, `values["reason"]`)
    "limit",  # `policy`: a chat may have 1 to `values["max"]` modes
    "budget",  # today's token budget is used up: no canary is tried
    "forgotten",  # the chat said /forget after asking for it
]


class ChatModeChange(Contract, frozen=True, tag="chatmode.change/1"):
    """A chat's own mode defined (`/newmode`), dropped (`/dropmode`) or all of them forgotten (`/forget`), or the
    bot admins' policy for chat modes changed (`policy`), on `chatmode.change`: the registrar validates a
    definition with a canary call, as it does an admin's mode, and is the one writer of `voice-chat-modes`."""

    request_id: str
    action: ChatModeAction
    chat_key: str = ""
    """The chat as the bus knows it; empty for `policy`."""
    name: str = ""
    title: str = ""
    instruction: str = ""
    """What the mode asks of the model about each note, in the chat's words (`define`)."""
    enabled: bool | None = None
    """`policy`: chat modes on or off for every chat (None: unchanged)."""
    model: str | None = None
    """`policy`: the model chat modes run on (validated first; None: unchanged)."""
    per_chat: int | None = None
    """`policy`: how many modes a chat may have (None: unchanged)."""
    requested_by: str = ""
    """`chat`, or `admin:<keyed hash>` for a policy: never a raw user id."""
    reply: ReplyTo | None = None


class ChatModeChangeResult(Contract, frozen=True, tag="chatmode.changed/1"):
    """What became of a `ChatModeChange` (`chatmode.changed`): done, or refused with why, for the gateway to
    say in the chat's language."""

    request_id: str
    action: ChatModeAction
    accepted: bool
    name: str = ""
    refusal: ChatModeRefusal | None = None
    values: dict[str, str] = {}
    """What the refusal's words name (a limit, the model's reason)."""
    replaced: bool = False
    """`define`: a mode of that name was there and is replaced."""
    enabled: bool = True
    model: str = ""
    per_chat: int = 0
    """`policy`: the policy now."""
    reply: ReplyTo | None = None


class NoteAsked(Contract, frozen=True, tag="notes.get/1"):
    """A stored note asked for by its exact key (`notes.get`, a request the formatter answers): the gateway's one
    way to read a note, for a button under its answer. The answer is the note's JSON, or empty."""

    chat_key: str
    correlation_id: str
    proof: str
    """What the button under the answer carries besides the ID (`infra.domain.notes.button_proof`)."""


class ForgetChat(Contract, frozen=True, tag="forget.chat/1"):
    """`/forget` in a chat (`forget.chat`), from the gateway to the formatter, which keeps the chat's notes: erase
    them and their events, ask the other keepers to erase theirs, and tell the chat what was deleted."""

    chat_key: str
    """The chat's keyed hash, as its notes are stored under."""
    chat_id: int
    ui_language: str
    settings: bool
    """Whether the chat had settings, which the gateway erased itself."""
    thread_id: int | None = None
    refused: tuple[str, ...] = ()
    """The notes of the chat the gateway answered itself (refused: too long, not sound, over a limit...), which
    never reached the formatter: erased with the others (their answered marks, intake records, any audio)."""


class ForgetTranscripts(Contract, frozen=True, tag="forget.transcripts/1"):
    """To the transcriber (`forget.transcripts`): a forgotten chat's cached transcripts (by the audio's
    fingerprint) and the pieces of its long notes still being stitched (by the chat's key)."""

    chat_key: str
    fingerprints: tuple[str, ...] = ()
    pieces: bool = True
    """Erase the pieces kept under the chat's key too. Not for one note erased after its answer (a chat that said
    `/forget` while it was in flight): the chat's later notes may be being stitched."""
    notes: tuple[str, ...] = ()
    """The notes (correlation IDs) whose pieces go, whatever `pieces` says: one erased after its answer was
    transcribed in pieces after the chat's `/forget`."""


class ForgetIntake(Contract, frozen=True, tag="forget.intake/1"):
    """To the gateway (`forget.intake`): the intake records of a forgotten chat's notes."""

    correlation_ids: tuple[str, ...]


class ForgetAnalyses(Contract, frozen=True, tag="forget.analyses/1"):
    """To one mode's analyzer (`forget.analyses.<MODE>`): its cached analyses of these transcripts (digests)."""

    digests: tuple[str, ...]


# --- asking the recording ----------------------------------------------------------------------------

AskRefusal = Literal[
    "not_a_note",  # the message replied to is no answer of the bot's and no voice note it answered
    "not_transcribed",  # the note failed or was refused: there is no transcript to ask
    "expired",  # the note's day is over: its transcript is gone
    "forgotten",  # the chat's /forget erased it
    "in_flight",  # the note is not answered yet: ask once its answer is there
    "budget",  # today's token budget is used up
    "failed",  # the LLM did not answer, on every attempt
]


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """One question about a note and the answer it got: what a follow-up question is read against."""

    question: str
    answer: str
    asked_at: float = 0.0
    """When the question was asked: a turn copied forward into a follow-up's thread lives no longer than its day."""


class QuestionAsked(Contract, frozen=True, tag="ask.question/1"):
    """A question about a recording (`ask.question`), from the gateway: a reply to the bot's answer, to the voice
    note itself, or to an earlier answer to a question. The formatter, which keeps the notes, finds the note and
    poses the question to an asker (`QuestionPosed`), or answers at once why it cannot."""

    correlation_id: str
    """The question's own ID: a keyed hash of its chat and message, as a note's is."""
    chat_key: str
    reply: ReplyTo
    """The question's chat and message (the answer replies to it) and the language of the bot's own words."""
    question: str
    about_message_id: int
    """The message the question replies to."""
    about_sent_at: float = 0.0
    """When that message was sent (Unix time): past a day, whatever it was about is gone."""
    note: str | None = None
    """The note's ID when the question replies to the voice note itself; otherwise the formatter looks up which
    note the bot's message answered (`infra.domain.threads`)."""
    asked_at: float = msgspec.field(default_factory=time.time)


class QuestionPosed(Contract, frozen=True, tag="asker.question/1"):
    """A question with what it is to be answered from (`asker.question`), from the formatter to any asker: the note's
    transcript, timed, and the conversation about it so far."""

    correlation_id: str
    chat_key: str
    reply: ReplyTo
    question: str
    note: str
    transcript: Transcript
    turns: tuple[Turn, ...] = ()
    """The conversation about this note before this question, oldest first."""
    asked_at: float = 0.0


class QuestionAnswered(Contract, frozen=True, tag="ask.answer/1"):
    """The answer to a question (`ask.answer`), for the formatter to send: an asker's, drawn from the note's
    transcript only, or a `refusal` saying why there is none (the formatter's own, when it found nothing to ask)."""

    correlation_id: str
    chat_key: str
    reply: ReplyTo
    note: str | None = None
    """The note the question was about (None: none was found)."""
    question: str = ""
    answer: str = ""
    """In the question's language; the recording's own words, if quoted, as said."""
    found: bool = True
    """False: the recording does not say (`answer` says so, in the question's language)."""
    at: tuple[float, ...] = ()
    """Moments of the recording the answer comes from, in seconds from its start."""
    turns: tuple[Turn, ...] = ()
    """The conversation about this note before this question, oldest first: kept with the answer for a follow-up."""
    refusal: AskRefusal | None = None
    model: str = ""
    usage: Usage = Usage()
    latency: float = 0.0
    asked_at: float = 0.0
    """When the question was asked (the gateway's clock): question-to-answer time, and `/forget` in between."""


# --- the chat's digest ----------------------------------------------------------------------------------

DigestRefusal = Literal[
    "empty",  # no voice note was answered in the chat in that time (or every one was forgotten)
    "budget",  # today's token budget is used up
    "failed",  # the LLM did not answer, on every attempt
]


class DigestAsked(Contract, frozen=True, tag="ask.digest/1"):
    """A digest of a chat's voice notes (`ask.digest`), from the gateway: `/digest`, or the chat's daily digest
    due. The formatter, which keeps the notes, gathers those answered in the last `hours`."""

    correlation_id: str
    """A keyed hash of the chat and the `/digest` message, or of the chat and the day (a daily digest)."""
    chat_key: str
    reply: ReplyTo
    """Where the digest goes; `message_id` 0: a message of its own (the daily digest), not a reply."""
    hours: float = 24.0
    links: bool = False
    """Each point links to its note (`https://t.me/c/...`): a supergroup's messages have links; other chats' do not."""
    daily: bool = False
    asked_at: float = msgspec.field(default_factory=time.time)


class DigestSource(msgspec.Struct, frozen=True, kw_only=True):
    """One note a digest is made of, numbered as the digest's points name it."""

    number: int
    message_id: int
    at: float
    """When it was transcribed (Unix time)."""
    speaker: str = ""


class DigestPosed(Contract, frozen=True, tag="asker.digest/1"):
    """The notes of a digest with their transcripts (`asker.digest`), from the formatter to any asker."""

    correlation_id: str
    chat_key: str
    reply: ReplyTo
    sources: tuple[DigestSource, ...]
    texts: tuple[str, ...]
    """Each source's transcript, in the same order."""
    hours: float = 24.0
    links: bool = False
    daily: bool = False
    asked_at: float = 0.0


class DigestPoint(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    notes: tuple[int, ...] = ()
    """The numbers of the notes it comes from (`DigestSource.number`)."""
    speaker: str = ""
    """For an action: who is to do it."""


class DigestWritten(Contract, frozen=True, tag="ask.digest.written/1"):
    """A chat's digest (`ask.digest.written`), for the formatter to send: an asker's, or the formatter's own
    `refusal` when there was nothing to digest."""

    correlation_id: str
    chat_key: str
    reply: ReplyTo
    sources: tuple[DigestSource, ...] = ()
    topics: tuple[DigestPoint, ...] = ()
    decisions: tuple[DigestPoint, ...] = ()
    open_questions: tuple[DigestPoint, ...] = ()
    actions: tuple[DigestPoint, ...] = ()
    refusal: DigestRefusal | None = None
    hours: float = 24.0
    links: bool = False
    daily: bool = False
    model: str = ""
    usage: Usage = Usage()
    asked_at: float = 0.0


class AdminAlert(Contract, frozen=True, tag="admin.alert/1"):
    """Something the admins should hear about at once (`admin.alert`), e.g. a mode rolled back on its own."""

    kind: Literal["mode_rolled_back"]
    mode: str
    detail: str
    """For people: what happened and why; never user content."""
