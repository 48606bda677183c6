from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from core.dates import absolutize, add_months, find_dates, parse_date, timezone_named

pytestmark = pytest.mark.unit

# A Saturday, noon UTC.
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("today", date(2026, 11, 21)),
        ("tonight", date(2026, 11, 21)),
        ("tomorrow", date(2026, 11, 22)),
        ("yesterday", date(2026, 11, 20)),
        ("last night", date(2026, 11, 20)),
        ("the day after tomorrow", date(2026, 11, 23)),
        ("day before yesterday", date(2026, 11, 19)),
        ("next Friday", date(2026, 11, 27)),
        ("this friday", date(2026, 11, 27)),
        ("on Saturday", date(2026, 11, 21)),
        ("next Saturday", date(2026, 11, 28)),
        ("last Friday", date(2026, 11, 20)),
        ("last Saturday", date(2026, 11, 14)),
        ("this weekend", date(2026, 11, 21)),
        ("next weekend", date(2026, 11, 28)),
        ("in 3 days", date(2026, 11, 24)),
        ("in two weeks", date(2026, 12, 5)),
        ("in a couple of days", date(2026, 11, 23)),
        ("in a month", date(2026, 12, 21)),
        ("3 days ago", date(2026, 11, 18)),
        ("a week ago", date(2026, 11, 14)),
        ("next week", date(2026, 11, 23)),
        ("last week", date(2026, 11, 9)),
        ("next month", date(2026, 12, 1)),
        ("next year", date(2027, 1, 1)),
        ("May 5", date(2027, 5, 5)),
        ("Nov 21", date(2026, 11, 21)),
        ("May 5th, 2030", date(2030, 5, 5)),
        ("the 5th of June", date(2027, 6, 5)),
        ("2026-12-24", date(2026, 12, 24)),
    ],
)
def test_each_expression_resolves_to_the_day_it_means(expression: str, expected: date) -> None:
    assert parse_date(expression, now=NOW) == expected


def test_this_weekend_on_a_wednesday_is_the_coming_saturday() -> None:
    wednesday = datetime(2026, 11, 18, 9, tzinfo=UTC)
    assert parse_date("this weekend", now=wednesday) == date(2026, 11, 21)


def test_this_weekend_on_a_sunday_is_the_saturday_just_gone() -> None:
    sunday = datetime(2026, 11, 22, 9, tzinfo=UTC)
    assert parse_date("this weekend", now=sunday) == date(2026, 11, 21)


def test_tomorrow_depends_on_the_users_timezone() -> None:
    # 03:00 UTC on the 21st is still the evening of the 20th in Los Angeles.
    early = datetime(2026, 11, 21, 3, tzinfo=UTC)
    assert parse_date("tomorrow", now=early, tz=ZoneInfo("America/Los_Angeles")) == date(
        2026, 11, 21
    )
    assert parse_date("tomorrow", now=early, tz=UTC) == date(2026, 11, 22)


def test_a_naive_now_is_taken_as_utc() -> None:
    assert parse_date("tomorrow", now=datetime(2026, 11, 21, 23, 30)) == date(2026, 11, 22)


def test_impossible_calendar_dates_are_not_dates() -> None:
    assert find_dates("see you February 30", now=NOW) == []
    assert find_dates("on 2026-13-40", now=NOW) == []


def test_parse_date_needs_the_whole_text_to_be_one_expression() -> None:
    assert parse_date("dentist next friday", now=NOW) is None
    assert parse_date("next friday", now=NOW) == date(2026, 11, 27)


def test_words_that_only_look_like_months_are_left_alone() -> None:
    result = absolutize("I may march on", now=NOW)
    assert result.text == "I may march on"
    assert result.event_date is None


def test_absolutize_rewrites_relative_days_with_weekday_and_iso_date() -> None:
    result = absolutize("dentist next Friday at 3pm", now=NOW)
    assert result.text == "dentist on Friday 2026-11-27 at 3pm"
    assert result.event_date == date(2026, 11, 27)


def test_absolutize_keeps_a_preposition_the_user_already_said() -> None:
    assert absolutize("report due by tomorrow", now=NOW).text == (
        "report due by Sunday 2026-11-22"
    )


def test_absolutize_names_weeks_months_and_years_without_a_false_day() -> None:
    result = absolutize("moving next month, exams next week", now=NOW)
    assert result.text == "moving in December 2026, exams the week of 2026-11-23"
    assert result.event_date == date(2026, 11, 23)


def test_absolutize_adds_the_year_to_a_one_off_month_and_day() -> None:
    result = absolutize("concert on May 5", now=NOW)
    assert result.text == "concert on May 5, 2027"
    assert result.event_date == date(2027, 5, 5)


def test_recurring_dates_keep_no_year_but_give_the_next_occurrence() -> None:
    result = absolutize("May 5", now=NOW, recurring=True)
    assert result.text == "May 5"
    assert result.event_date == date(2027, 5, 5)


