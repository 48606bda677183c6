"""Pure mood math: Big Five traits, PAD (pleasure, arousal, dominance) states and their labels.

No I/O and no clock here: every function takes the values it needs, so the properties the
personality relies on (bounds held, decay and drift monotone and bounded, one label per octant)
are checked directly by unit and property tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from core.errors import InvalidInput

TRAIT_NAMES = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")

# A mood this close to the origin has no clear colour.
NEUTRAL_RADIUS = 0.1
# Temperament from traits is scaled down so a companion's resting mood stays moderate.
TEMPERAMENT_SCALE = 0.5
# One label per PAD octant, keyed by the signs (pleasure, arousal, dominance); zero counts as low.
OCTANT_LABELS: dict[tuple[bool, bool, bool], str] = {
    (True, True, True): "excited",
    (True, True, False): "happy",
    (True, False, True): "content",
    (True, False, False): "calm",
    (False, True, True): "angry",
    (False, True, False): "anxious",
    (False, False, True): "bored",
    (False, False, False): "sad",
}
# The anxious octant turns into fear when it is both strongly aroused and clearly unpleasant.
FEAR_AROUSAL = 0.5
FEAR_PLEASURE = -0.4
EMOTIONS = (*OCTANT_LABELS.values(), "fearful", "neutral")


def clamp_unit(value: float) -> float:
    """`value` held in [-1, 1]; NaN (from a bad computation upstream) becomes 0."""
    if math.isnan(value):
        return 0.0
    return max(-1.0, min(1.0, float(value)))


@dataclass(frozen=True)
class PAD:
    """A point in pleasure-arousal-dominance space; every coordinate is held in [-1, 1]."""

    pleasure: float = 0.0
    arousal: float = 0.0
    dominance: float = 0.0

    def __post_init__(self) -> None:
        # Construction is the one place values enter, so the bounds cannot be bypassed.
        object.__setattr__(self, "pleasure", clamp_unit(self.pleasure))
        object.__setattr__(self, "arousal", clamp_unit(self.arousal))
        object.__setattr__(self, "dominance", clamp_unit(self.dominance))

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.pleasure, self.arousal, self.dominance)

    @classmethod
    def from_sequence(cls, values: Iterable[float]) -> PAD:
        p, a, d = (float(v) for v in values)
        return cls(p, a, d)

    def norm(self) -> float:
        return math.sqrt(self.pleasure**2 + self.arousal**2 + self.dominance**2)

    def distance(self, other: PAD) -> float:
        return math.dist(self.as_tuple(), other.as_tuple())

    def rounded(self, digits: int = 3) -> PAD:
        return PAD(*(round(v, digits) for v in self.as_tuple()))


@dataclass(frozen=True)
class BigFive:
    """A companion's Big Five traits, each in [0, 1]; fixed once the companion is created."""

    openness: float = 0.6
    conscientiousness: float = 0.6
    extraversion: float = 0.6
    agreeableness: float = 0.75
    neuroticism: float = 0.3

    def __post_init__(self) -> None:
        for name in TRAIT_NAMES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0.0 <= float(value) <= 1.0
            ):
                raise InvalidInput(
                    f"trait {name} must be a number between 0 and 1",
                    suggestion=f"pass {name} as a value such as 0.5",
                )
            object.__setattr__(self, name, float(value))

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in TRAIT_NAMES}


def temperament(traits: BigFive) -> PAD:
    """The resting mood a personality tends to: Mehrabian's (1996) Big Five to PAD mapping.

    Traits are moved from [0, 1] to [-1, 1] first; emotional stability is the opposite of
    neuroticism. Each coordinate lies within +-TEMPERAMENT_SCALE.
    """
    o, c, e, a = (2 * v - 1 for v in (
        traits.openness, traits.conscientiousness, traits.extraversion, traits.agreeableness
    ))
    s = 1 - 2 * traits.neuroticism
    # Each sum is divided by its coefficients' total so every coordinate stays within
    # +-TEMPERAMENT_SCALE whatever the traits.
    pleasure = (0.21 * e + 0.59 * a + 0.19 * s) / 0.99
    arousal = (0.15 * o + 0.30 * a - 0.57 * s) / 1.02
    dominance = (0.25 * o + 0.17 * c + 0.60 * e - 0.32 * a) / 1.34
    return PAD(
        TEMPERAMENT_SCALE * pleasure, TEMPERAMENT_SCALE * arousal, TEMPERAMENT_SCALE * dominance
    )


def sensitivity(traits: BigFive) -> float:
    """How far one appraised turn moves the mood: more for neurotic and agreeable companions."""
    return 0.2 + 0.25 * traits.neuroticism + 0.15 * traits.agreeableness


def apply_impulse(mood: PAD, impulse: PAD, gain: float) -> PAD:
    """The mood after one appraised event: a step of `gain` times the impulse, held in bounds."""
    gain = max(0.0, gain)
    return PAD(
        mood.pleasure + gain * impulse.pleasure,
        mood.arousal + gain * impulse.arousal,
        mood.dominance + gain * impulse.dominance,
    )


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """The share of a deviation left after `elapsed_s`: 1 at 0, 0.5 at one half-life, -> 0."""
    if elapsed_s <= 0 or math.isnan(elapsed_s):
        return 1.0
    if half_life_s <= 0:
        return 0.0
    return float(0.5 ** (elapsed_s / half_life_s))


def decay_toward(mood: PAD, baseline: PAD, elapsed_s: float, half_life_s: float) -> PAD:
    """The mood pulled back toward its baseline as time passes (exponential, never overshoots)."""
    keep = decay_factor(elapsed_s, half_life_s)
    return PAD(*(b + (m - b) * keep for m, b in zip(mood.as_tuple(), baseline.as_tuple(),
                                                      strict=True)))


def mean(states: Iterable[PAD]) -> PAD | None:
    """The average of several moods, or None when there are none."""
    items = list(states)
    if not items:
        return None
    n = len(items)
    return PAD(
        sum(s.pleasure for s in items) / n,
        sum(s.arousal for s in items) / n,
        sum(s.dominance for s in items) / n,
    )


def drift_baseline(baseline: PAD, session_mean: PAD, *, rate: float, max_step: float) -> PAD:
    """The baseline after a session: a step toward the session's mean, at most `max_step` per
    coordinate and never past the mean, so personality changes slowly and boundedly."""
    rate = min(1.0, max(0.0, rate))
    max_step = max(0.0, max_step)

    def step(b: float, m: float) -> float:
        delta = rate * (m - b)
        return b + max(-max_step, min(max_step, delta))

    return PAD(*(step(b, m) for b, m in zip(baseline.as_tuple(), session_mean.as_tuple(),
                                            strict=True)))


def emotion_label(mood: PAD) -> str:
    """A word for the mood: one per PAD octant, 'fearful' for strong fear, 'neutral' near 0."""
    if mood.norm() < NEUTRAL_RADIUS:
        return "neutral"
    label = OCTANT_LABELS[(mood.pleasure > 0, mood.arousal > 0, mood.dominance > 0)]
    if label == "anxious" and mood.arousal >= FEAR_AROUSAL and mood.pleasure <= FEAR_PLEASURE:
        return "fearful"
    return label
