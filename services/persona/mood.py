"""Fast local appraisal of a turn, and the pure math of needs and quirks.

Everything here runs on the voice turn's critical path or is called from it, so it is plain
Python over small tables: no model, no network, microseconds per call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from services.persona.pad import PAD

# --- appraisal ------------------------------------------------------------------------------

# (pleasure, arousal, dominance) a word expresses; a small hand-made lexicon in the spirit of
# the NRC VAD lexicon, covering how people commonly talk about their day.
_LEXICON: dict[str, tuple[float, float, float]] = {
    # pleasant
    "happy": (0.8, 0.4, 0.3), "glad": (0.7, 0.2, 0.2), "great": (0.7, 0.4, 0.3),
    "good": (0.5, 0.1, 0.2), "fine": (0.2, -0.1, 0.1), "love": (0.9, 0.5, 0.2),
    "loved": (0.8, 0.4, 0.2), "lovely": (0.7, 0.2, 0.1), "excited": (0.7, 0.8, 0.3),
    "exciting": (0.7, 0.7, 0.2), "thanks": (0.5, 0.1, 0.1), "thank": (0.5, 0.1, 0.1),
    "wonderful": (0.8, 0.4, 0.3), "amazing": (0.8, 0.6, 0.3), "awesome": (0.8, 0.6, 0.3),
    "fun": (0.7, 0.5, 0.2), "nice": (0.5, 0.1, 0.1), "calm": (0.4, -0.6, 0.2),
    "relaxed": (0.5, -0.6, 0.2), "peaceful": (0.6, -0.6, 0.2), "proud": (0.7, 0.4, 0.6),
    "hope": (0.4, 0.2, 0.1), "hopeful": (0.5, 0.2, 0.1), "better": (0.4, 0.1, 0.2),
    "beautiful": (0.7, 0.3, 0.1), "cool": (0.4, 0.2, 0.2), "yay": (0.7, 0.7, 0.3),
    "haha": (0.5, 0.4, 0.1), "lol": (0.4, 0.3, 0.1), "laugh": (0.6, 0.5, 0.2),
    "enjoy": (0.6, 0.3, 0.2), "enjoyed": (0.6, 0.3, 0.2), "grateful": (0.7, 0.1, 0.1),
    "confident": (0.5, 0.3, 0.7), "won": (0.7, 0.6, 0.6), "passed": (0.6, 0.4, 0.4),
    "perfect": (0.8, 0.3, 0.3), "brilliant": (0.8, 0.5, 0.4), "best": (0.7, 0.4, 0.3),
    "thrilled": (0.8, 0.8, 0.4), "delighted": (0.8, 0.5, 0.3), "curious": (0.3, 0.4, 0.1),
    # unpleasant
    "sad": (-0.7, -0.3, -0.3), "unhappy": (-0.7, -0.2, -0.3), "tired": (-0.3, -0.6, -0.2),
    "exhausted": (-0.5, -0.7, -0.4), "angry": (-0.7, 0.7, 0.4), "mad": (-0.6, 0.7, 0.4),
    "furious": (-0.8, 0.9, 0.5), "hate": (-0.8, 0.6, 0.3), "scared": (-0.7, 0.7, -0.6),
    "afraid": (-0.7, 0.6, -0.6), "terrified": (-0.9, 0.9, -0.7), "worried": (-0.5, 0.5, -0.4),
    "anxious": (-0.5, 0.6, -0.5), "nervous": (-0.4, 0.6, -0.4), "stressed": (-0.5, 0.6, -0.3),
    "panic": (-0.8, 0.9, -0.6), "lonely": (-0.6, -0.3, -0.4), "alone": (-0.4, -0.2, -0.3),
    "bored": (-0.3, -0.6, 0.1), "boring": (-0.3, -0.5, 0.1), "depressed": (-0.8, -0.5, -0.5),
    "upset": (-0.6, 0.4, -0.2), "annoyed": (-0.5, 0.4, 0.2), "annoying": (-0.5, 0.4, 0.2),
    "frustrated": (-0.6, 0.5, -0.1), "awful": (-0.7, 0.3, -0.2), "terrible": (-0.7, 0.4, -0.2),
    "horrible": (-0.7, 0.4, -0.2), "bad": (-0.5, 0.2, -0.1), "worse": (-0.5, 0.2, -0.2),
    "worst": (-0.7, 0.3, -0.2), "hurt": (-0.6, 0.3, -0.4), "cry": (-0.6, 0.3, -0.4),
    "crying": (-0.6, 0.4, -0.4), "cried": (-0.6, 0.3, -0.4), "miss": (-0.3, -0.1, -0.2),
    "sorry": (-0.2, 0.0, -0.3), "sick": (-0.5, -0.2, -0.3), "ill": (-0.5, -0.2, -0.3),
    "lost": (-0.4, 0.1, -0.4), "failed": (-0.6, 0.2, -0.5), "fail": (-0.5, 0.2, -0.4),
    "disappointed": (-0.6, -0.1, -0.3), "jealous": (-0.5, 0.4, -0.2), "guilty": (-0.5, 0.2, -0.5),
    "ashamed": (-0.6, 0.2, -0.6), "overwhelmed": (-0.6, 0.6, -0.6), "broke": (-0.4, 0.2, -0.4),
    "pain": (-0.6, 0.4, -0.3), "fight": (-0.5, 0.6, 0.2), "argued": (-0.5, 0.5, 0.1),
    "hopeless": (-0.8, -0.4, -0.7), "miserable": (-0.8, -0.1, -0.4),
}
_EMOTICONS: dict[str, tuple[float, float, float]] = {
    ":)": (0.5, 0.2, 0.1), ":-)": (0.5, 0.2, 0.1), ":d": (0.7, 0.5, 0.2), ":(": (-0.5, -0.1, -0.2),
    ":-(": (-0.5, -0.1, -0.2), ":'(": (-0.7, 0.2, -0.4), "<3": (0.7, 0.3, 0.1),
    "\u2764": (0.7, 0.3, 0.1), "\U0001f60a": (0.6, 0.2, 0.1), "\U0001f602": (0.6, 0.6, 0.2),
    "\U0001f622": (-0.6, 0.1, -0.3), "\U0001f62d": (-0.7, 0.4, -0.4),
    "\U0001f620": (-0.7, 0.7, 0.4),
}
_NEGATIONS = frozenset({
    "not", "no", "never", "nothing", "hardly", "barely", "without", "neither", "nor", "cannot",
})
_INTENSIFIERS: dict[str, float] = {
    "very": 1.5, "really": 1.4, "so": 1.3, "extremely": 1.8, "super": 1.5, "totally": 1.4,
    "incredibly": 1.7, "absolutely": 1.6, "too": 1.3, "quite": 1.2, "truly": 1.4, "such": 1.3,
    "slightly": 0.5, "somewhat": 0.6, "bit": 0.6, "little": 0.6, "kinda": 0.6, "fairly": 0.8,
}
_NEGATION_WINDOW = 3
_TOKEN = re.compile(
    r"[^\W\d_]+(?:'[^\W\d_]+)?|[:;]['-]?[()dp]|<3|[\u2600-\u27bf\U0001f300-\U0001faff]",
    re.IGNORECASE,
)
# Negation and intensifiers reach only within a clause: "no, I'm happy" is happy.
_CLAUSE_BREAK = re.compile(r"[.,;!?]+|\b(?:but|though|although)\b", re.IGNORECASE)
_ELONGATED = re.compile(r"([a-z])\1\1", re.IGNORECASE)
# How much accumulated evidence a component needs to approach 1 (tanh's scale).
_SATURATION = 1.2


def _is_negation(token: str) -> bool:
    return token in _NEGATIONS or token.endswith("n't")


def _clause_vector(tokens: list[str]) -> list[float]:
    total = [0.0, 0.0, 0.0]
    for index, token in enumerate(tokens):
        vad = _LEXICON.get(token) or _EMOTICONS.get(token)
        if vad is None:
            continue
        p, a, d = vad
        before = tokens[max(0, index - _NEGATION_WINDOW):index]
        scale = 1.0
        for word in before[-2:]:
            scale *= _INTENSIFIERS.get(word, 1.0)
        if any(_is_negation(word) for word in before):
            # "not happy" is mildly unpleasant rather than sad; arousal mostly survives.
            p, a, d = -0.5 * p, 0.6 * a, -0.3 * d
        total[0] += scale * p
        total[1] += scale * a
        total[2] += scale * d
    return total


def appraise(text: str) -> PAD:
    """The emotion a turn expresses, from words, negation, intensifiers and typography.

    Exclamation marks, words in capitals and stretched letters ("sooo") raise arousal;
    question marks lower dominance a little. Each component is squashed into (-1, 1).
    """
    if not text:
        return PAD()
    text = text.replace("\u2019", "'")
    total = [0.0, 0.0, 0.0]
    for clause in _CLAUSE_BREAK.split(text):
        tokens = [t.lower() for t in _TOKEN.findall(clause)]
        for i, v in enumerate(_clause_vector(tokens)):
            total[i] += v
    exclamations = min(text.count("!"), 3)
    shouted = sum(1 for w in re.findall(r"\b[^\W\d_]{3,}\b", text) if w.isupper())
    total[1] += 0.15 * exclamations + 0.15 * min(shouted, 3)
    total[1] += 0.1 * min(len(_ELONGATED.findall(text)), 2)
    total[2] -= 0.08 * min(text.count("?"), 2)
    return PAD(*(math.tanh(v / _SATURATION) for v in total))


# --- needs ----------------------------------------------------------------------------------

NEEDS = ("social", "intellectual", "creative", "rest")
DEFAULT_NEED_LEVEL = 0.5
# Levels are satisfaction in [0, 1]. Social, intellectual and creative satisfaction fade while
# nobody talks; rest is the opposite: conversation tires the companion, quiet restores it.
_TIRING_PER_TURN = 0.02
_SOCIAL_PER_TURN = 0.06
_FIT_BONUS = 0.08
_INTELLECTUAL = re.compile(
    r"\b(why|how|what if|think|thought|idea|learn\w*|stud\w+|read\w*|book|science|history|"
    r"philosoph\w*|explain|question|understand|math\w*|research)\b", re.IGNORECASE)
_CREATIVE = re.compile(
    r"\b(imagine|story|stories|write|writing|poem|song|music|draw\w*|paint\w*|art|create|"
    r"design|invent\w*|game|play|dream\w*|pretend|make up)\b", re.IGNORECASE)
_PERSONAL = re.compile(
    r"\b(i feel|i'm feeling|my (?:friend|mom|dad|mother|father|family|partner|wife|husband|"
    r"kids?|son|daughter|brother|sister|boss)|miss you|love you|you and me)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Needs:
    """Satisfaction of the companion's four needs, each in [0, 1] (low means wanting)."""

    social: float = DEFAULT_NEED_LEVEL
    intellectual: float = DEFAULT_NEED_LEVEL
    creative: float = DEFAULT_NEED_LEVEL
    rest: float = DEFAULT_NEED_LEVEL

    def __post_init__(self) -> None:
        for name in NEEDS:
            value = float(getattr(self, name))
            object.__setattr__(self, name, 0.0 if math.isnan(value) else min(1.0, max(0.0, value)))

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in NEEDS}

    def urgency(self, name: str) -> float:
        return 1.0 - float(getattr(self, name))

    def most_pressing(self) -> tuple[str, float]:
        """The need furthest from satisfied, and how far (0..1)."""
        name = min(NEEDS, key=lambda n: (getattr(self, n), NEEDS.index(n)))
        return name, self.urgency(name)


