"""The bot's words in every language it speaks (issue 23, item 5): gettext catalogs that Babel's own tools read and
write, every message in every language with the same placeholders and markup Telegram takes, plural forms as each
language counts, compiled catalogs that match their sources, menus per language, and languages named, not coded."""

from __future__ import annotations

import gettext
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

import infra.voice.texts
from gateway.menus import MENU, set_menus
from infra.voice.languages import LANGUAGES, language_name, own_name, ui_language
from infra.voice.texts import LOCALES, Plural, duration_limit, messages, text
from tests.support import TOKEN, Speech, Stack, answer_to, new_chat
from voice_insight.doubles.openai_api import OpenAIDouble
from voice_insight.doubles.telegram_api import BadRequest, TelegramDouble, parse_html

ROOT = Path(__file__).parents[1]
DEVELOPMENT = ROOT / "docs" / "development.md"
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
TAG = re.compile(r"</?[a-z]+>")
COMMAND = re.compile(r"(?<![\w<])/[a-z_]{3,}")
SAMPLE_COUNTS = (0, 1, 2, 3, 4, 5, 11, 12, 14, 21, 22, 25, 101, 111)


def catalog(lang: str):  # type: ignore[no-untyped-def]
    with open(LOCALES / lang / "LC_MESSAGES" / "messages.po", "rb") as po:
        return read_po(po, locale=lang)


def extracted() -> set[str | tuple[str, str]]:
    """The messages the code can say, as Babel finds them (`-k N_ -k P_:1,2`)."""
    found = extract_from_file("python", infra.voice.texts.__file__, keywords={"N_": None, "P_": (1, 2)})
    return {message for _, message, _, _ in found}


def test_the_template_is_what_pybabel_extracts_from_the_code(tmp_path: Path) -> None:
    """docs/development.md's own command, run as written: the committed template is its output."""
    command = DEVELOPMENT.read_text().split("```sh\n.venv/bin/pybabel extract", 1)[1].split("\n", 1)[0]
    args = shlex.split("extract" + command.replace("infra/voice/locales/messages.pot", str(tmp_path / "new.pot")))
    subprocess.run([Path(sys.executable).with_name("pybabel"), *args], cwd=ROOT, check=True, capture_output=True)
    assert (tmp_path / "new.pot").read_bytes() == (LOCALES / "messages.pot").read_bytes(), "run `pybabel extract`"
    with open(LOCALES / "messages.pot", "rb") as pot:
        template = {m.id for m in read_po(pot) if m.id}
    assert template == extracted()
    assert template == {(m.singular, m.plural) if isinstance(m, Plural) else m for m in messages().values()}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_message_has_this_language_with_its_placeholders_markup_and_commands(lang: str) -> None:
    found = catalog(lang)
    wanted = extracted()
    assert {m.id for m in found if m.id} == wanted, "the catalog is behind the code: run `pybabel update`"
    problems = []
    for message in found:
        if not message.id:
            continue
        source = message.id if isinstance(message.id, tuple) else (message.id,)
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.fuzzy or not all(forms):
            problems.append(f"{source[0][:50]!r}: {'fuzzy' if message.fuzzy else 'untranslated'}")
            continue
        assert len(forms) == (found.num_plurals if isinstance(message.id, tuple) else 1)
        for form in forms:
            if set(PLACEHOLDER.findall(form)) != set(PLACEHOLDER.findall(source[-1])):
                problems.append(f"{source[0][:50]!r}: placeholders {PLACEHOLDER.findall(form)}")
            if sorted(TAG.findall(form)) != sorted(TAG.findall(source[0])):
                problems.append(f"{source[0][:50]!r}: markup {TAG.findall(form)}")
            if set(COMMAND.findall(form)) != set(COMMAND.findall(source[0])):
                problems.append(f"{source[0][:50]!r}: commands {COMMAND.findall(form)}")
            try:
                parse_html(PLACEHOLDER.sub("1", form))  # what Telegram would refuse
            except BadRequest as refused:
                problems.append(f"{source[0][:50]!r}: {refused.description}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_a_language_is_translated_not_copied_from_english(lang: str) -> None:
    found = [m for m in catalog(lang) if m.id and isinstance(m.id, str)]
    copied = [m.id for m in found if m.string == m.id and len(m.id) > 12]
    assert len(copied) <= 2, copied


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_compiled_catalog_says_what_its_source_says(lang: str) -> None:
    with open(LOCALES / lang / "LC_MESSAGES" / "messages.mo", "rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    for message in catalog(lang):
        if not message.id:
            continue
        if isinstance(message.id, tuple):
            for n in SAMPLE_COUNTS:
                index = eval_plural(catalog(lang).plural_expr, n)
                assert compiled.ngettext(*message.id, n) == message.string[index], "run `pybabel compile`"
        else:
            assert compiled.gettext(message.id) == message.string, "run `pybabel compile`"


def eval_plural(expr: str, n: int) -> int:
    """A catalog's C plural expression, evaluated the way gettext does."""
    return int(gettext.c2py(expr)(n))


@pytest.mark.parametrize(
    ("lang", "count", "word"),
    [
        ("en", 1, "1 minute "),
        ("en", 2, "2 minutes"),
        ("ru", 1, "1 минута"),
        ("ru", 2, "2 минуты"),
        ("ru", 5, "5 минут"),
        ("ru", 21, "21 минута"),
        ("ru", 12, "12 минут"),
    ],
)
def test_a_number_takes_the_form_its_language_gives_it(lang: str, count: int, word: str) -> None:
    assert word in text("quota", lang, count=count)


@pytest.mark.parametrize("lang", ["ru", "uk", "pl"])
def test_languages_with_three_forms_use_all_three(lang: str) -> None:
    said = {n: text("quota", lang, count=n).replace(str(n), "#") for n in (1, 2, 5)}
    assert len(set(said.values())) == 3, said
    assert text("quota", lang, count=22).replace("22", "#") == said[2]
    assert text("quota", lang, count=12).replace("12", "#") == said[5]
    # 21 reads like 1 in Russian and Ukrainian ("21 минута"), like 5 in Polish ("21 minut")
    assert text("quota", lang, count=21).replace("21", "#") == said[5 if lang == "pl" else 1]


def test_a_limit_kept_as_text_still_counts() -> None:
    assert text("quota", "ru", count="30") == text("quota", "ru", count=30)
    assert duration_limit(600, "de") == text("minutes", "de", count=10)


def test_the_bots_language_follows_telegrams_and_falls_back_to_english() -> None:
    assert [ui_language(c) for c in ("de", "pt-br", "uk", "kk", "be", None, "")] == ["de", "pt", "uk", "kk"] + [
        "en"
    ] * 3
    assert text("listening", "xx") == text("listening", "en")


def test_languages_are_named_in_the_readers_language_never_coded() -> None:
    assert language_name("de", "en") == "German"
    assert language_name("de", "ru") == "немецкий"
    assert language_name("uk", "de") == "Ukrainisch"
    assert language_name("ja", "kk") != "ja"
    assert language_name("haw", "ru") != "haw"
    assert [own_name(code) for code in ("de", "uk", "tr")] == ["Deutsch", "Українська", "Türkçe"]


async def test_each_language_gets_its_own_command_menu() -> None:
    telegram = TelegramDouble(TOKEN)
    await telegram.start()
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url)))
    try:
        await set_menus(bot)
    finally:
        await bot.session.close()
        await telegram.stop()
    assert {lang for _, lang in telegram.commands} == {"", *LANGUAGES}
    for commands in telegram.commands.values():
        assert [c["command"] for c in commands] == list(MENU)
        assert " / " not in commands[0]["description"], "one language per menu"
    assert telegram.commands[("default", "de")][0]["description"] == text("command_help", "de")
    assert telegram.commands[("default", "de")] != telegram.commands[("default", "en")]
    assert telegram.commands[("default", "")] == telegram.commands[("default", "en")]


