"""Rendering: every message fits Telegram's limit and parses as Telegram HTML, whatever the text holds."""

from __future__ import annotations

from formatter.join import JoinState
from formatter.render import pack, render_answer, render_failure
from infra.contracts import Analysis, AudioReceived, AudioRef, Failure, Origin, Section
from tests.doubles.telegram_api import MESSAGE_LIMIT, parse_html, utf16_len
from tests.support import a_transcript

ORIGIN = Origin(chat_id=1, message_id=2, status_message_id=3, ui_language="en", language_hint="en")


def state_with(text: str, analyses: dict[str, Analysis], modes: tuple[str, ...] = ("DEFAULT", "TONE")) -> JoinState:
    state = JoinState()
    state.apply(
        AudioReceived(
            correlation_id="c", origin=ORIGIN, audio=AudioRef(object_name="c", kind="voice", size=1), modes=modes
        )
    )
    state.apply(a_transcript("c", text, language_probability=0.9, duration=125.0, transcribe_seconds=1.0))
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
    visible = parse_html(messages[0])
    assert "Is 3 < 5 & <b>bold</b>?" in visible
    assert "Summary: Budget <moved> & approved" in visible and "• a < b" in visible and "• R&D" in visible
    assert visible.startswith("📝 Transcript · English · 2:05")


def test_long_answers_split_into_valid_messages_within_the_limit() -> None:
    sentence = "Fish & chips <cost> more than 5 > 3 pounds, Дорогие коллеги. "
    text = sentence * 600  # ~37 000 characters, each with characters that expand when escaped
    messages = render_answer(state_with(text, {"DEFAULT": gist()}))
    assert len(messages) > 8
    seen = []
    for message in messages:
        assert len(message) <= MESSAGE_LIMIT
        visible = parse_html(message)  # raises where Telegram would refuse
        assert utf16_len(visible) <= MESSAGE_LIMIT
        seen.append(visible)
    joined = "\n".join(seen)
    assert joined.count("chips") == 600 and joined.count("<cost>") == 600, "no word lost or cut in half"
    assert "⚠️ Missing: TONE" in seen[-1]


def test_a_word_longer_than_a_message_is_still_delivered() -> None:
    messages = render_answer(state_with("&" * 9000, {}, modes=()))
    assert all(len(m) <= MESSAGE_LIMIT for m in messages)
    assert sum(parse_html(m).count("&") for m in messages) == 9000


def test_failed_and_late_modes() -> None:
    failed = Analysis(correlation_id="c", mode="TONE", title="🎭 Tone", model="gpt-4o", error="http_500")
    late = Analysis(correlation_id="c", mode="EXTRA", title="Extra", model="m", text="plain <text>")
    visible = parse_html("\n".join(render_answer(state_with("hi", {"DEFAULT": gist(), "TONE": failed, "EXTRA": late}))))
    assert "🎭 Tone" not in visible
    assert "⚠️ Missing: TONE" in visible
    assert "Extra\nplain <text>" in visible


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
    """Telegram counts UTF-16 code units: 3000 characters of emoji are 5000 units, two messages, not one."""
    messages = render_answer(state_with("🙂🙂 " * 1000, {}, modes=()))
    assert len(messages) >= 2
    assert all(utf16_len(parse_html(m)) <= MESSAGE_LIMIT for m in messages)
    assert sum(parse_html(m).count("🙂") for m in messages) == 2000


def test_a_budget_note_says_why_the_analyses_are_missing() -> None:
    over = Analysis(correlation_id="c", mode="DEFAULT", title="📌 The gist", model="o3", error="budget_exhausted")
    visible = parse_html(render_answer(state_with("Hello.", {"DEFAULT": over}, modes=("DEFAULT",)))[0])
    assert "Today's analysis budget is used up" in visible and "Missing" not in visible
