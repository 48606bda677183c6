"""Turns relative date expressions ("next Friday", "in two weeks") into absolute dates.

Memories outlive the moment they were said in: "my exam is tomorrow" is wrong a day later,
so the text is rewritten with the date it meant, relative to a `now` in the user's timezone.

Conventions (kept simple and predictable rather than clever):
  * "on/this/coming <weekday>" is the next such day, today included; "next <weekday>" is the
    next such day strictly after today; "last <weekday>" is the latest one strictly before.
  * "this weekend" is the Saturday of the current (or coming) weekend; "next weekend" is a week
    after it; "next week" is that week's Monday; "next month" its first day.
  * A month and day without a year ("May 5") is the next such date, today included.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
)
_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "a couple of": 2, "a couple": 2, "couple of": 2,
}

_WD = r"(?P<wd>monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MON = (
    r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_NUM = r"(?P<n>\d{1,3}|a couple of|a couple|couple of|an?|one|two|three|four|five|six|seven|" \
       r"eight|nine|ten|eleven|twelve)"
_UNIT = r"(?P<unit>day|week|month|year)s?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?:,?\s+(?P<year>\d{4}))?"

# Order matters: longer expressions first so "the day after tomorrow" wins over "tomorrow".
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("iso", r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})"),
    ("after_tomorrow", r"(?:the\s+)?day\s+after\s+tomorrow"),
    ("before_yesterday", r"(?:the\s+)?day\s+before\s+yesterday"),
    ("today", r"today|tonight|this\s+(?:morning|afternoon|evening)"),
    ("tomorrow", r"tomorrow"),
    ("yesterday", r"yesterday|last\s+night"),
    ("weekday", rf"(?P<rel>next|last|this|coming|on)\s+{_WD}"),
    ("weekend", r"(?P<rel>this|next|last|the)\s+weekend"),
    ("period", r"(?P<rel>next|last|this)\s+(?P<unit>week|month|year)"),
    ("in", rf"in\s+{_NUM}\s+{_UNIT}"),
    ("ago", rf"{_NUM}\s+{_UNIT}\s+ago"),
    ("month_day", rf"{_MON}\.?\s+{_DAY}{_YEAR}"),
    ("day_month", rf"(?:the\s+)?{_DAY}\s+(?:of\s+)?{_MON}{_YEAR}"),
)
# One scanner finds every expression left to right; its inner groups are made anonymous (the
# branches share names such as "unit"), and each branch is compiled alone to read them.
_SCANNER = re.compile(
    "|".join(
        rf"(?P<{name}>\b(?:{re.sub(r'[(][?]P<[a-z]+>', '(?:', pattern)})\b)"
        for name, pattern in _PATTERNS
    ),
    re.IGNORECASE,
)
_BRANCHES = {
    name: re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE) for name, pattern in _PATTERNS
}


@dataclass(frozen=True)
class DateMention:
    """One date expression found in a text.

    Attributes:
        start: index of the first character of the expression in the text.
        end: index after its last character.
        text: the expression as written.
        date: the day it refers to (the first day, for a week, month or year).
        granularity: 'day', 'weekend', 'week', 'month' or 'year'.
        relative: whether its meaning depended on `now` (ISO dates and dates with a year do not).
        has_year: False for a month and day written without a year.
    """

    start: int
    end: int
    text: str
    date: date
    granularity: str
    relative: bool
    has_year: bool = True


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (the default clock of the services)."""
    return datetime.now(UTC)


def timezone_named(name: str | None) -> tzinfo:
    """The IANA timezone `name`, or UTC when it is missing or unknown."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def local_today(now: datetime, tz: tzinfo) -> date:
    """The calendar day it is at `now` for someone in `tz` (naive `now` is taken as UTC)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(tz).date()


def _month_index(token: str) -> int:
    token = token.lower()
    for index, name in enumerate(MONTHS, start=1):
        if name.startswith(token[:3]):
            return index
    raise ValueError(token)


def _number(token: str) -> int:
    token = " ".join(token.lower().split())
    return int(token) if token.isdigit() else _NUMBER_WORDS[token]