def test_catalogs_ship_with_the_package() -> None:
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"voice/locales/*/LC_MESSAGES/*"' in pyproject


# --- through the whole stack ------------------------------------------------------------------------------

DE_TEXT = "Guten Morgen. Wir treffen uns am Montag um zehn Uhr im Büro und besprechen das neue Budget."


async def test_a_german_speaker_hears_back_in_german_with_german_analyses(
    stack: Stack, telegram: TelegramDouble, speech: Speech, openai_double: OpenAIDouble
) -> None:
    chat = new_chat()
    voice = await telegram.send_media(chat, speech.say(DE_TEXT, voice="de"), duration=7, language_code="de")
    await telegram.wait_for(lambda: any(m.history[0] == text("listening", "de") for m in telegram.messages(chat)), 60)
    answer = await answer_to(telegram, chat, voice)
    assert answer.text.startswith(f"📝 {text('transcript', 'de')} · Deutsch · 0:0"), answer.text
    assert "📌 Das Wichtigste" in answer.text and "Zusammenfassung" in answer.text
    assert "🎭 Tonfall" in answer.text and "Verborgene Absichten" in answer.text
    assert "Write every value in German" in str(openai_double.requests[-1])


async def test_a_note_in_another_language_gets_analyses_in_that_language_and_the_frame_in_the_readers(
    stack: Stack, telegram: TelegramDouble, speech: Speech, openai_double: OpenAIDouble
) -> None:
    """The default: someone whose Telegram is in English forwards a German note; the bot's words stay English,
    the analyses come in German (with German headings), the language is named, not coded."""
    chat = new_chat()
    voice = await telegram.send_media(chat, speech.say(DE_TEXT, voice="de"), duration=7, language_code="en")
    answer = await answer_to(telegram, chat, voice)
    assert answer.text.startswith("📝 Transcript · German · 0:0"), answer.text
    assert "📌 Das Wichtigste" in answer.text and "Zusammenfassung" in answer.text
    assert "Write every value in German" in str(openai_double.requests[-1])