def test_absolute_dates_are_left_as_written() -> None:
    result = absolutize("born May 5, 1990 and moved 2020-03-01", now=NOW)
    assert result.text == "born May 5, 1990 and moved 2020-03-01"
    assert result.event_date == date(1990, 5, 5)
    assert [m.relative for m in result.mentions] == [False, False]


def test_add_months_clamps_to_the_end_of_a_shorter_month() -> None:
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28)
    assert add_months(date(2026, 11, 30), 3) == date(2027, 2, 28)
    assert add_months(date(2026, 3, 15), -3) == date(2025, 12, 15)


def test_unknown_timezone_names_fall_back_to_utc() -> None:
    assert timezone_named("Mars/Olympus_Mons") is UTC
    assert timezone_named(None) is UTC
    assert timezone_named("Europe/Berlin") == ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("this past Tuesday", date(2026, 11, 17)),
        ("in a few days", date(2026, 11, 24)),
        ("eleven days ago", date(2026, 11, 10)),
        ("in May", date(2027, 5, 1)),
        ("in November", date(2026, 11, 1)),
        ("since last March", date(2026, 3, 1)),
        ("next June", date(2027, 6, 1)),
        ("March 2023", date(2023, 3, 1)),
        ("last summer", date(2026, 6, 1)),
        ("next spring", date(2027, 3, 1)),
        ("the winter of 2024", date(2024, 12, 1)),
        ("in 2024", date(2024, 1, 1)),
        ("December 1,2023", date(2023, 12, 1)),
    ],
)
def test_one_vocabulary_reads_what_retrieval_also_reads(expression: str, expected: date) -> None:
    assert parse_date(expression, now=NOW) == expected


def test_stretches_up_to_now_name_no_date_of_their_own() -> None:
    assert parse_date("recently", now=NOW) is None
    assert parse_date("the past 3 weeks", now=NOW) is None
    [span] = find_dates("over the past 3 weeks", now=NOW)
    assert (span.date, span.until, span.granularity) == (
        date(2026, 10, 31), date(2026, 11, 22), "span"
    )


def test_an_expression_naming_no_direction_leans_ahead_for_plans_and_back_for_questions() -> None:
    for text, ahead, back in [
        ("on Tuesday", date(2026, 11, 24), date(2026, 11, 17)),
        ("May 5", date(2027, 5, 5), date(2026, 5, 5)),
        ("in May", date(2027, 5, 1), date(2026, 5, 1)),
        ("the weekend", date(2026, 11, 21), date(2026, 11, 21)),
    ]:
        [forward] = find_dates(text, now=NOW)
        [backward] = find_dates(text, now=NOW, lean="back")
        assert (forward.date, backward.date) == (ahead, back), text


def test_this_season_is_the_one_we_are_in_or_the_nearer_one() -> None:
    march = datetime(2026, 3, 10, tzinfo=UTC)
    assert parse_date("this summer", now=march) == date(2026, 6, 1)
    assert parse_date("this summer", now=NOW) == date(2026, 6, 1)
    assert parse_date("this autumn", now=NOW) == date(2026, 9, 1)
    assert parse_date("this winter", now=NOW) == date(2026, 12, 1)


@pytest.mark.parametrize(
    "text",
    [
        "Did Jan call me back?",
        "How is August doing?",
        "my sister June",
        "I asked April about it",
        "since August left for college",
        "we sat in June's garden",
        "after May said no",
        "this may take a while",
        "I may march on",
        "Aug and I went bowling",
        "in Mar we trust",
        "a photo of June and her dog",
    ],
)
def test_month_words_used_as_names_or_words_are_not_dates(text: str) -> None:
    assert find_dates(text, now=NOW) == []
    assert find_dates(text, now=NOW, lean="back") == []


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("we met in June", "in June"),
        ("it was last March", "last March"),
        ("on June 5th", "June 5th"),
        ("nothing since August", "since August"),
        ("busy until April, then free", "until April"),
        ("by the end of June", "of June"),
        ("early May was rainy", "early May"),
        ("mid-August", "mid-August"),
        ("in Jan 2024", "in Jan 2024"),
        ("Aug 15th", "Aug 15th"),
        ("the 3rd of Mar", "the 3rd of Mar"),
        ("October was rough", "October"),
        ("my birthday is in May", "in May"),
        ("I met June in June", "in June"),
    ],
)
def test_genuine_month_mentions_are_dates(text: str, said: str) -> None:
    assert [m.text for m in find_dates(text, now=NOW, lean="back")] == [said]


def test_absolutize_rewrites_seasons_and_leaves_what_has_no_fixed_date() -> None:
    result = absolutize(
        "painted last summer, busy recently, trip in May, on this past Tuesday", now=NOW
    )
    assert result.text == (
        "painted in the summer of 2026, busy recently, trip in May, on Tuesday 2026-11-17"
    )
    assert result.event_date == date(2026, 11, 17)
