"""Everything the bot says in its own voice, in Russian and English.

The user's language comes from Telegram's `language_code`: Russian for `ru` (and the languages whose speakers
mostly read Russian comfortably is a product decision we have not made), English for everything else.
"""

from __future__ import annotations

from typing import Literal

Lang = Literal["ru", "en"]


def ui_language(language_code: str | None) -> Lang:
    return "ru" if (language_code or "").lower().split("-")[0] == "ru" else "en"


_TEXTS: dict[str, dict[Lang, str]] = {
    "listening": {"ru": "🎧 Слушаю…", "en": "🎧 Listening…"},
    "start": {
        "ru": (
            "Привет! Перешлите мне голосовое сообщение, аудиофайл или кружок — я пришлю расшифровку, "
            "краткое содержание с ключевыми пунктами и действиями, а также разбор тона: скрытые намерения, "
            "главную эмоцию и как лучше ответить.\n\n/help — подробнее, /list_modes — режимы анализа."
        ),
        "en": (
            "Hi! Forward me a voice message, an audio file or a video note and I will send back the transcript, "
            "a summary with key points and actions, and a reading of the tone: hidden intentions, the dominant "
            "emotion and how best to reply.\n\n/help for details, /list_modes for the analysis modes."
        ),
    },
    "start_transcripts_only": {
        "ru": (
            "Привет! Перешлите мне голосовое сообщение, аудиофайл или кружок — я пришлю расшифровку. "
            "Анализ (краткое содержание, разбор тона) на этом боте выключен.\n\n/help — подробнее."
        ),
        "en": (
            "Hi! Forward me a voice message, an audio file or a video note and I will send back the transcript. "
            "Analyses (a summary, a reading of the tone) are off on this bot.\n\n/help for details."
        ),
    },
    "help": {
        "ru": (
            "<b>Как пользоваться</b>\n"
            "• Запишите или перешлите голосовое, аудиофайл (mp3, ogg, m4a, wav…) или видеокружок.\n"
            "• Через несколько секунд статус «Слушаю…» сменится ответом.\n"
            "• Ограничения: до {limit} звучания и до 20 МБ на файл.\n"
            "• Данные хранятся не дольше 24 часов и только для ответа.\n"
            "• Под ответом — кнопки: расшифровка файлом (.txt и .srt) и другие режимы анализа.\n\n"
            "/settings — язык ответа, режимы, расшифровка, словарь, поведение в группе\n"
            "/transcribe — ответьте так на голосовое в группе\n"
            "/list_modes — какие анализы сейчас работают\n"
            "/privacy — что хранится, /forget — удалить всё об этом чате"
        ),
        "en": (
            "<b>How to use it</b>\n"
            "• Record or forward a voice message, an audio file (mp3, ogg, m4a, wav…) or a video note.\n"
            "• In a few seconds the “Listening…” status turns into the answer.\n"
            "• Limits: up to {limit} of sound and 20 MB per file.\n"
            "• What you send is kept at most 24 hours, only to answer you.\n"
            "• Under the answer: buttons for the transcript as files (.txt and .srt) and for other modes.\n\n"
            "/settings: answer language, modes, transcript, vocabulary, behaviour in groups\n"
            "/transcribe: reply with it to a voice note in a group\n"
            "/list_modes: which analyses are running\n"
            "/privacy: what is kept; /forget: delete everything about this chat"
        ),
    },
    "modes_header": {"ru": "<b>Активные режимы анализа</b>", "en": "<b>Active analysis modes</b>"},
    "modes_none": {
        "ru": "Сейчас ни один анализатор не запущен — пришлю только расшифровку.",
        "en": "No analyzer is running right now: you would get the transcript only.",
    },
    "transcript": {"ru": "Расшифровка", "en": "Transcript"},
    "missing_modes": {
        "ru": "⚠️ Нет результата: {modes} — анализ не удался или не успел. Остальное выше.",
        "en": "⚠️ Missing: {modes}: the analysis failed or took too long. The rest is above.",
    },
    "not_audio": {
        "ru": "😕 Не получилось прочитать этот файл как звук: он повреждён или это не аудио. Пришлите другой.",
        "en": "😕 I could not read this file as sound: it is corrupt or not audio. Please send another one.",
    },
    "no_speech": {
        "ru": "🤫 В этой записи не слышно речи. Попробуйте записать ещё раз.",
        "en": "🤫 I could not hear any speech in this recording. Please try again.",
    },
    "too_long": {
        "ru": "⏱ Запись длиннее {limit} — это больше, чем я обрабатываю. Разбейте её на части.",
        "en": "⏱ This recording is longer than {limit}, more than I handle. Please split it up.",
    },
    "too_big": {
        "ru": "📦 Файл больше 20 МБ — Telegram не даёт ботам скачивать такие. Сожмите или разбейте его.",
        "en": "📦 The file is over 20 MB, and Telegram does not let bots download those. Compress or split it.",
    },
    "too_big_local": {
        "ru": "📦 Файл больше 2 ГБ — это предел самого Telegram. Сожмите или разбейте его.",
        "en": "📦 The file is over 2 GB, Telegram's own limit. Compress or split it.",
    },
    "store_full": {
        "ru": (
            "📦 Для такого большого файла у меня сейчас нет места. Пришлите его позже или сожмите; "
            "обычные голосовые я по-прежнему принимаю."
        ),
        "en": (
            "📦 I have no room for a file this big right now. Please send it again later, or compress it; "
            "ordinary voice messages still go through."
        ),
    },
    "download_failed": {
        "ru": "📡 Не удалось скачать файл из Telegram. Пришлите его ещё раз чуть позже.",
        "en": "📡 I could not download the file from Telegram. Please send it again in a moment.",
    },
    "internal": {
        "ru": "🛠 Что-то сломалось на нашей стороне, и ответить не вышло. Пришлите сообщение ещё раз.",
        "en": "🛠 Something broke on our side and I could not answer. Please send the message again.",
    },
    "overdue": {
        "ru": "⌛️ Не успел расшифровать эту запись: сейчас слишком много работы. Пришлите её ещё раз позже.",
        "en": "⌛️ I could not transcribe this recording in time: there is too much to do right now. Please send it "
        "again later.",
    },
    "private": {
        "ru": "🔒 Это частный бот. Если вы знаете его владельца, попросите добавить ваш id {id} в ALLOWED_USERS.",
        "en": (
            "🔒 This is a private bot. If you know its owner, ask them to add your Telegram id {id} to ALLOWED_USERS."
        ),
    },
    "busy": {
        "ru": "⏳ Я ещё разбираю {count} ваших записей. Пришлите эту снова, когда на них придут ответы.",
        "en": "⏳ I am still working on {count} of your notes. Please send this one again once those are answered.",
    },
    "slow_down": {
        "ru": "⏳ Слишком много записей за минуту. Пришлите эту снова через минуту.",
        "en": "⏳ That is a lot of notes in one minute. Please send this one again in a minute.",
    },
    "quota": {
        "ru": "📊 Сегодняшний лимит — {minutes} мин прослушивания — исчерпан. Пришлите запись завтра.",
        "en": "📊 You have used today's {minutes} minutes of listening. Please send it again tomorrow.",
    },
    "budget_exhausted": {
        "ru": "⚠️ Дневной бюджет на анализ исчерпан: сегодня только расшифровка.",
        "en": "⚠️ Today's analysis budget is used up: the transcript only, for today.",
    },
    "unsupported": {
        "ru": "Я понимаю голосовые, аудиофайлы и видеокружки. Пришлите одно из них.",
        "en": "I understand voice messages, audio files and video notes. Please send one of those.",
    },
    "analyses_off": {
        "ru": (
            "ℹ️ Анализ выключен: этот бот только расшифровывает. Владелец включит его, задав OPENAI_API_KEY "
            "(или OPENAI_BASE_URL своего сервера, например Ollama) и перезапустив бота."
        ),
        "en": (
            "ℹ️ Analyses are off: this bot only transcribes. Its owner turns them on by setting OPENAI_API_KEY "
            "(or OPENAI_BASE_URL of a server of their own, such as Ollama) and restarting it."
        ),
    },
    # --- the answer and its buttons ---
    "button_transcript": {"ru": "📄 Расшифровка", "en": "📄 Transcript"},
    "transcript_in_file": {
        "ru": "📎 Полная расшифровка — в файле ниже.",
        "en": "📎 The full transcript is in the file below.",
    },
    "transcript_file_caption": {
        "ru": "📝 Расшифровка с отметками времени",
        "en": "📝 The transcript, with timestamps",
    },
    "subtitles_caption": {"ru": "🎬 Субтитры (.srt)", "en": "🎬 Subtitles (.srt)"},
    "on_its_way": {"ru": "⏳ Ещё готовлю: {modes}", "en": "⏳ Still working on: {modes}"},
    "queue_position": {
        "ru": "⏳ Перед вашей записью в очереди: {ahead}{eta}.",
        "en": "⏳ Notes ahead of yours in the queue: {ahead}{eta}.",
    },
    "transcribing": {"ru": "⏳ Расшифровываю: {done} из {total} мин", "en": "⏳ Transcribing: {done} of {total} min"},
    "queue_eta": {"ru": ", примерно {seconds} с", "en": ", about {seconds} s"},
    "note_expired": {
        "ru": "⌛ Эта запись уже не хранится (записи хранятся 24 часа). Перешлите её снова.",
        "en": "⌛ This note is no longer kept (notes are kept for 24 hours). Please send it again.",
    },
    "already_there": {"ru": "Уже готово — смотрите выше ↑", "en": "Already done: see above ↑"},
    "mode_not_live": {
        "ru": "Режим {mode} сейчас не работает. /list_modes — какие работают.",
        "en": "The {mode} mode is not running right now. /list_modes shows which are.",
    },
    "rerun_status": {"ru": "⏳ {mode}…", "en": "⏳ {mode}…"},
    # --- groups ---
    "transcribe_usage": {
        "ru": "Ответьте командой /transcribe на голосовое сообщение — и я его расшифрую.",
        "en": "Reply /transcribe to a voice message and I will transcribe it.",
    },
    # --- settings ---
    "settings": {
        "ru": (
            "<b>⚙️ Настройки этого чата</b>\n"
            "Язык ответа: {language}\n"
            "Режимы: {modes}\n"
            "Расшифровка: {transcript}\n"
            "Словарь: {vocabulary}{group}"
        ),
        "en": (
            "<b>⚙️ Settings for this chat</b>\n"
            "Answer language: {language}\n"
            "Modes: {modes}\n"
            "Transcript: {transcript}\n"
            "Vocabulary: {vocabulary}{group}"
        ),
    },
    "settings_group": {
        "ru": (
            "\nВ группе: {trigger}\n\n<i>Чтобы я слышал все голосовые в группе, сделайте меня администратором "
            "(или выключите privacy mode у @BotFather). Иначе отвечайте /transcribe на голосовое "
            "или упомяните меня.</i>"
        ),
        "en": (
            "\nIn the group: {trigger}\n\n<i>To hear every voice note in a group I must be its admin (or have "
            "privacy mode off in @BotFather). Otherwise reply /transcribe to a voice note, or mention me.</i>"
        ),
    },
    "language_user": {"ru": "язык Telegram", "en": "your Telegram language"},
    "language_ru": {"ru": "русский", "en": "Russian"},
    "language_en": {"ru": "английский", "en": "English"},
    "language_speech": {"ru": "язык записи", "en": "the language spoken"},
    "transcript_message": {"ru": "в сообщении", "en": "in the message"},
    "transcript_file": {"ru": "файлом", "en": "as a file"},
    "transcript_off": {"ru": "не присылать", "en": "off"},
    "trigger_every": {"ru": "каждое голосовое", "en": "every voice note"},
    "trigger_request": {"ru": "только по запросу", "en": "only on request"},
    "button_language": {"ru": "🌐 Язык: {value}", "en": "🌐 Language: {value}"},
    "button_transcript_view": {"ru": "📝 Расшифровка: {value}", "en": "📝 Transcript: {value}"},
    "button_trigger": {"ru": "👥 {value}", "en": "👥 {value}"},
    "button_vocabulary": {"ru": "📚 Словарь", "en": "📚 Vocabulary"},
    "none": {"ru": "—", "en": "—"},
    "settings_admins_only": {
        "ru": "Настройки группы меняют только её администраторы.",
        "en": "Only the group's admins can change its settings.",
    },
    "vocabulary_usage": {
        "ru": (
            "Имена и термины этого чата, через запятую — так я запишу их правильно:\n"
            "<code>/vocabulary Анна Петрова, Kubernetes, Тбилиси</code>\n<code>/vocabulary -</code> очищает словарь."
        ),
        "en": (
            "Names and jargon this chat uses, separated by commas, so that I spell them right:\n"
            "<code>/vocabulary Anna Petrova, Kubernetes, Tbilisi</code>\n<code>/vocabulary -</code> clears it."
        ),
    },
    "vocabulary_set": {"ru": "📚 Словарь: {words}", "en": "📚 Vocabulary: {words}"},
    "vocabulary_cleared": {"ru": "📚 Словарь очищен.", "en": "📚 Vocabulary cleared."},
    # --- the user's data ---
    "forgotten": {
        "ru": (
            "🧹 Удалено всё, что хранилось об этом чате: записей с расшифровками, анализами и их копиями в "
            "кэше — {notes}, сообщений в очереди — {messages}, настройки — {settings}. Записи, которые ещё в "
            "работе, получат ответ и тоже будут удалены."
        ),
        "en": (
            "🧹 Deleted everything kept about this chat: {notes} notes with their transcripts, analyses and "
            "cached copies, {messages} queued messages, settings: {settings}. Notes still in progress will be "
            "answered, and then deleted as well."
        ),
    },
    "yes": {"ru": "да", "en": "yes"},
    "no": {"ru": "нет", "en": "none"},
    "privacy_text": {
        "ru": (
            "<b>🔐 Что я храню</b>\n"
            "• Аудио — только пока делаю расшифровку, удаляется сразу после ответа (максимум 24 часа).\n"
            "• Расшифровку и анализы — 24 часа, чтобы работали кнопки под ответом; кэш анализов — 1 час.\n"
            "• Настройки чата — пока вы их не удалите; под ключом, по которому нельзя узнать чат.\n"
            "• В журналах, метриках и трассировках нет ни текста, ни ваших идентификаторов.\n"
            "<b>Кто видит</b>: {who}\n"
            "/forget — удалить всё об этом чате сейчас."
        ),
        "en": (
            "<b>🔐 What I keep</b>\n"
            "• Audio: only while transcribing; deleted as soon as you have the answer (24 hours at most).\n"
            "• Transcripts and analyses: 24 hours, for the buttons under the answer; cached analyses: 1 hour.\n"
            "• This chat's settings: until you delete them, under a key that does not reveal the chat.\n"
            "• Logs, metrics and traces hold no words and none of your ids.\n"
            "<b>Who sees it</b>: {who}\n"
            "/forget deletes everything about this chat now."
        ),
    },
    "privacy_who_llm": {
        "ru": "расшифровку отправляю модели LLM ({provider}) для анализа; больше никто.",
        "en": "the transcript goes to the LLM provider ({provider}) to be analysed; nobody else.",
    },
    "privacy_who_nobody": {
        "ru": "никто: этот бот только расшифровывает, у себя, и никуда текст не отправляет.",
        "en": "nobody: this bot only transcribes, on its own server, and sends the text nowhere.",
    },
    # --- for admins ---
    "modes_need_an_llm": {
        "ru": (
            "ℹ️ Анализ на этом боте выключен, менять режимы нечем: сначала задайте OPENAI_API_KEY "
            "(или OPENAI_BASE_URL своего сервера) и перезапустите бота."
        ),
        "en": (
            "ℹ️ Analyses are off on this bot, so there is nothing to check a mode with: set OPENAI_API_KEY "
            "(or OPENAI_BASE_URL of a server of your own) and restart it first."
        ),
    },
    "admin_only": {
        "ru": "🔐 Режимы анализа меняют только администраторы бота.",
        "en": "🔐 Only the bot's admins can change analysis modes.",
    },
    "admin_usage": {"ru": "Как: <code>{usage}</code>", "en": "Usage: <code>{usage}</code>"},
    "mode_checking": {
        "ru": "⏳ Проверяю {mode}: модель, пробный запрос…",
        "en": "⏳ Checking {mode}: the model, a canary call…",
    },
    "mode_applied": {
        "ru": "✅ {mode}: {action} — готово. Версия {version}, модель <code>{model}</code>.",
        "en": "✅ {mode}: {action} done. Version {version}, model <code>{model}</code>.",
    },
    "mode_refused": {
        "ru": "❌ {mode}: {action} не применено, ничего не изменилось:\n{problems}",
        "en": "❌ {mode}: {action} not applied; nothing changed:\n{problems}",
    },
    "stats_header": {"ru": "<b>Режимы за 24 часа</b>", "en": "<b>Modes, last 24 hours</b>"},
    "stats_none": {"ru": "Анализов не было.", "en": "No analyses yet."},
    "mode_unknown": {"ru": "Режима {mode} нет.", "en": "There is no mode {mode}."},
    "mode_alert": {"ru": "🚨 {detail}", "en": "🚨 {detail}"},
}


def duration_limit(seconds: float, lang: Lang | str) -> str:
    """'10 min' / '10 мин' for whole minutes, '45 s' / '45 с' otherwise."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} {'мин' if lang == 'ru' else 'min'}"
    return f"{int(seconds)} {'с' if lang == 'ru' else 's'}"


def text(key: str, lang: Lang | str, **values: object) -> str:
    variants = _TEXTS[key]
    template = variants["ru" if lang == "ru" else "en"]
    return template.format(**values) if values else template
