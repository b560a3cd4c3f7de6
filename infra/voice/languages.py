"""The languages the bot speaks, and the names of every language it may hear.

The bot's own words come from gettext catalogs, one per language here (`infra.voice.texts`). A person whose
Telegram is set to a language the bot has no catalog for reads English. Names of languages (the one a note was
spoken in, the one a chat chose) come from Babel's CLDR data, in the reader's language: "German" for an English
reader, "немецкий" for a Russian one, never a code.
"""

from __future__ import annotations

from functools import cache

from babel import Locale, UnknownLocaleError

LANGUAGES: tuple[str, ...] = ("en", "ru", "uk", "de", "es", "pt", "fr", "it", "tr", "pl", "kk")
"""The bot's own words exist in these; English first (the fallback), then Russian (the product's second home)."""
DEFAULT_LANGUAGE = "en"


def ui_language(language_code: str | None) -> str:
    """The language of the bot's words for a Telegram `language_code` (`de`, `pt-br`, `uk`): its own when the bot
    has a catalog for it, else English."""
    code = (language_code or "").lower().replace("_", "-").split("-")[0]
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


@cache
def _locale(code: str) -> Locale | None:
    try:
        return Locale.parse(code)
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def language_name(code: str, reader: str = DEFAULT_LANGUAGE) -> str:
    """`code` named in the reader's language ("de" → "German", "немецкий", "Deutsch"); a code CLDR does not know
    (Whisper knows a few, e.g. `haw`, `jw`) is shown as it is rather than guessed."""
    locale = _locale(reader) or _locale(DEFAULT_LANGUAGE)
    assert locale is not None
    name = locale.languages.get(code) or (_locale(DEFAULT_LANGUAGE) or locale).languages.get(code)
    return name or code


def own_name(code: str) -> str:
    """A language named in itself, as a language menu lists them: "Deutsch", "українська", "Türkçe"."""
    locale = _locale(code)
    name = locale.get_display_name(code) if locale is not None else None
    return (name[:1].upper() + name[1:]) if name else code