def decay_needs(needs: Needs, elapsed_s: Mapping[str, float], half_life_s: float) -> Needs:
    """Needs after time alone: the wanting ones fade toward 0, rest recovers toward 1.

    `elapsed_s` maps each need to the seconds since it was last written.
    """
    levels = {}
    for name in NEEDS:
        level = float(getattr(needs, name))
        elapsed = max(0.0, elapsed_s.get(name, 0.0))
        keep = 0.5 ** (elapsed / half_life_s) if half_life_s > 0 else 0.0
        levels[name] = 1 - (1 - level) * keep if name == "rest" else level * keep
    return Needs(**levels)


def need_deltas(text: str) -> dict[str, float]:
    """How a user turn satisfies each need: any talk feeds social, fitting talk feeds more."""
    deltas = {"social": _SOCIAL_PER_TURN, "intellectual": 0.0, "creative": 0.0,
              "rest": -_TIRING_PER_TURN}
    if _PERSONAL.search(text):
        deltas["social"] += _FIT_BONUS
    if _INTELLECTUAL.search(text):
        deltas["intellectual"] += _FIT_BONUS
    if _CREATIVE.search(text):
        deltas["creative"] += _FIT_BONUS
    return deltas


def satisfy(needs: Needs, deltas: Mapping[str, float]) -> Needs:
    """Needs after the deltas, held in [0, 1]."""
    return Needs(**{n: float(getattr(needs, n)) + deltas.get(n, 0.0) for n in NEEDS})


