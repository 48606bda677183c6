"""Reads the dates in what people say, for memories and for retrieval's time windows.

Memories outlive the moment they were said in: "my exam is tomorrow" is wrong a day later, so
`absolutize` rewrites the text with the date it meant, relative to a `now` in the user's
timezone. Retrieval reads the same expressions (`core.date_scanner`, one vocabulary) as time
windows (`rag_system.query.find_time_window`).

Conventions (kept simple and predictable rather than clever):
  * "next <weekday>" is the next such day strictly after today; "last <weekday>" and "this past
    <weekday>" the latest one strictly before; "this/coming <weekday>" the next, today included.
  * An expression that names no direction ("on Tuesday", "May 5", "in May", "the weekend") leans
    ahead when saving what someone said (the next one, today included), and back when searching
    what was said (the latest one): `lean="ahead"` or `lean="back"`.
  * "this weekend" is the Saturday of the current (or coming) weekend; "next weekend" is a week
    after it; "next week" is that week's Monday; "next month" its first day.
  * "last summer" is the latest summer that has ended; "this summer" the one we are in, else
    whichever of the last and the next is nearer.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.date_scanner import (
    SEASON_PATTERN,
    SEASONS,
    WEEKDAYS,
    Expression,
    count,
    month_number,
    scan,
)

Lean = Literal["ahead", "back"]


@dataclass(frozen=True)
class DateMention:
    """One date expression found in a text.

    Attributes:
        start: index of the first character of the expression in the text.
        end: index after its last character.
        text: the expression as written.
        granularity: 'day', 'weekend', 'week', 'month', 'season' or 'year'; 'span' for a stretch
            up to today ("the past 3 weeks") and 'recent' for "recently", which name no date.
        relative: whether its meaning depended on `now` (ISO dates and dates with a year do not).
        until: the day after the last day it covers.
        date: the day it refers to (the first day, for a longer span).
        has_year: False for a month, or a month and day, written without a year.
        slack: days either side it may also mean ("three weeks ago" is about 4 days either way).
    """

    start: int
    end: int
    text: str
    granularity: str
    relative: bool
    until: date
    date: date  # last of the fields typed `date`: from here on the name is this field
    has_year: bool = True
    slack: int = 0


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


def add_months(day: date, months: int) -> date:
    """`day` moved by whole months, clamped to the last day of a shorter month."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


