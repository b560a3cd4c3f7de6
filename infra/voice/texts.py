"""Everything the bot says in its own voice: each message by its key, in English, translated through gettext.

The English here is the source (`msgid`); the translations are `infra/voice/locales/<lang>/LC_MESSAGES/messages.po`,
compiled to `.mo` beside them (`infra.voice.languages`). `N_` marks a message and `P_` one that depends on a
number (its singular and plural English forms; each catalog has as many forms as its language needs), so Babel's
`pybabel extract -k N_ -k P_:1,2` finds them all; `tests/test_languages.py` checks that every message has every
language, with the same placeholders and valid markup. How to add or change a message: docs/development.md.
(`infra.voice.languages` names languages without loading any of this: analyzers need the names, not the bot.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiogram.utils.i18n import I18n

from infra.voice.languages import DEFAULT_LANGUAGE, LANGUAGES, ui_language

__all__ = ["LANGUAGES", "duration_limit", "messages", "text", "ui_language"]


LOCALES = Path(__file__).with_name("locales")
CATALOGS = I18n(path=LOCALES, default_locale=DEFAULT_LANGUAGE, domain="messages")
"""aiogram's loader of the compiled catalogs: translators edit `.po` files with any gettext tool, and plural rules
come from each catalog's `Plural-Forms`, not from code."""


def N_(message: str) -> str:
    """A message to translate (the name gettext's tools look for)."""
    return message


@dataclass(frozen=True)
class Plural:
    """A message that depends on `{count}`: its English singular and plural, the catalogs' forms for the rest."""

    singular: str
    plural: str


def P_(singular: str, plural: str) -> Plural:
    return Plural(singular, plural)


