"""The vocabulary of dates in what people say, and the scanner that finds them in a text.

One vocabulary (weekdays, months, seasons, counts, units) for everything that reads dates:
`core.dates` resolves what the scanner finds, for memories and for retrieval's time windows.

A month name on its own is a month only where a date is meant. January, February, July and
September to December are nobody's name and no other word: they are months anywhere. March,
April, May, June and August are names or words too ("my sister June", "How is August doing?",
"I may march"), and so are the abbreviations: they are months only after a cue ("in June",
"since August", "last March", "early May", "the end of June") or beside a year, and not when a
verb or a possessive follows a bare preposition ("since August left", "in June's car"); "of"
is a cue only after a part of a month ("the end of June", not "a photo of June"). "Jan", "Mar"
and "Aug" are months only beside a day or a year ("Jan 5", "Aug 2023").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
)
# The first month of each season (northern hemisphere); a season is three months long.
SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}
_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "a couple of": 2, "a couple": 2, "couple of": 2, "a few": 3, "few": 3,
}
# "since August left": a month name followed by one of these is someone doing something.
_VERBS_AFTER_A_NAME = frozenset(
    """
    is was has had does did will would can could should might must says said told tells
    called calls texted texts asked asks wants wanted went goes came comes left leaves lives
    lived loves loved likes liked thinks thought got gets gave gives sent sends
    """.split()
)
_ONLY_MONTHS = frozenset(
    {"january", "february", "july", "september", "october", "november", "december"}
)
_NAME_LIKE_ABBREVIATIONS = frozenset({"jan", "mar", "aug"})

_WD = rf"(?P<wd>{'|'.join(WEEKDAYS)})"
_MON = (
    r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
SEASON_PATTERN = rf"(?P<season>{'|'.join(SEASONS)})"
_NUM = (
    r"(?P<n>\d{1,3}|"
    + "|".join(w.replace(" ", r"\s+") for w in sorted(_NUMBER_WORDS, key=len, reverse=True))
    + ")"
)
_UNIT = r"(?P<unit>day|week|month|year)(?P<plural>s)?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?:(?:,\s*|\s+)(?P<year>\d{4}))?"
_CUE = r"(?P<cue>in|during|since|until|till|through(?:out)?|before|after|of)"
# "of June" is the month after one of these ("the end of June"); "a photo of June" is a name.
_PART_OF_A_MONTH = re.compile(r"\b(?:end|start|beginning|middle|rest|half|part|week|month)\s+$")

# Order matters where two expressions start at the same word: longer ones first, so "the day
# after tomorrow" wins over "tomorrow", and "last week" (a calendar week) over "last 3 weeks".
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("iso", r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})"),
    ("after_tomorrow", r"(?:the\s+)?day\s+after\s+tomorrow"),
    ("before_yesterday", r"(?:the\s+)?day\s+before\s+yesterday"),
    ("today", r"today|tonight|this\s+(?:morning|afternoon|evening)"),
    ("tomorrow", r"tomorrow"),
    ("yesterday", r"yesterday|last\s+night"),
    ("weekday", rf"(?P<rel>next|last|this\s+past|this|coming|on)\s+{_WD}"),
    ("weekend", r"(?P<rel>this\s+past|past|this|next|last|the)\s+weekend"),
    ("period", r"(?P<rel>next|last|this)\s+(?P<unit>week|month|year)"),
    ("span", rf"(?:the\s+)?(?:past|last)\s+(?:{_NUM}\s+)?{_UNIT}"),
    ("season", rf"(?P<rel>next|last|this\s+past|this)\s+{SEASON_PATTERN}"),
    ("season_year", rf"(?:the\s+)?{SEASON_PATTERN}\s+(?:of\s+)?(?P<year>(?:19|20)\d{{2}})"),
    ("in", rf"in\s+{_NUM}\s+{_UNIT}"),
    ("ago", rf"{_NUM}\s+{_UNIT}\s+ago"),
    ("recent", r"recently|lately|these\s+days"),
    ("month_day", rf"{_MON}\.?\s+{_DAY}{_YEAR}"),
    ("day_month", rf"(?:the\s+)?{_DAY}\s+(?:of\s+)?{_MON}{_YEAR}"),
    (
        "month",
        rf"(?:{_CUE}\s+)?(?:(?P<rel>last|this|next|early|late|mid)(?:\s+|-))?{_MON}"
        r"(?!\.?\s+[0-3]?\d(?:st|nd|rd|th)?\b)(?:,?\s+(?P<year>(?:19|20)\d{2}))?",
    ),
    ("year", r"(?:in|during|since)\s+(?P<y>(?:19|20)\d{2})"),
)
# One scanner finds every expression left to right; its inner groups are made anonymous (the
# branches share names such as "unit"), and each branch is compiled alone to read them. It reads
# the text with ASCII letters lower-cased (same length, so positions carry over): matching
# without IGNORECASE, and one `\b` before the alternatives, is what keeps it fast.
_SCANNER = re.compile(
    r"\b(?:"
    + "|".join(
        rf"(?P<{name}>{re.sub(r'[(][?]P<[a-z]+>', '(?:', pattern)})" for name, pattern in _PATTERNS
    )
    + r")\b"
)
_BRANCHES = {name: re.compile(pattern) for name, pattern in _PATTERNS}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NEXT_WORD = re.compile(r"(?:'s\b|’s\b|\s+(?P<word>[^\W\d_]+))")


@dataclass(frozen=True)
class Expression:
    """One date expression as written, before it is resolved against a day.

    Attributes:
        kind: which expression it is ('weekday', 'month_day', 'span', ...; see `_PATTERNS`).
        parts: its pieces by name ('rel', 'wd', 'mon', 'day', 'year', 'n', 'unit', ...), with
            ASCII letters lower-cased.
        start: index of its first character in the text.
        end: index after its last character.
        text: the expression as written.
    """

    kind: str
    parts: dict[str, str | None]
    start: int
    end: int
    text: str

    def part(self, name: str, default: str = "") -> str:
        """A piece (lower-case) with its spacing collapsed ("this  past" -> "this past")."""
        return " ".join((self.parts.get(name) or default).split())


def month_number(token: str) -> int:
    """1-12 for a month name or abbreviation ("Sept" -> 9)."""
    token = token.lower()
    for index, name in enumerate(MONTHS, start=1):
        if name.startswith(token[:3]):
            return index
    raise ValueError(token)


def count(token: str | None) -> int:
    """The number a count means ("a couple of" -> 2, "12" -> 12); no count is one."""
    if token is None:
        return 1
    token = " ".join(token.lower().split())
    return int(token) if token.isdigit() else _NUMBER_WORDS[token]


def _means_a_month(month: re.Match[str], written: str) -> bool:
    """Whether a month word without a day is the month, not a name or a word (see above).

    `month` is the month branch's match on the lower-cased text, `written` the month word as
    written.
    """
    parts, lowered = month.groupdict(), month.string
    word = written.lower()
    if parts.get("year"):
        return True
    if word in _NAME_LIKE_ABBREVIATIONS:
        return False
    if word in _ONLY_MONTHS:
        return True
    if parts.get("rel"):
        # "last June", "early May"; but "this may help" is the verb, "this May" the month.
        return written != "may" or parts.get("cue") is not None
    cue = parts.get("cue")
    if not cue or (cue == "of" and not _PART_OF_A_MONTH.search(lowered, 0, month.start())):
        return False
    after = _NEXT_WORD.match(lowered, month.end())
    if after is None:
        return True
    following = after.group("word")  # None after a possessive: "in June's car"
    return following is not None and following not in _VERBS_AFTER_A_NAME


def scan(text: str) -> Iterator[Expression]:
    """Every date expression in `text`, left to right, not overlapping."""
    lowered = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
    position = 0
    while (match := _SCANNER.search(lowered, position)) is not None:
        kind = match.lastgroup or ""
        start, end = match.span()
        inner = _BRANCHES[kind].fullmatch(lowered, start, end)
        if inner is not None and (
            kind != "month" or _means_a_month(inner, text[slice(*inner.span("mon"))])
        ):
            yield Expression(kind, inner.groupdict(), start, end, text[start:end])
            position = end
            continue
        # A refused month may still hold a shorter expression ("in June's" -> "June's").
        position = start + 1