class _Resolver:
    """Resolves one matched expression against today, leaning ahead or back when it must."""

    def __init__(self, today: date, lean: Lean) -> None:
        self.today = today
        self.lean = lean

    def weekday(self, weekday: int, rel: str) -> date:
        today = self.today
        if rel in ("last", "this past") or (rel == "on" and self.lean == "back"):
            return today - timedelta(days=(today.weekday() - weekday) % 7 or 7)
        ahead = (weekday - today.weekday()) % 7
        if rel == "next" and ahead == 0:
            ahead = 7
        return today + timedelta(days=ahead)

    def weekend(self, rel: str) -> date:
        # The Saturday of the weekend we are in, or of the coming one on a weekday.
        today = self.today
        if today.weekday() == 6:
            saturday = today - timedelta(days=1)
        else:
            saturday = today + timedelta(days=(5 - today.weekday()) % 7)
        if rel == "the":
            rel = "last" if self.lean == "back" and today.weekday() < 5 else "this"
        if rel == "next":
            return saturday + timedelta(weeks=1)
        if rel in ("last", "past", "this past"):
            return saturday - timedelta(weeks=1)
        return saturday

    def period(self, rel: str, unit: str) -> tuple[date, date]:
        step = {"next": 1, "last": -1, "this": 0}[rel]
        today = self.today
        if unit == "week":
            monday = today - timedelta(days=today.weekday()) + timedelta(weeks=step)
            return monday, monday + timedelta(weeks=1)
        if unit == "month":
            first = add_months(today.replace(day=1), step)
            return first, add_months(first, 1)
        return date(today.year + step, 1, 1), date(today.year + step + 1, 1, 1)

    def season(self, name: str, rel: str) -> date:
        today = self.today
        first_month = SEASONS[name]
        begun = date(today.year, first_month, 1)
        if begun > today:
            begun = date(today.year - 1, first_month, 1)
        ended = begun if add_months(begun, 3) <= today else date(begun.year - 1, first_month, 1)
        coming = date(begun.year + 1, first_month, 1)
        if rel in ("last", "this past"):
            return ended
        if rel == "next":
            return coming
        if begun != ended:
            return begun  # we are in it
        return ended if (today - add_months(ended, 3)) < (coming - today) else coming

    def calendar_day(self, month: int, day: int, year: str | None) -> date | None:
        today = self.today
        try:
            if year is not None:
                return date(int(year), month, day)
            candidate = date(today.year, month, day)
            if self.lean == "ahead" and candidate < today:
                candidate = date(today.year + 1, month, day)
            elif self.lean == "back" and candidate > today:
                candidate = date(today.year - 1, month, day)
            return candidate
        except ValueError:
            return None  # "February 30" and the like are not dates

    def month(self, month: int, rel: str, year: str | None) -> date:
        today = self.today
        if year is not None:
            return date(int(year), month, 1)
        if rel == "this":
            return date(today.year, month, 1)
        this_year = date(today.year, month, 1)
        current = today.replace(day=1)
        if rel == "last" or (rel != "next" and self.lean == "back"):
            back = this_year < current if rel == "last" else this_year <= current
            return this_year if back else date(today.year - 1, month, 1)
        forward = this_year > current if rel == "next" else this_year >= current
        return this_year if forward else date(today.year + 1, month, 1)

    def shift(self, n: int, unit: str) -> date:
        if unit == "day":
            return self.today + timedelta(days=n)
        if unit == "week":
            return self.today + timedelta(weeks=n)
        return add_months(self.today, n if unit == "month" else 12 * n)


# How far "3 weeks ago" may stray from the day it computes, by unit.
_SLACK_DAYS = {"day": 1, "week": 4, "month": 15, "year": 120}
_SPAN_DAYS = {"day": 1, "week": 7, "month": 31, "year": 366}
_DAYS_FROM_TODAY = {
    "after_tomorrow": 2, "before_yesterday": -2, "today": 0, "tomorrow": 1, "yesterday": -1,
}
_DAY = timedelta(days=1)


def _resolve(found: Expression, resolver: _Resolver) -> DateMention | None:
    """What one expression means; None when it is not a real date ("February 30")."""

    def mention(first: date | None, until: date | None = None, granularity: str = "day", *,
                relative: bool = True, has_year: bool = True, slack: int = 0) -> DateMention | None:
        if first is None:
            return None
        return DateMention(
            start=found.start, end=found.end, text=found.text, granularity=granularity,
            relative=relative, until=until or first + _DAY, date=first, has_year=has_year,
            slack=slack,
        )

    kind, parts, today = found.kind, found.parts, resolver.today
    rel, unit = found.part("rel"), found.part("unit", "day")
    year = parts.get("year")
    if kind == "iso":
        try:
            day = date(int(found.part("y")), int(found.part("m")), int(found.part("d")))
        except ValueError:
            return None
        return mention(day, relative=False)
    if kind in _DAYS_FROM_TODAY:
        return mention(today + _DAYS_FROM_TODAY[kind] * _DAY)
    if kind == "weekday":
        return mention(resolver.weekday(WEEKDAYS.index(found.part("wd")), rel))
    if kind == "weekend":
        saturday = resolver.weekend(rel)
        return mention(saturday, saturday + 2 * _DAY, "weekend")
    if kind == "period":
        first, until = resolver.period(rel, unit)
        return mention(first, until, unit)
    if kind == "span":
        if parts.get("n") is None and parts.get("plural"):
            return None  # "the last days of summer" names no stretch
        return mention(today - count(parts.get("n")) * _SPAN_DAYS[unit] * _DAY, today + _DAY,
                       "span")
    if kind in ("season", "season_year"):
        name = found.part("season")
        first = date(int(year), SEASONS[name], 1) if year else resolver.season(name, rel)
        return mention(first, add_months(first, 3), "season", relative=year is None)
    if kind in ("in", "ago"):
        n = count(parts.get("n"))
        return mention(resolver.shift(n if kind == "in" else -n, unit), slack=_SLACK_DAYS[unit])
    if kind == "recent":
        return mention(today - 21 * _DAY, today + _DAY, "recent")
    if kind in ("month_day", "day_month"):
        on = resolver.calendar_day(month_number(found.part("mon")), int(found.part("day")), year)
        return mention(on, relative=year is None, has_year=year is not None)
    if kind == "month":
        first = resolver.month(month_number(found.part("mon")), rel, year)
        return mention(first, add_months(first, 1), "month", relative=year is None,
                       has_year=year is not None)
    if kind == "year":
        first = date(int(found.part("y")), 1, 1)
        return mention(first, date(first.year + 1, 1, 1), "year", relative=False)
    return None