_TEXTS: dict[str, str | Plural] = {
    "listening": N_("🎧 Listening…"),
    "start": N_(
        "Hi! Forward me a voice message, an audio file or a video note and I will send back the transcript, a "
        "summary with key points and actions, and a reading of the tone: hidden intentions, the dominant "
        "emotion and how best to reply.\n"
        "\n"
        "/help for details, /list_modes for the analysis modes."
    ),
    "start_transcripts_only": N_(
        "Hi! Forward me a voice message, an audio file or a video note and I will send back the transcript. "
        "Analyses (a summary, a reading of the tone) are off on this bot.\n"
        "\n"
        "/help for details."
    ),
    "help": N_(
        "<b>How to use it</b>\n"
        "• Record or forward a voice message, an audio file (mp3, ogg, m4a, wav…) or a video note.\n"
        "• In a few seconds the “Listening…” status turns into the answer.\n"
        "• Limits: up to {limit} of sound and 20 MB per file.\n"
        "• What you send is kept at most 24 hours, only to answer you.\n"
        "• Under the answer: buttons for the transcript as files (.txt and .srt) and for other modes.\n"
        "\n"
        "/settings: answer language, modes, transcript, vocabulary, behaviour in groups\n"
        "/transcribe: reply with it to a voice note in a group\n"
        "/list_modes: which analyses are running\n"
        "/privacy: what is kept; /forget: delete everything about this chat"
    ),
    "help_ask": N_(
        "<b>Ask about a recording</b>\n"
        "Reply to my answer (or, in a private chat, to the voice note) with a question, such as “when is the "
        "deadline?”. I answer from what was said, with the moment it was said; reply to my answer to go on asking."
    ),
    "help_digest": N_(
        "<b>Catch up</b>\n"
        "/digest: the topics, decisions, open questions and actions of this chat's voice notes of the last 24 hours "
        "(/digest 6h for less). /settings can send one every day."
    ),
    "help_chat_modes": N_(
        "<b>Your own analysis</b>\n"
        "/newmode NAME Title, and on the next lines what to look for in every voice note, adds a mode of this "
        "chat's own (in a group, its admins do): its answers get it as a section of their own. /chatmodes lists "
        "them, /dropmode NAME removes one."
    ),
    "chatmode_usage": N_(
        "How to add a mode of this chat's own: the name (capital letters) and a title on the first line, what to "
        "look for in every voice note on the next ones, for example:\n"
        "<code>/newmode DATES 📅 Dates\n"
        "List every date, deadline and appointment mentioned, with who committed to it.</code>"
    ),
    "chatmode_checking": N_("⏳ Trying “{title}” on a sample recording…"),
    "chatmode_defined": N_(
        "✅ “{title}” ({name}) is on in this chat: the answers to its voice notes get it as a section of their "
        "own. /chatmodes lists this chat's modes; /dropmode {name} removes it."
    ),
    "chatmode_replaced": N_("✅ “{title}” ({name}) is updated: the next voice notes get the new instruction."),
    "chatmode_refused_off": N_("Modes of a chat's own are switched off on this bot by its admins."),
    "chatmode_refused_too_many": P_(
        "❌ This chat has {count} mode of its own already, as many as it may. /dropmode it first.",
        "❌ This chat has {count} modes of its own already, as many as it may. /dropmode one first.",
    ),
    "chatmode_refused_name": N_(
        "❌ A mode's name is 1 to 24 capital Latin letters, digits or _, starting with a letter: DATES, CLIENT_ASKS."
    ),
    "chatmode_refused_title": N_("❌ The title is missing or too long: {max} characters at most."),
    "chatmode_refused_instruction": N_("❌ The instruction must be {min} to {max} characters long."),
    "chatmode_refused_refused": N_(
        "❌ The model would not follow this instruction on a sample recording ({reason}); nothing was saved. "
        "Put it another way and try again."
    ),
    "chatmode_refused_unchecked": N_(
        "⚠️ The instruction could not be tried just now ({reason}); nothing was saved. Please try again later."
    ),
    "chatmode_refused_unknown": N_("This chat has no mode {name}. /chatmodes lists them."),
    "chatmode_refused_budget": N_(
        "⚠️ Today's analysis budget is used up, so a new mode cannot be tried; nothing was saved. Please try again "
        "tomorrow."
    ),
    "chatmode_refused_limit": N_("❌ A chat may have 1 to {max} modes of its own."),
    "chatmode_refused_forgotten": N_("This mode was not kept: the chat's /forget came after it."),
    "chatmodes_header": N_("<b>This chat's own modes</b> ({count} of {limit}):"),
    "chatmodes_none": N_("This chat has no modes of its own."),
    "chatmode_dropped": N_("🗑 {name} is removed: the answers in this chat no longer have it."),
    "chatmode_policy": N_(
        "<b>Modes of a chat's own</b>: {state} · model <code>{model}</code> · at most {limit} per chat\n"
        "<code>/chatmode_policy on|off</code>, <code>/chatmode_policy model MODEL</code>, "
        "<code>/chatmode_policy limit N</code>"
    ),
    "chatmode_state_on": N_("switched on"),
    "chatmode_state_off": N_("switched off"),
    "chatmode_refused_model": N_(
        "❌ <code>{model}</code> cannot run the chats' own modes ({reason}); the policy is unchanged."
    ),
    "modes_header": N_("<b>Active analysis modes</b>"),
    "modes_none": N_("No analyzer is running right now: you would get the transcript only."),
    "transcript": N_("Transcript"),
    "missing_modes": N_("⚠️ Missing: {modes}: the analysis failed or took too long. The rest is above."),
    "not_audio": N_("😕 I could not read this file as sound: it is corrupt or not audio. Please send another one."),
    "no_speech": N_("🤫 I could not hear any speech in this recording. Please try again."),
    "too_long": N_("⏱ This recording is longer than {limit}, more than I handle. Please split it up."),
    "too_big": N_("📦 The file is over 20 MB, and Telegram does not let bots download those. Compress or split it."),
    "too_big_local": N_("📦 The file is over 2 GB, Telegram's own limit. Compress or split it."),
    "store_full": N_(
        "📦 I have no room for a file this big right now. Please send it again later, or compress it; ordinary "
        "voice messages still go through."
    ),
    "download_failed": N_("📡 I could not download the file from Telegram. Please send it again in a moment."),
    "internal": N_("🛠 Something broke on our side and I could not answer. Please send the message again."),
    "overdue": N_(
        "⌛️ I could not transcribe this recording in time: there is too much to do right now. Please send it "
        "again later."
    ),
    "private": N_(
        "🔒 This is a private bot. If you know its owner, ask them to add your Telegram id {id} to ALLOWED_USERS."
    ),
    "slow_down": N_("⏳ That is a lot of notes in one minute. Please send this one again in a minute."),
    "budget_exhausted": N_("⚠️ Today's analysis budget is used up: the transcript only, for today."),
    "ask_not_a_note": N_(
        "💬 To ask about a recording, reply with your question to my answer to it, or to the voice note itself."
    ),
    "ask_not_transcribed": N_(
        "💬 That recording has no transcript to ask about: it could not be transcribed. Send another one."
    ),
    "ask_expired": N_("💬 I no longer have that recording: notes are kept 24 hours. Send it again to ask about it."),
    "ask_forgotten": N_(
        "💬 That recording was deleted with /forget, so I cannot answer about it. Send it again to ask about it."
    ),
    "ask_in_flight": N_("💬 I am still working on that recording. Ask again once its answer is here."),
    "ask_budget": N_("⚠️ Today's analysis budget is used up: I cannot answer questions until tomorrow."),
    "ask_failed": N_("😕 I could not answer that just now. Please ask again in a minute."),
    "ask_off": N_(
        "ℹ️ Questions about recordings need an LLM, and this bot only transcribes. Its owner turns analyses on "
        "by setting OPENAI_API_KEY (or OPENAI_BASE_URL of a server of their own) and restarting it."
    ),
    "ask_slow_down": N_("⏳ That is a lot at once. Please ask again in a minute."),
    "ask_not_said": N_("The recording does not say."),
    "digest_usage": N_(
        "Usage: /digest for the voice notes of the last 24 hours, or /digest 6h for the last 6 (1 to 24 hours)."
    ),
    "digest_title": P_(
        "🗞 <b>Digest</b> · {span} · {count} voice note", "🗞 <b>Digest</b> · {span} · {count} voice notes"
    ),
    "last_hours": P_("the last {count} hour", "the last {count} hours"),
    "digest_daily_title": P_(
        "🗞 <b>Daily digest</b> · the last 24 hours · {count} voice note",
        "🗞 <b>Daily digest</b> · the last 24 hours · {count} voice notes",
    ),
    "digest_topics": N_("Topics"),
    "digest_decisions": N_("Decisions"),
    "digest_open_questions": N_("Open questions"),
    "digest_actions": N_("Actions"),
    "digest_sources": N_("Notes"),
    "digest_nothing_new": N_("Nothing else stood out."),
    "digest_empty": P_(
        "🗞 No voice note was answered in this chat in the last {count} hour, so there is nothing to digest.",
        "🗞 No voice note was answered in this chat in the last {count} hours, so there is nothing to digest.",
    ),
    "digest_budget": N_("⚠️ Today's analysis budget is used up: no digest until tomorrow."),
    "digest_failed": N_("😕 I could not write the digest just now. Please ask again in a minute: /digest"),
    "settings_digest": N_("Daily digest: {value}"),
    "button_digest": N_("🗞 Daily digest: {value}"),
    "digest_off": N_("off"),
    "digest_at": N_("{time} UTC"),
    "digest_pick": N_(
        "When should the daily digest of this chat's voice notes come? The times are UTC. It covers the day's "
        "notes and comes only when there were any."
    ),
    "unsupported": N_("I understand voice messages, audio files and video notes. Please send one of those."),
    "analyses_off": N_(
        "ℹ️ Analyses are off: this bot only transcribes. Its owner turns them on by setting OPENAI_API_KEY "
        "(or OPENAI_BASE_URL of a server of their own, such as Ollama) and restarting it."
    ),
    "button_transcript": N_("📄 Transcript"),
    "transcript_in_file": N_("📎 The full transcript is in the file below."),
    "transcript_file_caption": N_("📝 The transcript, with timestamps"),
    "subtitles_caption": N_("🎬 Subtitles (.srt)"),
    "on_its_way": N_("⏳ Still working on: {modes}"),
    "queue_position": N_("⏳ Notes ahead of yours in the queue: {ahead}{eta}."),
    "transcribing": N_("⏳ Transcribing: {done} of {total} min"),
    "queue_eta": N_(", about {seconds} s"),
    "note_expired": N_("⌛ This note is no longer kept (notes are kept for 24 hours). Please send it again."),
    "note_answered_already": N_("✅ This note is answered already: the answer is in reply to it."),
    "note_forgotten": N_("🧹 This note was deleted with /forget. Forward it again and I will transcribe it anew."),
    "rerun_status": N_("⏳ {mode}…"),
    "transcribe_usage": N_("Reply /transcribe to a voice message and I will transcribe it."),
    "settings": N_(
        "<b>⚙️ Settings for this chat</b>\n"
        "Answer language: {language}\n"
        "Modes: {modes}\n"
        "Transcript: {transcript}\n"
        "Vocabulary: {vocabulary}{group}"
    ),
    "settings_group": N_(
        "\n"
        "In the group: {trigger}\n"
        "\n"
        "<i>To hear every voice note in a group I must be its admin (or have privacy mode off in @BotFather). "
        "Otherwise reply /transcribe to a voice note, or mention me.</i>"
    ),
    "language_user": N_("your Telegram language"),
    "language_speech": N_("the language spoken"),
    "transcript_message": N_("in the message"),
    "transcript_file": N_("as a file"),
    "transcript_off": N_("off"),
    "trigger_every": N_("every voice note"),
    "trigger_request": N_("only on request"),
    "button_language": N_("🌐 Language: {value}"),
    "button_transcript_view": N_("📝 Transcript: {value}"),
    "button_trigger": N_("👥 {value}"),
    "button_vocabulary": N_("📚 Vocabulary"),
    "none": N_("—"),
    "settings_admins_only": N_("Only the group's admins can change its settings."),
    "vocabulary_usage": N_(
        "Names and jargon this chat uses, separated by commas, so that I spell them right:\n"
        "<code>/vocabulary Anna Petrova, Kubernetes, Tbilisi</code>\n"
        "<code>/vocabulary -</code> clears it."
    ),
    "vocabulary_set": N_("📚 Vocabulary: {words}"),
    "vocabulary_cleared": N_("📚 Vocabulary cleared."),
    "answer_below": N_("⬇️ The answer is below."),
    "buttons_sender_only": N_("🔒 Only the note's sender and the group's admins can use these buttons."),
    "transcript_sent_already": N_("📄 Already sent: transcript.txt and transcript.srt are below this answer ↓"),
    "rerun_below": N_("Already done: see the reply below ↓"),
    "rerun_on_its_way": N_("⏳ On its way: the reply will come below ↓"),
    "mode_off_here": N_("{mode} is switched off in this chat (/settings)."),
    "mode_not_running": N_("{mode} is not running right now. /list_modes shows which are."),
    "admin_only_stats": N_("🔐 Only the bot's admins can see its usage."),
    "admin_only_mode": N_("🔐 Only the bot's admins can see how a mode is set up."),
    "vocabulary_cut": N_(
        "✂️ That is longer than a vocabulary holds (the limit in characters: {count}): everything from "
        "“{first}” on was left out."
    ),
    "group_hello": N_(
        "👋 Hi! I turn voice notes into text: the transcript, the gist with key points and actions, and a "
        "reading of the tone.\n"
        "\n"
        "{how}{deaf}\n"
        "\n"
        "/settings: the answer's language, the modes and when I answer here (for the group's admins); /help "
        "for more."
    ),
    "group_hello_transcripts_only": N_(
        "👋 Hi! I turn voice notes into text: I send back the transcript.\n"
        "\n"
        "{how}{deaf}\n"
        "\n"
        "/settings: the answer's language and when I answer here (for the group's admins); /help for more."
    ),
    "group_how_every": N_(
        "Here I answer every voice note, round video note and audio file, in reply to it. A video or another "
        "file only when asked: reply /transcribe to it, or mention me."
    ),
    "group_how_request": N_(
        "Here I answer on request: reply /transcribe to a voice note, a video or a file, or mention me."
    ),
    "group_deaf": N_(
        "\n"
        "\n"
        "⚠️ I cannot see voice notes here yet: in a group, Telegram shows a bot only commands and mentions of "
        "it unless it is an admin. To have every voice note answered, make me an admin of this group (or turn "
        "my privacy mode off in @BotFather: /setprivacy → Disable, then add me again). Until then, reply "
        "/transcribe to a voice note, or mention me."
    ),
    "group_hears_now": N_("👂 Now I am an admin here and hear every voice note: each gets its answer."),
    "group_on_request_now": N_(
        "🙉 I am no longer an admin here, so I cannot see voice notes any more. Now only on request: reply "
        "/transcribe to a voice note, or mention me."
    ),
    "group_closed": N_(
        "🔒 This is a private bot, and this group is not let in. If you know its owner, ask them to add the "
        "group's id {id} to ALLOWED_USERS."
    ),
    "group_members_only": N_(
        "\n"
        "\n"
        "🔒 This is a private bot: here I answer only the people its owner let in. To have everyone's voice notes "
        "answered, ask the owner to add this group's id {id} to ALLOWED_USERS."
    ),
    "group_hears_now_members": N_(
        "👂 Now I am an admin here and hear every voice note: I answer those of the people let in to this private bot."
    ),
    "group_on_request_now_members": N_(
        "🙉 I am no longer an admin here, so I cannot see voice notes any more. Now only on request, for the people "
        "let in to this private bot: reply /transcribe to a voice note, or mention me."
    ),
    "group_private": N_("🔒 This is a private bot: in this group I answer only the people its owner let in."),
    "command_help": N_("How it works"),
    "command_settings": N_("Settings for this chat"),
    "command_transcribe": N_("Transcribe a voice note (as a reply)"),
    "command_digest": N_("A digest of this chat's voice notes"),
    "command_vocabulary": N_("Names and jargon"),
    "command_list_modes": N_("Analysis modes"),
    "command_chatmodes": N_("This chat's own modes"),
    "command_privacy": N_("What is kept"),
    "command_forget": N_("Delete this chat's data"),
    "language_pick": N_("🌐 Which language should answers in this chat be in?"),
    "language_back": N_("↩️ Back"),
    "language_auto": N_("analyses in the language spoken, the rest in your Telegram's"),
    "forgotten": N_(
        "🧹 Deleted:\n"
        "• notes, with their transcripts, analyses and audio: {count}\n"
        "• this chat's settings: {settings}\n"
        "Notes still in progress will be answered, then deleted at once. The messages in this chat stay until "
        "you delete them."
    ),
    "yes": N_("yes"),
    "no": N_("none"),
    "privacy_text": N_(
        "<b>🔐 What I keep</b>\n"
        "• Audio: only while transcribing; deleted as soon as you have the answer (24 hours at most).\n"
        "• Transcripts and analyses: 24 hours, for the buttons under the answer; cached analyses: 1 hour.\n"
        "• Your questions about a recording and my answers: 24 hours, as long as the recording, for follow-ups.\n"
        "• Who sent each voice note, by their Telegram name: 24 hours, for the chat's digest.\n"
        "• This chat's settings and its own modes: until you delete them, under a key that does not reveal the "
        "chat (a daily digest also keeps the chat's id, to send it to).\n"
        "• Logs, metrics and traces hold no words and none of your ids.\n"
        "<b>Who sees it</b>: {who}\n"
        "/forget deletes everything about this chat now."
    ),
    "privacy_who_llm": N_(
        "the transcript (and any question you ask about it) goes to the LLM provider ({provider}) to be analysed "
        "or answered; nobody else."
    ),
    "privacy_who_nobody": N_("nobody: this bot only transcribes, on its own server, and sends the text nowhere."),
    "modes_need_an_llm": N_(
        "ℹ️ Analyses are off on this bot, so there is nothing to check a mode with: set OPENAI_API_KEY (or "
        "OPENAI_BASE_URL of a server of your own) and restart it first."
    ),
    "admin_only": N_("🔐 Only the bot's admins can change analysis modes."),
    "admin_usage": N_("Usage: <code>{usage}</code>"),
    "mode_checking": N_("⏳ Checking {mode}: the model, a canary call…"),
    "mode_applied": N_("✅ {mode}: {action} done. Version {version}, model <code>{model}</code>."),
    "mode_refused": N_("❌ {mode}: {action} not applied; nothing changed:\n{problems}"),
    "stats_header": N_("<b>Modes, last 24 hours</b>"),
    "stats_none": N_("No analyses yet."),
    "stats_chat_modes": N_("<b>Chats' own modes</b> (by the chat's short key; their instructions are never shown)"),
    "mode_unknown": N_("There is no mode {mode}."),
    "mode_alert": N_("🚨 {detail}"),
    "busy": P_(
        "⏳ I am still working on {count} of your notes. Please send this one again once it is answered.",
        "⏳ I am still working on {count} of your notes. Please send this one again once those are answered.",
    ),
    "quota": P_(
        "📊 You have used today's {count} minute of listening. Please send it again tomorrow.",
        "📊 You have used today's {count} minutes of listening. Please send it again tomorrow.",
    ),
    "minutes": P_(
        "{count} min",
        "{count} min",
    ),
    "seconds": P_(
        "{count} s",
        "{count} s",
    ),
}


def messages() -> dict[str, str | Plural]:
    """Every message by its key (for the test that each has every language)."""
    return dict(_TEXTS)


def text(key: str, lang: str, **values: object) -> str:
    """The message `key` in `lang` (English when the bot has no catalog for it), its `{placeholders}` filled in;
    a message with a number picks its plural form by `count`."""
    entry = _TEXTS[key]
    locale = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
    if isinstance(entry, Plural):
        count = values["count"]  # a number, or one as a limit's refusal keeps it ("30", "0.5")
        n = count if isinstance(count, int) else int(float(str(count)))
        template = CATALOGS.gettext(entry.singular, entry.plural, n=n, locale=locale)
    else:
        template = CATALOGS.gettext(entry, locale=locale)
    return template.format(**values) if values else template


def duration_limit(seconds: float, lang: str) -> str:
    """'10 min' for whole minutes, '45 s' otherwise, in the reader's language."""
    if seconds >= 60 and seconds % 60 == 0:
        return text("minutes", lang, count=int(seconds // 60))
    return text("seconds", lang, count=int(seconds))