def add_months(day: date, months: int) -> date:
    """`day` moved by whole months, clamped to the last day of a shorter month."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def _shift(today: date, n: int, unit: str) -> date:
    unit = unit.lower()
    if unit == "day":
        return today + timedelta(days=n)
    if unit == "week":
        return today + timedelta(weeks=n)
    if unit == "month":
        return add_months(today, n)
    return add_months(today, 12 * n)


def _weekday(today: date, weekday: int, rel: str) -> date:
    if rel == "last":
        return today - timedelta(days=(today.weekday() - weekday) % 7 or 7)
    ahead = (weekday - today.weekday()) % 7
    if rel == "next" and ahead == 0:
        ahead = 7
    return today + timedelta(days=ahead)


def _weekend(today: date, rel: str) -> date:
    # The Saturday of the weekend we are in, or of the coming one on a weekday.
    if today.weekday() == 6:
        saturday = today - timedelta(days=1)
    else:
        saturday = today + timedelta(days=(5 - today.weekday()) % 7)
    if rel == "next":
        return saturday + timedelta(weeks=1)
    if rel == "last":
        return saturday - timedelta(weeks=1)
    return saturday


def _period(today: date, rel: str, unit: str) -> date:
    step = {"next": 1, "last": -1, "this": 0}[rel]
    if unit == "week":
        monday = today - timedelta(days=today.weekday())
        return monday + timedelta(weeks=step)
    if unit == "month":
        return add_months(today.replace(day=1), step)
    return date(today.year + step, 1, 1)


def _calendar_day(today: date, month: int, day: int, year: str | None) -> date | None:
    try:
        if year is not None:
            return date(int(year), month, day)
        candidate = date(today.year, month, day)
        if candidate < today:
            candidate = date(today.year + 1, month, day)
        return candidate
    except ValueError:
        return None  # "February 30" and the like are not dates


def _resolve(kind: str, groups: dict[str, str | None], today: date) -> DateMention | None:
    """The date and granularity of one matched expression; None when it is not a real date."""

    def mention(day: date | None, granularity: str = "day", relative: bool = True,
                has_year: bool = True) -> DateMention | None:
        if day is None:
            return None
        return DateMention(0, 0, "", day, granularity, relative, has_year)

    rel = (groups.get("rel") or "").lower()
    if kind == "iso":
        try:
            day = date(int(groups["y"] or 0), int(groups["m"] or 0), int(groups["d"] or 0))
        except ValueError:
            return None
        return mention(day, relative=False)
    if kind == "after_tomorrow":
        return mention(today + timedelta(days=2))
    if kind == "before_yesterday":
        return mention(today - timedelta(days=2))
    if kind == "today":
        return mention(today)
    if kind == "tomorrow":
        return mention(today + timedelta(days=1))
    if kind == "yesterday":
        return mention(today - timedelta(days=1))
    if kind == "weekday":
        weekday = WEEKDAYS.index((groups["wd"] or "").lower())
        return mention(_weekday(today, weekday, rel))
    if kind == "weekend":
        return mention(_weekend(today, "this" if rel == "the" else rel), granularity="weekend")
    if kind == "period":
        unit = (groups["unit"] or "").lower()
        return mention(_period(today, rel, unit), granularity=unit)
    if kind in ("in", "ago"):
        n = _number(groups["n"] or "0")
        unit = (groups["unit"] or "day").lower()
        return mention(_shift(today, n if kind == "in" else -n, unit))
    if kind in ("month_day", "day_month"):
        year = groups.get("year")
        on = _calendar_day(today, _month_index(groups["mon"] or ""), int(groups["day"] or 0), year)
        return mention(on, relative=year is None, has_year=year is not None)
    return None


def find_dates(text: str, *, now: datetime, tz: tzinfo = UTC) -> list[DateMention]:
    """Every date expression in `text`, in order, resolved relative to `now` in `tz`."""
    today = local_today(now, tz)
    found: list[DateMention] = []
    for match in _SCANNER.finditer(text):
        kind = match.lastgroup or ""
        inner = _BRANCHES[kind].fullmatch(match.group(0))
        if inner is None:
            continue
        resolved = _resolve(kind, inner.groupdict(), today)
        if resolved is None:
            continue
        found.append(
            DateMention(
                start=match.start(),
                end=match.end(),
                text=match.group(0),
                date=resolved.date,
                granularity=resolved.granularity,
                relative=resolved.relative,
                has_year=resolved.has_year,
            )
        )
    return found


def parse_date(expression: str, *, now: datetime, tz: tzinfo = UTC) -> date | None:
    """The date a whole expression ("next friday", "2026-12-01") refers to, or None."""
    mentions = find_dates(expression.strip(), now=now, tz=tz)
    if len(mentions) == 1 and mentions[0].text.strip() == expression.strip():
        return mentions[0].date
    return None


_PREPOSITION_BEFORE = re.compile(r"\b(on|by|until|till|since|before|after|from|for)\s*$", re.I)


def _absolute_phrase(mention: DateMention, preceded_by_preposition: bool) -> str:
    day = mention.date
    if mention.granularity == "week":
        return f"the week of {day.isoformat()}"
    if mention.granularity == "weekend":
        return f"the weekend of {day.isoformat()}"
    if mention.granularity == "month":
        return f"in {day.strftime('%B %Y')}" if not preceded_by_preposition else day.strftime(
            "%B %Y"
        )
    if mention.granularity == "year":
        return f"in {day.year}" if not preceded_by_preposition else str(day.year)
    phrase = f"{day.strftime('%A')} {day.isoformat()}"
    return phrase if preceded_by_preposition else f"on {phrase}"


@dataclass(frozen=True)
class Absolutized:
    """A text with its relative dates replaced, and the first day it mentions.

    Attributes:
        text: the rewritten text ("exam on Friday 2026-11-27").
        event_date: the first date mentioned to within a week, if any.
        mentions: every date expression found in the original text.
    """

    text: str
    event_date: date | None
    mentions: tuple[DateMention, ...]


def absolutize(
    text: str, *, now: datetime, tz: tzinfo = UTC, recurring: bool = False
) -> Absolutized:
    """Rewrite every relative date in `text` as an absolute one.

    Args:
        text: what the user said, e.g. "dentist next Friday".
        now: the moment it was said.
        tz: the user's timezone; "tomorrow" depends on where they are.
        recurring: True for yearly things (a birthday): "May 5" then keeps no year in the text,
            while `event_date` still gives its next occurrence.
    """
    mentions = find_dates(text, now=now, tz=tz)
    pieces: list[str] = []
    cursor = 0
    for mention in mentions:
        pieces.append(text[cursor:mention.start])
        if not mention.relative:
            pieces.append(mention.text)
        elif not mention.has_year:
            pieces.append(mention.text if recurring else f"{mention.text}, {mention.date.year}")
        else:
            before = "".join(pieces)
            pieces.append(_absolute_phrase(mention, bool(_PREPOSITION_BEFORE.search(before))))
        cursor = mention.end
    pieces.append(text[cursor:])
    precise = [m for m in mentions if m.granularity in ("day", "weekend", "week")]
    event = precise[0].date if precise else None
    return Absolutized(text="".join(pieces), event_date=event, mentions=tuple(mentions))
