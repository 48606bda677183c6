from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidInput
from services.persona import mood as moodlib
from services.persona.mood import NEEDS, Needs
from services.persona.pad import (
    EMOTIONS,
    PAD,
    BigFive,
    apply_impulse,
    clamp_unit,
    decay_toward,
    drift_baseline,
    emotion_label,
    mean,
    sensitivity,
    temperament,
)

pytestmark = pytest.mark.unit

anything = st.floats(allow_nan=True, allow_infinity=True)
unit = st.floats(min_value=-1, max_value=1)
share = st.floats(min_value=0, max_value=1)
pads = st.builds(PAD, unit, unit, unit)
traits = st.builds(BigFive, share, share, share, share, share)
EPS = 1e-9


def between(x: float, a: float, b: float) -> bool:
    return min(a, b) - EPS <= x <= max(a, b) + EPS


# --- bounds ---------------------------------------------------------------------------------


@given(anything, anything, anything)
def test_a_pad_point_holds_any_input_within_minus_one_and_one(p: float, a: float, d: float) -> None:
    point = PAD(p, a, d)
    assert all(-1.0 <= v <= 1.0 for v in point.as_tuple())
    assert not any(math.isnan(v) for v in point.as_tuple())


def test_clamping_maps_nan_to_zero_and_infinities_to_the_bounds() -> None:
    assert clamp_unit(float("nan")) == 0.0
    assert clamp_unit(float("inf")) == 1.0
    assert clamp_unit(float("-inf")) == -1.0


@given(traits)
def test_the_temperament_of_any_traits_is_a_bounded_mood(big_five: BigFive) -> None:
    rest = temperament(big_five)
    assert all(-0.5 - EPS <= v <= 0.5 + EPS for v in rest.as_tuple())
    assert 0.2 <= sensitivity(big_five) <= 0.6


@given(pads, pads, st.floats(min_value=0, max_value=10))
def test_an_impulse_never_pushes_the_mood_out_of_bounds(m: PAD, i: PAD, gain: float) -> None:
    moved = apply_impulse(m, i, gain)
    assert all(-1.0 <= v <= 1.0 for v in moved.as_tuple())


def test_the_default_companion_rests_in_a_content_mood() -> None:
    assert emotion_label(temperament(BigFive())) == "content"


def test_an_agreeable_stable_companion_rests_more_pleasant_than_a_hostile_anxious_one() -> None:
    kind = temperament(BigFive(agreeableness=0.9, neuroticism=0.1))
    prickly = temperament(BigFive(agreeableness=0.1, neuroticism=0.9))
    assert kind.pleasure > prickly.pleasure
    assert prickly.arousal > kind.arousal


@pytest.mark.parametrize("name", ["openness", "neuroticism"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), True])
def test_big_five_traits_outside_zero_to_one_are_refused(name: str, value: float) -> None:
    with pytest.raises(InvalidInput):
        BigFive(**{name: value})


# --- decay ----------------------------------------------------------------------------------


@given(pads, pads, st.floats(min_value=0, max_value=1e6), st.floats(min_value=0, max_value=1e6),
       st.floats(min_value=1, max_value=1e5))
def test_decay_moves_monotonically_toward_the_baseline_and_never_past_it(
    m: PAD, b: PAD, t1: float, t2: float, half_life: float
) -> None:
    early, late = sorted((t1, t2))
    first = decay_toward(m, b, early, half_life)
    second = decay_toward(m, b, late, half_life)
    assert second.distance(b) <= first.distance(b) + EPS
    for start, rest, now in zip(m.as_tuple(), b.as_tuple(), second.as_tuple(), strict=True):
        assert between(now, start, rest)


def test_one_half_life_halves_the_distance_to_the_baseline() -> None:
    m, b = PAD(0.8, 0.6, -0.4), PAD(0.2, 0.0, 0.0)
    after = decay_toward(m, b, 1800, 1800)
    assert after.distance(b) == pytest.approx(m.distance(b) / 2)
    assert decay_toward(m, b, 0, 1800) == m
    assert decay_toward(m, b, 1e9, 1800).distance(b) == pytest.approx(0, abs=1e-9)


# --- drift ----------------------------------------------------------------------------------


@given(pads, pads, share, st.floats(min_value=0, max_value=0.5))
def test_drift_steps_toward_the_session_mean_by_at_most_the_max_step(
    b: PAD, session_mean: PAD, rate: float, max_step: float
) -> None:
    after = drift_baseline(b, session_mean, rate=rate, max_step=max_step)
    for before, target, now in zip(b.as_tuple(), session_mean.as_tuple(), after.as_tuple(),
                                   strict=True):
        assert abs(now - before) <= max_step + EPS
        assert between(now, before, target)
    assert after.distance(session_mean) <= b.distance(session_mean) + EPS


def test_repeated_sessions_bring_the_baseline_closer_each_time_without_overshooting() -> None:
    baseline, target = PAD(0.2, 0.0, 0.1), PAD(-0.6, 0.5, -0.3)
    distances = []
    for _ in range(60):
        baseline = drift_baseline(baseline, target, rate=0.25, max_step=0.05)
        distances.append(baseline.distance(target))
    assert distances == sorted(distances, reverse=True)
    assert distances[0] < PAD(0.2, 0.0, 0.1).distance(target)
    assert distances[-1] == pytest.approx(0, abs=1e-3)


def test_the_mean_of_no_moods_is_none_and_of_several_their_average() -> None:
    assert mean([]) is None
    assert mean([PAD(1, 0, -1), PAD(0, 1, 0)]) == PAD(0.5, 0.5, -0.5)