# --- quirks ---------------------------------------------------------------------------------

QUIRK_ACTIVE_STRENGTH = 0.3
QUIRK_REINFORCE_RATE = 0.2


@dataclass(frozen=True)
class QuirkPattern:
    """A speech or behaviour pattern seen once in a turn; repeated ones may become a quirk."""

    name: str
    description: str


def quirk_strength_now(strength: float, elapsed_s: float, half_life_s: float) -> float:
    """A quirk's strength after `elapsed_s` without use (fades by half every half-life)."""
    if elapsed_s <= 0:
        return min(1.0, max(0.0, strength))
    keep = 0.5 ** (elapsed_s / half_life_s) if half_life_s > 0 else 0.0
    return min(1.0, max(0.0, strength * keep))


def reinforce(strength: float, rate: float = QUIRK_REINFORCE_RATE) -> float:
    """A quirk's strength after one more session of use: closer to 1, never past it."""
    strength = min(1.0, max(0.0, strength))
    return strength + min(1.0, max(0.0, rate)) * (1.0 - strength)


_LAUGHTER = re.compile(r"\b(?:ha(?:ha)+|he(?:he)+|lol|lmao)\b", re.IGNORECASE)
_OPENER = re.compile(r"^\s*([^\W\d_]+)[\s,]+([^\W\d_]+)", re.IGNORECASE)
# Openers too common to say anything about the companion.
_PLAIN_OPENERS = frozenset({
    "i am", "i have", "i think", "it is", "that is", "you are", "i was", "it was", "there is",
    "this is", "i can", "i would", "i don't", "i do", "do you", "are you", "what is",
})


def reply_patterns(text: str) -> list[QuirkPattern]:
    """Patterns in one of the companion's own replies: habitual openers, closing questions."""
    found: list[QuirkPattern] = []
    match = _OPENER.match(text)
    if match:
        opener = f"{match.group(1).lower()} {match.group(2).lower()}"
        if opener not in _PLAIN_OPENERS:
            found.append(QuirkPattern(
                f"opener:{opener}", f"often opens a reply with \"{opener.capitalize()}\""))
    if text.rstrip().endswith("?"):
        found.append(QuirkPattern("asks_back", "likes to end with a question back"))
    if text.count("!") >= 2:
        found.append(QuirkPattern("exclaims", "speaks with lively exclamations"))
    return found


def user_patterns(text: str) -> list[QuirkPattern]:
    """Patterns in the user's turns that the companion picks up when they recur."""
    found: list[QuirkPattern] = []
    if _LAUGHTER.search(text):
        found.append(QuirkPattern("laughs_along", "laughs along easily and keeps things light"))
    if _CREATIVE.search(text) and re.search(r"\b(imagine|pretend|what if)\b", text, re.I):
        found.append(QuirkPattern("plays_pretend", "enjoys playful what-if games"))
    return found
