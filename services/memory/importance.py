"""A fast, local guess of how much a memory matters (0..1), made at write time without an LLM.

The consolidation job may later replace it with the LLM's own judgement; this only has to
order memories sensibly: boundaries and people above small talk, the user's own statements
above the companion's replies.
"""

from __future__ import annotations

import re

# Where a category gives a starting point; anything else starts at the generic value.
_CATEGORY_BASE: dict[str, float] = {
    "BOUNDARY": 0.9,
    "GOAL": 0.75,
    "PERSON": 0.7,
    "EVENT": 0.7,
    "PREFERENCE": 0.6,
    "FACT": 0.6,
}
_EXPLICIT_BASE = 0.55
_EPISODIC_BASE = 0.3

# Words that usually mark something a friend would be expected to remember.
_SALIENT = re.compile(
    r"\b(love[sd]?|hate[sd]?|allerg\w*|afraid|fear\w*|died|death|funeral|passed away|married|"
    r"wedding|divorc\w*|pregnan\w*|baby|born|birthday|anniversary|diagnos\w*|hospital|surgery|"
    r"cancer|sick|job|fired|hired|promot\w*|interview|exam|graduat\w*|moving|moved|"
    r"girlfriend|boyfriend|wife|husband|partner|daughter|son|mother|father|mom|dad|sister|"
    r"brother|friend|dog|cat|never|always|important|remember|don't|do not|please stop|"
    r"vegan|vegetarian|goal|dream|plan\w*|want to|trying to|anxious|depress\w*|lonely)\b",
    re.IGNORECASE,
)
_FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|i'll|my|me|mine|myself)\b", re.IGNORECASE)
_NUMBER_OR_DATE = re.compile(
    r"\d|\b(monday|tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|yesterday|"
    r"january|february|march|april|may|june|july|august|september|october|november|december)\b",
    re.IGNORECASE,
)
# A capitalized word that is not the first word: likely a name of a person, place or thing.
_PROPER_NOUN = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]+")
_FILLER = re.compile(
    r"^(ok(ay)?|yes|yeah|yep|no|nope|sure|thanks?|thank you|hmm+|uh+|um+|hi|hello|hey|bye|"
    r"good ?night|cool|nice|great|right|lol|haha)[.!?]*$",
    re.IGNORECASE,
)


def estimate_importance(text: str, *, category: str | None = None, speaker: str = "user") -> float:
    """Return a quick importance score in [0.05, 1.0] for `text`.

    Args:
        text: the memory's readable content (a turn, or "key: value").
        category: the explicit memory's category (FACT, BOUNDARY, ...); None for episodic turns.
        speaker: 'user', 'assistant' or 'system'; the companion's own words count for less.
    """
    stripped = text.strip()
    if category is not None:
        score = _CATEGORY_BASE.get(category.upper(), _EXPLICIT_BASE)
    else:
        score = _EPISODIC_BASE
    if not stripped or _FILLER.match(stripped):
        return 0.05
    salient_hits = len(_SALIENT.findall(stripped))
    score += min(0.3, 0.1 * salient_hits)
    if _FIRST_PERSON.search(stripped):
        score += 0.08
    if _NUMBER_OR_DATE.search(stripped):
        score += 0.05
    if _PROPER_NOUN.search(stripped):
        score += 0.05
    words = len(stripped.split())
    if words < 4:
        score -= 0.1
    elif words > 12:
        score += 0.03
    if stripped.endswith("?") and category is None:
        # A question says little about the person asking it.
        score -= 0.08
    if speaker != "user":
        score *= 0.5
    return round(min(1.0, max(0.05, score)), 3)
