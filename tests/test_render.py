"""Rendering: every message fits Telegram's limit and parses as Telegram HTML, whatever the text holds."""

from __future__ import annotations

from typing import Literal

import msgspec

from formatter.join import JoinState
from formatter.render import Attachment, Part, pack, render_answer, render_failure, render_progress, shown_modes
from infra.domain.contracts import Analysis, AudioReceived, AudioRef, Failure, Origin, Section, Segment
from infra.domain.notes import button_proof
from infra.voice.buttons import CALLBACK_LIMIT, ModePress, TranscriptPress, answer_keyboard, parse_press
from tests.support import a_transcript
from voice_insight.doubles.telegram_api import MESSAGE_LIMIT, parse_html, utf16_len

ORIGIN = Origin(chat_id=1, message_id=2, status_message_id=3, ui_language="en", language_hint="en")


def state_with(
    text: str,
    analyses: dict[str, Analysis],
    modes: tuple[str, ...] = ("DEFAULT", "TONE"),
    view: Literal["message", "file", "off"] = "message",
    segments: tuple[Segment, ...] = (),
    titles: dict[str, dict[str, str]] | None = None,
    lang: str = "en",
) -> JoinState:
    state = JoinState()
    origin = msgspec.structs.replace(ORIGIN, transcript_view=view, ui_language=lang)
    audio = AudioRef(object_name="c", kind="voice", size=1)
    state.apply(AudioReceived(correlation_id="c", origin=origin, audio=audio, modes=modes, titles=titles or {}))
    transcript = a_transcript("c", text, language_probability=0.9, duration=125.0, segments=segments)
    state.apply(transcript)
    for analysis in analyses.values():
        state.apply(analysis)
    return state


def gist(**kw: object) -> Analysis:
    return Analysis(
        correlation_id="c",
        mode="DEFAULT",
        title="📌 The gist",
        model="o3",
        sections=(
            Section(heading="Summary", body="Budget <moved> & approved"),
            Section(heading="Key points", items=("a < b", "R&D")),
        ),
        **kw,
    )  # type: ignore[arg-type]


def test_text_is_escaped_and_valid_telegram_html() -> None:
    messages = render_answer(state_with("Is 3 < 5 & <b>bold</b>?", {"DEFAULT": gist()}, modes=("DEFAULT",)))
    assert len(messages) == 1
    visible = parse_html(texts_of(messages)[0])
    assert "Is 3 < 5 & <b>bold</b>?" in visible
    assert "Summary: Budget <moved> & approved" in visible and "• a < b" in visible and "• R&D" in visible
    assert visible.startswith("📝 Transcript · English · 2:05")


def texts_of(parts: list[Part]) -> list[str]:
    """The messages of an answer (its files left out), each checked as Telegram checks it."""
    texts = [p for p in parts if isinstance(p, str)]
    for message in texts:
        assert len(message) <= MESSAGE_LIMIT
        assert utf16_len(parse_html(message)) <= MESSAGE_LIMIT  # parse_html raises where Telegram would refuse
    return texts


def test_a_transcript_longer_than_a_message_comes_as_a_file_with_its_opening_inline() -> None:
    """Issue 11: a long transcript is one message (its opening, the analyses) and a `.txt`, not ten messages."""
    sentence = "Fish & chips <cost> more than 5 > 3 pounds, Дорогие коллеги. "
    segments = tuple(Segment(i * 4.0, i * 4.0 + 4.0, sentence.strip()) for i in range(600))
    state = state_with(sentence * 600, {"DEFAULT": gist()}, segments=segments)
    parts = render_answer(state)
    assert len(parts) == 2 and isinstance(parts[1], Attachment), parts
    (message,) = texts_of(parts)
    visible = parse_html(message)
    assert visible.startswith("📝 Transcript · English · 2:05\nFish & chips <cost> more than 5 > 3 pounds")
    assert "The full transcript is in the file below." in visible and visible.count("chips") < 20
    assert "Summary: Budget <moved> & approved" in visible and "⚠️ Missing: TONE" in visible
    lines = parts[1].content.decode().splitlines()
    assert parts[1].name == "transcript.txt" and len(lines) == 600
    assert lines[0] == f"[00:00] {sentence.strip()}" and lines[-1].startswith("[39:56] Fish & chips <cost>")


