"""Long synthetic speech for benchmarks: varied sentences (no repetition loops), spoken by espeak-ng.

Whisper degrades on verbatim-repeated text in ways real voice notes never trigger, so scripts are built from
seeded combinations of names, actions, objects and times: every sentence differs, the vocabulary stays plain.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
import wave
from pathlib import Path

_EN = {
    "who": [
        "Anna",
        "the design team",
        "our lawyer",
        "Michael",
        "the new intern",
        "the client",
        "Sarah",
        "the finance department",
        "my brother",
        "the landlord",
    ],
    "does": [
        "will review",
        "has to sign",
        "wants to discuss",
        "can prepare",
        "should send",
        "forgot to check",
        "promised to update",
        "is waiting for",
        "needs to approve",
        "will present",
    ],
    "what": [
        "the quarterly budget",
        "the rental contract",
        "the marketing plan",
        "the delivery schedule",
        "the new website",
        "the insurance papers",
        "the hiring process",
        "the sales report",
        "the travel booking",
        "the product demo",
    ],
    "when": [
        "before Friday",
        "tomorrow morning",
        "next Tuesday",
        "by the end of the month",
        "after lunch",
        "this evening",
        "early next week",
        "on Thursday afternoon",
        "before the meeting",
        "as soon as possible",
    ],
    "tail": [
        "so please keep that in mind.",
        "because the deadline is close.",
        "and I will call you later.",
        "otherwise we lose a lot of time.",
        "if nothing else changes.",
        "and let me know what you think.",
        "as we agreed last week.",
        "which is really important for us.",
    ],
}
_RU = {
    "who": [
        "Анна",
        "наш юрист",
        "отдел продаж",
        "Михаил",
        "новый стажёр",
        "клиент",
        "Светлана",
        "бухгалтерия",
        "мой брат",
        "хозяйка квартиры",
    ],
    "does": [
        "проверит",
        "должен подписать",
        "хочет обсудить",
        "подготовит",
        "отправит",
        "забыл проверить",
        "обещал обновить",
        "ждёт",
        "должна утвердить",
        "представит",
    ],
    "what": [
        "квартальный бюджет",
        "договор аренды",
        "план маркетинга",
        "график поставок",
        "новый сайт",
        "страховые документы",
        "отчёт по продажам",
        "бронирование поездки",
        "презентацию продукта",
        "список задач",
    ],
    "when": [
        "до пятницы",
        "завтра утром",
        "в следующий вторник",
        "к концу месяца",
        "после обеда",
        "сегодня вечером",
        "в начале недели",
        "в четверг днём",
        "перед встречей",
        "как можно скорее",
    ],
    "tail": [
        "так что имей это в виду.",
        "потому что срок уже близко.",
        "и я перезвоню позже.",
        "иначе мы потеряем много времени.",
        "если ничего не изменится.",
        "и напиши, что ты думаешь.",
        "как мы договорились на прошлой неделе.",
        "это очень важно для нас.",
    ],
}
VOICES = {"en": ("en-us", 160), "ru": ("ru", 150)}
WORDS_PER_SECOND = {"en": 2.95, "ru": 2.36}
"""Measured for these voices and speeds, so a 60 s script speaks for about 60 s."""


def script(language: str, seconds: float, seed: int = 7) -> str:
    """About `seconds` of speech, in distinct sentences."""
    parts = _EN if language == "en" else _RU
    rng = random.Random(seed)
    sentences, words, seen = [], 0, set()
    while words < seconds * WORDS_PER_SECOND[language]:
        combo = tuple(rng.choice(parts[k]) for k in ("who", "does", "what", "when", "tail"))
        if combo[:4] in seen:
            continue
        seen.add(combo[:4])
        sentence = " ".join(combo)
        sentences.append(sentence[0].upper() + sentence[1:])
        words += len(sentence.split())
    return " ".join(sentences)


def speak(text: str, language: str, folder: Path | None = None) -> tuple[bytes, float]:
    """OGG/Opus bytes as Telegram sends voice notes, and the duration in seconds."""
    folder = folder or Path(tempfile.mkdtemp(prefix="vi-speech-"))
    voice, speed = VOICES[language]
    wav = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True)
    with wave.open(str(wav)) as w:
        duration = w.getnframes() / w.getframerate()
    return voice_note(wav), duration


def sentences(language: str, seconds: float, seed: int = 7) -> list[str]:
    """`script`, as its sentences."""
    return [s if s.endswith(".") else s + "." for s in script(language, seconds, seed).split(". ")]


def spaced(
    said: list[str], pauses: list[float | None], language: str, folder: Path, total: float = 0.0
) -> tuple[bytes, list[float], float]:
    """One recording of `said`, each sentence followed by its pause in seconds (a meeting with its silences);
    the pauses given as None share what is left to make the recording `total` seconds long. Returns the
    OGG/Opus bytes, when each sentence starts, and the whole duration."""
    voice, speed = VOICES[language]
    parts = []
    for n, sentence in enumerate(said):
        parts.append(folder / f"sentence-{n}.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(parts[-1]), sentence], check=True)
    with wave.open(str(parts[0])) as w:
        params, rate = w.getparams(), w.getframerate()
    spoken = sum(wave.open(str(p)).getnframes() for p in parts) / rate
    fixed = sum(p for p in pauses if p is not None)
    open_pauses = sum(p is None for p in pauses)
    share = max(0.0, total - spoken - fixed) / open_pauses if open_pauses else 0.0
    out = folder / "spaced.wav"
    starts: list[float] = []
    with wave.open(str(out), "wb") as joined:
        joined.setparams(params)
        for part, pause in zip(parts, pauses, strict=True):
            starts.append(joined.tell() / rate)
            with wave.open(str(part)) as w:
                joined.writeframes(w.readframes(w.getnframes()))
            joined.writeframes(b"\x00\x00" * int((share if pause is None else pause) * rate))
            part.unlink()
        duration = joined.tell() / rate
    return voice_note(out), starts, duration


def voice_note(wav: Path) -> bytes:
    """Encode a WAV the way Telegram stores voice notes: OGG/Opus, 48 kHz mono, VoIP tuning."""
    ogg = wav.with_suffix(".ogg")
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(wav),
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-ar",
            "48000",
            "-ac",
            "1",
            "-application",
            "voip",
            str(ogg),
        ],
        check=True,
    )
    return ogg.read_bytes()
