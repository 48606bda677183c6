"""The vocabulary of the injection screen's signals: categories, patterns and the checks that
look around a match.

A check looks at one match and says how much of its pattern's weight it carries. It only
ever reads a short window around the match (`clause_before`, `clause_after`, `near`), so
checking every match keeps the screen linear in the text's length.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class InjectionCategory(str, Enum):
    """What a flagged message tried to do."""

    NONE = "none"
    INSTRUCTION_OVERRIDE = "instruction_override"
    EXFILTRATION = "exfiltration"
    FOREIGN_ID = "foreign_id"
    TOOL_ABUSE = "tool_abuse"


OVERRIDE = InjectionCategory.INSTRUCTION_OVERRIDE
EXFIL = InjectionCategory.EXFILTRATION
TOOL = InjectionCategory.TOOL_ABUSE

# A check looks at one match and says how much of the pattern's weight it carries: 1.0 full,
# 0.0 none (not this frame after all), in between a scoped reading (recorded, rarely decisive).
Check = Callable[[re.Match[str]], float]
SCOPED = 0.15
# How far a frame looks around its match, in characters (a few words of the same clause).
WINDOW_CHARS = 120


@dataclass(frozen=True)
class Pattern:
    """One curated signal.

    Attributes:
        name: stable identifier, recorded with incidents ("override.ignore_instructions";
            frames in other languages than English end in ".es", ".de", ".fr").
        category: what a match means.
        weight: 0..1; a message is flagged once its combined weight reaches the threshold.
        regex: compiled against `view`.
        view: "words", "raw" or "squashed" (see `injection_views.Views`).
        check: optional extra look at a match, for what a regex alone says badly.
    """

    name: str
    category: InjectionCategory
    weight: float
    regex: re.Pattern[str]
    view: str = "words"
    check: Check | None = None


def fold(fragment: str) -> str:
    """A lexicon fragment in the `words` view's spelling: no diacritics, ß as ss."""
    stripped = "".join(
        c for c in unicodedata.normalize("NFKD", fragment) if not unicodedata.combining(c)
    )
    return unicodedata.normalize("NFC", stripped).replace("ß", "ss")


def clause_after(match: re.Match[str], end: int | None = None) -> str:
    text = match.string
    start = match.end() if end is None else end
    tail = text[start : start + WINDOW_CHARS]
    cut = tail.find(" . ")
    return (tail if cut < 0 else tail[:cut]).strip()


def clause_before(match: re.Match[str]) -> str:
    text = match.string
    head = text[max(0, match.start() - WINDOW_CHARS) : match.start()]
    cut = head.rfind(" . ")
    return (head if cut < 0 else head[cut + 3 :]).strip()


def near(match: re.Match[str]) -> str:
    """The match with the words around it, across sentences (a persona and its rules)."""
    text = match.string
    return text[max(0, match.start() - WINDOW_CHARS) : match.end() + WINDOW_CHARS // 2]