def find_dates(
    text: str, *, now: datetime, tz: tzinfo = UTC, lean: Lean = "ahead"
) -> list[DateMention]:
    """Every date expression in `text`, in order, resolved relative to `now` in `tz`.

    Args:
        text: what was said.
        now: the moment it was said.
        tz: the speaker's timezone; "tomorrow" depends on where they are.
        lean: how an expression naming no direction is read: "ahead" (plans: "on Tuesday" is
            the coming one) or "back" (questions about the past: the latest one).
    """
    resolver = _Resolver(local_today(now, tz), lean)
    resolved = (_resolve(found, resolver) for found in scan(text))
    return [mention for mention in resolved if mention is not None]


def parse_date(expression: str, *, now: datetime, tz: tzinfo = UTC) -> date | None:
    """The date a whole expression ("next friday", "2026-12-01") refers to, or None.

    Stretches that name no date ("recently", "the past week") are None too.
    """
    mentions = find_dates(expression.strip(), now=now, tz=tz)
    if len(mentions) != 1 or mentions[0].text.strip() != expression.strip():
        return None
    return None if mentions[0].granularity in ("span", "recent") else mentions[0].date


_PREPOSITION_BEFORE = re.compile(r"\b(on|by|until|till|since|before|after|from|for)\s*$", re.I)
_SEASON_WORD = re.compile(rf"\b{SEASON_PATTERN}\b", re.IGNORECASE)


def _absolute_phrase(mention: DateMention, preceded_by_preposition: bool) -> str:
    day = mention.date
    if mention.granularity == "week":
        return f"the week of {day.isoformat()}"
    if mention.granularity == "weekend":
        return f"the weekend of {day.isoformat()}"
    if mention.granularity == "season":
        found = _SEASON_WORD.search(mention.text)
        name = found.group(0).lower() if found else "season"
        years = f"{day.year}-{day.year + 1}" if day.month == 12 else str(day.year)
        phrase = f"the {name} of {years}"
        return phrase if preceded_by_preposition else f"in {phrase}"
    if mention.granularity == "month":
        phrase = day.strftime("%B %Y")
        return phrase if preceded_by_preposition else f"in {phrase}"
    if mention.granularity == "year":
        return str(day.year) if preceded_by_preposition else f"in {day.year}"
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

    Left as written: absolute dates, stretches up to now that name no date ("recently", "the
    past week") and a month named without a year ("in May", "since last March"), which people
    say of the past as often as of plans.

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
        vague = mention.granularity in ("span", "recent")
        if not mention.relative or vague or (not mention.has_year and mention.granularity != "day"):
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