def test_long_analyses_split_into_valid_messages_within_the_limit() -> None:
    sentence = "Fish & chips <cost> more than 5 > 3 pounds, Дорогие коллеги. "
    sections = (Section(heading="Summary", body=sentence * 300), Section(heading="Items", items=("x",) * 400))
    long = msgspec.structs.replace(gist(), sections=sections)
    messages = texts_of(render_answer(state_with("Short.", {"DEFAULT": long})))
    assert len(messages) > 4
    joined = "\n".join(parse_html(m) for m in messages)
    assert joined.count("chips") == 300 and joined.count("<cost>") == 300, "no word lost or cut in half"
    assert joined.count("• x") == 400 and "⚠️ Missing: TONE" in joined


def test_the_chat_decides_how_the_transcript_comes() -> None:
    as_file = texts_of(parts := render_answer(state_with("Hello there.", {}, modes=(), view="file")))
    assert "Hello there" not in as_file[0] and "in the file below" in as_file[0]
    assert isinstance(parts[1], Attachment) and parts[1].content == b"Hello there.\n"
    off = render_answer(state_with("Hello there.", {"DEFAULT": gist()}, modes=("DEFAULT",), view="off"))
    assert len(off) == 1 and isinstance(off[0], str) and "Transcript" not in off[0] and "Budget" in off[0]


def test_a_word_longer_than_a_message_is_still_delivered() -> None:
    parts = render_answer(state_with("&" * 9000, {}, modes=()))
    assert all(len(m) <= MESSAGE_LIMIT for m in texts_of(parts))
    assert isinstance(parts[1], Attachment) and parts[1].content.count(b"&") == 9000


def test_failed_and_late_modes() -> None:
    failed = Analysis(correlation_id="c", mode="TONE", title="🎭 Tone", model="gpt-4o", error="http_500")
    late = Analysis(correlation_id="c", mode="EXTRA", title="Extra", model="m", text="plain <text>")
    visible = parse_html(
        "\n".join(texts_of(render_answer(state_with("hi", {"DEFAULT": gist(), "TONE": failed, "EXTRA": late}))))
    )
    assert visible.count("🎭 Tone") == 1, "no block of its own"
    assert "⚠️ Missing: 🎭 Tone" in visible, "named by the title its analysis came with"
    assert "Extra\nplain <text>" in visible


TITLES = {"DEFAULT": {"en": "📌 The gist", "ru": "📌 Суть"}, "TONE": {"en": "🎭 Tone", "ru": "🎭 Тон"}}


def test_modes_are_named_by_their_titles_in_the_answers_language() -> None:
    """Issue 23: "⚠️ Missing: TONE" and "⏳ Still working on: DEFAULT, TONE" showed the modes' internal names."""
    answer = texts_of(render_answer(state_with("hi", {"DEFAULT": gist()}, titles=TITLES)))
    assert "⚠️ Missing: 🎭 Tone" in parse_html(answer[0]) and "TONE" not in answer[0]
    progress = render_progress(state_with("hi", {}, titles=TITLES))
    assert progress is not None and "⏳ Still working on: 📌 The gist, 🎭 Tone" in parse_html(progress)
    russian = render_progress(state_with("hi", {}, titles=TITLES, lang="ru"))
    assert russian is not None and "⏳ Ещё готовлю: 📌 Суть, 🎭 Тон" in russian
    before = render_progress(state_with("hi", {}))  # a note from before titles travelled: names, not nothing
    assert before is not None and "DEFAULT, TONE" in before
    long = {"TONE": {"en": "<b>" + "very " * 100}}
    nothing = render_answer(state_with("", {}, modes=("TONE",), view="off", titles=long))
    visible = parse_html(texts_of(nothing)[0])
    assert "Missing: <b>very" in visible and visible.count("very") < 20, "a title from elsewhere: escaped, cut"


def test_the_modes_in_the_answer_are_those_it_shows() -> None:
    """What the buttons under the answer do not offer again: an analysis that shows nothing is not in it."""
    empty = Analysis(correlation_id="c", mode="TONE", title="🎭 Tone", model="m", sections=(Section(heading="x"),))
    late = Analysis(correlation_id="c", mode="EXTRA", title="Extra", model="m", text="plain")
    assert shown_modes(state_with("hi", {"DEFAULT": gist(), "TONE": empty, "EXTRA": late})) == ("DEFAULT", "EXTRA")


def test_failures_render_in_the_users_language() -> None:
    assert render_failure("no_speech", "ru", 600).startswith("🤫 В этой записи не слышно речи")
    assert "10 min" in render_failure("too_long", "en", 600)
    assert "45 с" in render_failure("too_long", "ru", 45)


