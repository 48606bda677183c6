"""Query preparation: keywords, conversation context and temporal hints, all local."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from rag_system.query import content_words, find_time_window, is_small_talk, prepare

pytestmark = pytest.mark.unit

# A Saturday.
NOW = datetime(2026, 11, 21, 15, 30, tzinfo=UTC)


def day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def test_keywords_drop_stop_words_and_possessives_and_are_or_ed() -> None:
    query = prepare("What did Caroline's sister say about the adoption agency?", now=NOW)
    assert query.words == ("caroline", "sister", "adoption", "agency")
    assert query.tsquery == "caroline | sister | adoption | agency"
    assert query.weights == (1.0, 1.0, 1.0, 1.0)


def test_keywords_are_safe_to_hand_to_to_tsquery() -> None:
    words = content_words("rock'n'roll & C++ || !(drop) 'quoted' O'Brien café")
    assert all(w.isalnum() for w in words)
    assert "café" in words


def test_recent_turns_add_their_words_with_a_lower_weight_most_recent_first() -> None:
    query = prepare(
        "did she like it?",
        recent_turns=["we talked about the pottery class", "Maya went to the ceramics fair"],
        now=NOW,
    )
    assert query.words[:3] == ("maya", "went", "ceramics")
    assert set(query.weights) == {0.3}


def test_a_turn_leaning_on_the_previous_one_is_embedded_with_it() -> None:
    follow_up = prepare("what about her?", recent_turns=["my aunt Rita moved to Spain"], now=NOW)
    standalone = prepare(
        "remind me what I planned for the garden party next month",
        recent_turns=["my aunt Rita moved to Spain"],
        now=NOW,
    )
    assert follow_up.embed_text == "my aunt Rita moved to Spain\nwhat about her?"
    assert follow_up.context_used
    assert standalone.embed_text == standalone.text and not standalone.context_used


@pytest.mark.parametrize(
    ("text", "leans"),
    [
        ("why?", True),
        ("and Paris?", True),
        ("how did it go?", True),
        ("does she still work there?", True),
        ("what is my dog called?", False),
        ("when is my sister's wedding?", False),
    ],
)
def test_only_elliptical_turns_borrow_the_previous_turn_for_the_embedding(
    text: str, leans: bool
) -> None:
    query = prepare(text, recent_turns=["Welcome back! How was your week?"], now=NOW)
    assert query.context_used is leans
    # Its words still count, a little, either way.
    assert "week" in query.words


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("what did I do yesterday", day(2026, 11, 20), day(2026, 11, 21)),
        ("the day before yesterday", day(2026, 11, 19), day(2026, 11, 20)),
        ("what happened last week", day(2026, 11, 9), day(2026, 11, 16)),
        ("plans for this week", day(2026, 11, 16), day(2026, 11, 23)),
        ("what did we cook last month", day(2026, 10, 1), day(2026, 11, 1)),
        ("the trip in May", day(2026, 5, 1), day(2026, 6, 1)),
        ("in december", day(2025, 12, 1), day(2026, 1, 1)),
        ("back in March 2023", day(2023, 3, 1), day(2023, 4, 1)),
        ("what did I say in 2024", day(2024, 1, 1), day(2025, 1, 1)),
        ("last summer", day(2026, 6, 1), day(2026, 9, 1)),
        ("last winter", day(2025, 12, 1), day(2026, 3, 1)),
        ("on Tuesday", day(2026, 11, 17), day(2026, 11, 18)),
        ("last Saturday", day(2026, 11, 14), day(2026, 11, 15)),
    ],
)
def test_temporal_hints_become_windows(text: str, start: datetime, end: datetime) -> None:
    window, _ = find_time_window(text, NOW)
    assert window is not None
    assert (window.start, window.end) == (start, end)


def test_a_fuzzy_hint_is_a_window_around_its_point() -> None:
    window, _ = find_time_window("we met three weeks ago", NOW)
    assert window is not None
    assert window.contains(day(2026, 10, 31)) and not window.contains(day(2026, 11, 14))


def test_may_as_a_verb_is_not_a_date_and_no_hint_means_no_window() -> None:
    assert find_time_window("may I ask about my sister", NOW) == (None, "may I ask about my sister")
    assert prepare("tell me about my sister", now=NOW).window is None


def test_the_hint_is_taken_out_of_the_keywords_but_labels_the_window() -> None:
    query = prepare("what did I bake last week?", now=NOW)
    assert query.words == ("bake",)
    assert query.window is not None and query.window.label == "last week"
    assert "time: last week" in query.notes


def test_a_naive_now_is_read_as_utc() -> None:
    window, _ = find_time_window("yesterday", datetime(2026, 11, 21, 1, 0))
    assert window is not None and window.start == day(2026, 11, 20)


def test_acknowledgements_are_small_talk_and_questions_are_not() -> None:
    assert is_small_talk("ok, thanks!") and is_small_talk("haha yes") and is_small_talk("")
    assert not is_small_talk("thanks, how is Maya?")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Did Jan call me back?", ("jan", "call", "back")),
        ("How is August doing?", ("august",)),
        ("what did my sister June say about the move", ("sister", "june", "move")),
        ("Is April still dating Mark?", ("april", "still", "dating", "mark")),
        ("since August left I cook alone", ("since", "august", "left", "cook", "alone")),
    ],
)
def test_a_month_name_used_as_a_name_stays_a_keyword_and_sets_no_window(
    text: str, words: tuple[str, ...]
) -> None:
    query = prepare(text, now=NOW)
    assert query.window is None
    assert query.words == words


@pytest.mark.parametrize(
    ("text", "label", "start", "end"),
    [
        ("what did June cook in June?", "in June", day(2026, 6, 1), day(2026, 7, 1)),
        ("what happened last March", "last March", day(2026, 3, 1), day(2026, 4, 1)),
        ("the party on June 5th", "June 5th", day(2026, 6, 5), day(2026, 6, 6)),
        ("anything new since August?", "since August", day(2026, 8, 1), day(2026, 9, 1)),
        ("what did I do on Aug 15th", "Aug 15th", day(2026, 8, 15), day(2026, 8, 16)),
        ("what did I say on 25 February, 2022", "25 February, 2022", day(2022, 2, 25),
         day(2022, 2, 26)),
    ],
)
def test_genuine_month_mentions_still_set_windows(
    text: str, label: str, start: datetime, end: datetime
) -> None:
    query = prepare(text, now=NOW)
    assert query.window is not None
    assert (query.window.label, query.window.start, query.window.end) == (label, start, end)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("what am I doing tomorrow", day(2026, 11, 22), day(2026, 11, 23)),
        ("what is planned for next week", day(2026, 11, 23), day(2026, 11, 30)),
        ("what did I read over the past 3 weeks", day(2026, 10, 31), day(2026, 11, 22)),
        ("the film this past weekend", day(2026, 11, 14), day(2026, 11, 16)),
        ("the concert in summer 2025", day(2025, 6, 1), day(2025, 9, 1)),
    ],
)
def test_retrieval_reads_every_expression_the_memory_dates_read(
    text: str, start: datetime, end: datetime
) -> None:
    window, _ = find_time_window(text, NOW)
    assert window is not None
    assert (window.start, window.end) == (start, end)


def test_a_window_starts_at_midnight_where_the_user_is() -> None:
    window, _ = find_time_window("yesterday", NOW, ZoneInfo("Asia/Tokyo"))
    # 15:30 UTC on the 21st is already the 22nd in Tokyo; its "yesterday" began at 15:00 UTC.
    assert window is not None
    assert (window.start, window.end) == (
        datetime(2026, 11, 20, 15, tzinfo=UTC), datetime(2026, 11, 21, 15, tzinfo=UTC)
    )
