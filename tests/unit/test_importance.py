from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.memory.importance import estimate_importance

pytestmark = pytest.mark.unit


def test_fillers_are_barely_worth_keeping() -> None:
    assert estimate_importance("ok") == 0.05
    assert estimate_importance("Thanks!") == 0.05
    assert estimate_importance("ok") < estimate_importance("I started a new job at Spotify")


def test_boundaries_outrank_preferences_and_facts() -> None:
    boundary = estimate_importance("don't call me Bob", category="BOUNDARY")
    preference = estimate_importance("likes tea", category="PREFERENCE")
    assert boundary > preference


def test_life_events_outrank_small_talk() -> None:
    assert estimate_importance("My mother died last year and I miss her") > estimate_importance(
        "the weather is fine today"
    )


def test_the_companions_own_words_count_for_less_than_the_users() -> None:
    text = "I love hiking with my sister in the Alps"
    assert estimate_importance(text, speaker="assistant") < estimate_importance(text)


def test_a_question_says_less_about_the_asker_than_a_statement() -> None:
    assert estimate_importance("what is your favourite movie?") < estimate_importance(
        "my favourite movie is Alien"
    )


def test_unknown_categories_get_a_generic_explicit_score() -> None:
    assert estimate_importance("plays chess on Sundays", category="HOBBY") > estimate_importance(
        "plays chess on Sundays"
    )


@given(
    text=st.text(max_size=300),
    category=st.one_of(st.none(), st.sampled_from(["FACT", "BOUNDARY", "EVENT", "X"])),
    speaker=st.sampled_from(["user", "assistant", "system"]),
)
def test_scores_always_stay_within_bounds(text: str, category: str | None, speaker: str) -> None:
    score = estimate_importance(text, category=category, speaker=speaker)
    assert 0.05 <= score <= 1.0