# --- labels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "label"),
    [
        (PAD(0.5, 0.5, 0.5), "excited"),
        (PAD(0.5, 0.5, -0.5), "happy"),
        (PAD(0.5, -0.5, 0.5), "content"),
        (PAD(0.5, -0.5, -0.5), "calm"),
        (PAD(-0.5, 0.5, 0.5), "angry"),
        (PAD(-0.3, 0.3, -0.5), "anxious"),
        (PAD(-0.5, -0.5, 0.5), "bored"),
        (PAD(-0.5, -0.5, -0.5), "sad"),
    ],
)
def test_each_pad_octant_has_its_own_emotion_label(point: PAD, label: str) -> None:
    assert emotion_label(point) == label


def test_strong_unpleasant_arousal_without_control_reads_as_fear() -> None:
    assert emotion_label(PAD(-0.7, 0.8, -0.6)) == "fearful"


def test_a_mood_near_the_origin_is_neutral() -> None:
    assert emotion_label(PAD(0.03, -0.02, 0.04)) == "neutral"


@given(pads)
def test_every_mood_gets_one_of_the_known_labels(point: PAD) -> None:
    assert emotion_label(point) in EMOTIONS


# --- appraisal ------------------------------------------------------------------------------


def test_happy_words_appraise_as_pleasant_and_sad_words_as_unpleasant() -> None:
    assert moodlib.appraise("I had a wonderful day, I'm so happy").pleasure > 0.3
    assert moodlib.appraise("I feel sad and lonely today").pleasure < -0.3


def test_negation_turns_a_pleasant_word_unpleasant() -> None:
    assert moodlib.appraise("I'm happy").pleasure > 0
    assert moodlib.appraise("I'm not happy").pleasure < 0
    assert moodlib.appraise("I don\u2019t feel good").pleasure < 0


def test_negation_stops_at_the_end_of_a_clause() -> None:
    assert moodlib.appraise("No, I'm happy").pleasure > 0


def test_intensifiers_strengthen_and_dampeners_soften() -> None:
    plain = moodlib.appraise("I'm happy").pleasure
    assert moodlib.appraise("I'm very happy").pleasure > plain
    assert moodlib.appraise("I'm slightly happy").pleasure < plain


def test_exclamations_and_capitals_raise_arousal() -> None:
    calm = moodlib.appraise("that is great").arousal
    assert moodlib.appraise("that is great!!!").arousal > calm
    assert moodlib.appraise("that is GREAT").arousal > calm


def test_fearful_talk_appraises_as_unpleasant_aroused_and_submissive() -> None:
    point = moodlib.appraise("I'm really scared and anxious about tomorrow")
    assert point.pleasure < 0 and point.arousal > 0 and point.dominance < 0


def test_text_without_feeling_words_appraises_as_the_origin() -> None:
    assert moodlib.appraise("") == PAD()
    assert moodlib.appraise("the train leaves at seven") == PAD()


@given(st.text(max_size=300))
def test_appraisal_of_any_text_is_bounded(text: str) -> None:
    point = moodlib.appraise(text)
    assert all(-1.0 <= v <= 1.0 for v in point.as_tuple())


# --- needs and quirks -----------------------------------------------------------------------


@given(st.builds(Needs, share, share, share, share), st.floats(min_value=0, max_value=1e7),
       st.floats(min_value=0, max_value=1e7))
def test_needs_fade_monotonically_with_time_and_rest_recovers(
    needs: Needs, t1: float, t2: float
) -> None:
    early, late = sorted((t1, t2))
    a = moodlib.decay_needs(needs, dict.fromkeys(NEEDS, early), 86_400)
    b = moodlib.decay_needs(needs, dict.fromkeys(NEEDS, late), 86_400)
    for name in ("social", "intellectual", "creative"):
        assert getattr(b, name) <= getattr(a, name) + EPS <= getattr(needs, name) + 2 * EPS
    assert b.rest + EPS >= a.rest >= needs.rest - EPS


@given(st.builds(Needs, share, share, share, share), st.text(max_size=200))
def test_satisfying_needs_keeps_every_level_between_zero_and_one(needs: Needs, text: str) -> None:
    after = moodlib.satisfy(needs, moodlib.need_deltas(text))
    assert all(0.0 <= v <= 1.0 for v in after.as_dict().values())


def test_fitting_talk_feeds_the_fitting_need() -> None:
    deltas = moodlib.need_deltas("why do you think the book ended that way?")
    assert deltas["intellectual"] > deltas["creative"]
    assert moodlib.need_deltas("let's imagine a story about a dragon")["creative"] > 0
    assert moodlib.need_deltas("hello")["rest"] < 0


def test_the_most_pressing_need_is_the_least_satisfied() -> None:
    need, urgency = Needs(social=0.9, intellectual=0.1, creative=0.5, rest=0.8).most_pressing()
    assert need == "intellectual" and urgency == pytest.approx(0.9)


@given(share, st.floats(min_value=0, max_value=1e8))
def test_a_quirk_fades_without_use_and_strengthens_with_use(strength: float, idle: float) -> None:
    faded = moodlib.quirk_strength_now(strength, idle, 14 * 86_400)
    assert 0.0 <= faded <= strength + EPS
    stronger = moodlib.reinforce(strength)
    assert strength - EPS <= stronger <= 1.0


def test_a_quirk_loses_half_its_strength_in_one_half_life() -> None:
    assert moodlib.quirk_strength_now(0.8, 100, 100) == pytest.approx(0.4)


def test_reply_patterns_name_habitual_openers_and_closing_questions() -> None:
    names = {p.name for p in moodlib.reply_patterns("Oh wow, that sounds lovely. How was it?")}
    assert names == {"opener:oh wow", "asks_back"}
    assert moodlib.reply_patterns("I think so.") == []
    assert {p.name for p in moodlib.user_patterns("haha that's funny")} == {"laughs_along"}
