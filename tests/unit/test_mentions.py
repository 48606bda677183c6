"""The word rule a forget uses on derived text: which words of a forgotten value count, and
which sentences mention them."""

from __future__ import annotations

import pytest

from core.mentions import distinctive_words, mentions, without_mentions

pytestmark = pytest.mark.unit


def test_distinctive_words_are_the_values_longer_words_outside_the_stopwords() -> None:
    words = distinctive_words(["My dog's name is Rex, a golden retriever", "Lives in Köln"])
    assert words == {"dog", "rex", "golden", "retriever", "lives", "köln"}


def test_a_word_is_matched_whole_and_whatever_its_case() -> None:
    words = distinctive_words(["Rex"])
    assert mentions("REX's bowl", words)
    assert not mentions("They fixed a complex regex", words)


def test_only_the_sentences_that_mention_the_value_are_removed() -> None:
    words = distinctive_words(["Rex, a golden retriever"])
    summary = "They walked Rex at the beach! They are training for a marathon.\nRex is old."
    assert without_mentions(summary, words) == "They are training for a marathon."


def test_quoted_turns_are_removed_one_by_one_and_nothing_left_is_none() -> None:
    words = distinctive_words(["Rex"])
    assert without_mentions("They said: hello / my dog Rex / bye", words) == (
        "They said: hello bye"
    )
    assert without_mentions("All about Rex.", words) is None