def test_join_state_completes_only_with_everything_or_a_failure() -> None:
    state = JoinState()
    assert not state.complete
    state.apply(Failure(correlation_id="c", stage="transcriber", reason="no_speech"))
    assert not state.complete, "no origin yet: nowhere to answer"
    state.apply(
        AudioReceived(
            correlation_id="c", origin=ORIGIN, audio=AudioRef(object_name="c", kind="voice", size=1), modes=("DEFAULT",)
        )
    )
    assert state.complete and state.failed

    ok = state_with("hi", {}, modes=("DEFAULT",))
    assert not ok.complete
    ok.apply(Analysis(correlation_id="c", mode="DEFAULT", title="t", model="m", error="timeout"))
    assert ok.complete and ok.missing_modes() == ["DEFAULT"]
    ok.apply(gist())
    assert ok.missing_modes() == [], "a success replaces an earlier failure"
    ok.apply(Analysis(correlation_id="c", mode="DEFAULT", title="t", model="m", error="timeout"))
    assert ok.missing_modes() == [], "...and is not replaced by a later one"


def test_pack_never_exceeds_the_limit() -> None:
    blocks = [["x" * 100] * 50, ["y" * 4000], ["z"]]
    messages = pack(blocks, limit=4096)
    assert all(len(m) <= 4096 for m in messages)
    assert "".join(messages).count("x") == 5000 and "y" * 4000 in messages[-2] + messages[-1]


def test_emoji_count_double_as_telegram_counts_them() -> None:
    """Telegram counts UTF-16 code units: 3000 characters of emoji are 5000 units, more than a message."""
    parts = render_answer(state_with("🙂🙂 " * 1000, {}, modes=()))
    assert len(texts_of(parts)) == 1 and isinstance(parts[1], Attachment), "too long for a message: a file"
    assert parts[1].content.decode().count("🙂") == 2000
    fits = render_answer(state_with("🙂🙂 " * 500, {}, modes=()))  # 2500 units: fits
    assert len(fits) == 1 and parse_html(texts_of(fits)[0]).count("🙂") == 1000


def test_a_budget_note_says_why_the_analyses_are_missing() -> None:
    over = Analysis(correlation_id="c", mode="DEFAULT", title="📌 The gist", model="o3", error="budget_exhausted")
    visible = parse_html(texts_of(render_answer(state_with("Hello.", {"DEFAULT": over}, modes=("DEFAULT",))))[0])
    assert "Today's analysis budget is used up" in visible and "Missing" not in visible


def test_headings_and_titles_of_any_length_still_fit_a_message() -> None:
    """Issue 21 (3): an analyzer written elsewhere can send a heading or a title of any length; one past 4096 made
    the answer "message is too long", which the formatter takes as permanent: the note was never answered."""
    huge = "A very long heading & <markup> " * 400  # ~12 000 characters, growing when escaped
    odd = Analysis(
        correlation_id="c",
        mode="TONE",
        title=huge,
        model="m",
        sections=(
            Section(heading=huge, body="It fits."),
            Section(heading=huge, items=("one", "two")),
            Section(heading="🎭" * 3000, body="Emoji count twice."),
        ),
    )
    messages = texts_of(render_answer(state_with("Short.", {"DEFAULT": gist(), "TONE": odd})))
    assert all(utf16_len(parse_html(m)) <= MESSAGE_LIMIT for m in messages), [len(m) for m in messages]
    assert all(utf16_len(m) <= MESSAGE_LIMIT for m in messages)
    shown = "\n".join(parse_html(m) for m in messages)
    assert "It fits." in shown and "• two" in shown and "Emoji count twice." in shown
    assert "A very long heading & <markup>" in shown and "…" in shown, "a cut heading says it was cut"


def test_the_buttons_carry_the_note_and_its_proof_within_telegram_s_limit() -> None:
    """Every button's data fits Telegram's 64 bytes with the longest offer, and reads back as the press it was;
    a button under an answer from before the proof reads as a press without one (the note is not given for it,
    and the user is told it is no longer kept, rather than left with a spinner)."""
    cid, proof = "f" * 32, button_proof("f" * 32, "We ship on Monday.")
    keyboard = answer_keyboard(cid, proof, [(f"MODE{i}", f"Mode {i}") for i in range(8)], "en")
    datas = [button.callback_data for row in keyboard.inline_keyboard for button in row]
    assert all(data is not None and len(data.encode()) <= CALLBACK_LIMIT for data in datas), datas
    assert parse_press(datas[0]) == TranscriptPress(cid, proof)
    assert parse_press(datas[-1]) == ModePress(cid, proof, 7)
    assert parse_press(f"t:{cid}") == TranscriptPress(cid, "")
    assert parse_press(f"m:{cid}:2") == ModePress(cid, "", 2)
    assert parse_press("x:y") is None and parse_press(f"m:{cid}:{proof}:two") is None
