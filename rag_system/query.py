"""Turns a user turn (and the last few turns) into what the candidate SQL needs, with no LLM.

Three cheap steps, all local and sub-millisecond:
  * temporal hints ("last week", "in May", "3 days ago") become a time window and are taken
    out of the keyword query, so "may" or "week" do not match every turn that says them;
  * keywords are OR-ed words without stop words (Postgres stems them), each with a weight:
    the turn's own words count fully, words from the recent turns a little;
  * the text to embed gets the previous turn prepended when the turn leans on it ("what about
    her?"), so an elliptical follow-up still finds what the conversation is about.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# Postgres's `english` stop words plus question words and conversational filler: none of them
# says what a memory is about, and AND-ish matching on them is what makes plain FTS weak.
STOP_WORDS = frozenset(
    """
    a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each even ever few for from further get gets got had hadn't
    has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself
    his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just kind know
    let's like lot me might more most much must mustn't my myself no nor not now of off oh ok
    okay on once only or other ought our ours ourselves out over own really said same say says
    shall shan't she she'd she'll she's should shouldn't so some such tell than that that's the
    their theirs them themselves then there there's these they they'd they'll they're they've
    thing things think this those though through to too under until up upon us very want was
    wasn't way we we'd we'll we're we've well were weren't what what's when when's where where's
    whether which while who who's whom whose why why's will with won't would wouldn't yeah yes
    yet you you'd you'll you're you've your yours yourself yourselves
    """.split()
)
# Turns made only of these (and stop words) are acknowledgements, not something to look up.
_SMALL_TALK = frozenset(
    """
    hi hello hey bye goodbye thanks thank cheers sure cool great nice alright hmm um uh ah
    lol haha yep yup nope nah good fine right wow okay ok yeah yes no please sorry mhm
    """.split()
)
# Words that make a turn lean on the one before it.
_ANAPHORA = frozenset(
    "it its that this these those they them their he him his she her there then one".split()
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
MAX_QUERY_TERMS = 24
MAX_CONTEXT_TERMS = 8
CONTEXT_TERM_WEIGHT = 0.3
# A turn with this few content words ("why?", "and Paris?") needs the conversation to mean
# anything. Two already say what they are about ("what is my dog called?"): prepending the
# previous turn (often the companion's unrelated question) would only blur their embedding.
SHORT_TURN_WORDS = 1
MAX_EMBED_CONTEXT_CHARS = 300

_MONTHS = {name: i for i, name in enumerate(calendar.month_name) if name}
_MONTH_ALIASES = {name.lower(): i for name, i in _MONTHS.items()} | {
    name.lower()[:3]: i for name, i in _MONTHS.items()
} | {"sept": 9}
_MONTH_RE = (
    r"(?P<mon>january|february|march|april|may|june|july|august|september|october|november|"
    r"december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)"
)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "a few": 3, "few": 3,
}
_NUM_RE = r"(?P<n>\d{1,3}|a couple of|a few|few|an?|one|two|three|four|five|six|seven|eight|" \
          r"nine|ten)"
_SEASONS = {"spring": (3, 5), "summer": (6, 8), "autumn": (9, 11), "fall": (9, 11)}

# Longest expressions first; each yields (start, end) of the window in `_window`.
_TEMPORAL = re.compile(
    r"\b(?:"
    r"(?P<before_yesterday>the day before yesterday)"
    r"|(?P<yesterday>yesterday|last night)"
    r"|(?P<today>today|tonight|this morning|this afternoon|this evening)"
    r"|(?P<ago>" + _NUM_RE + r"\s+(?P<unit>day|week|month|year)s?\s+ago)"
    r"|(?P<past>(?:in\s+)?the\s+(?:past|last)\s+(?:(?P<pn>\d{1,3}|few|couple of|two|three)\s+)?"
    r"(?P<punit>day|week|month|year)s?)"
    r"|(?P<period>(?P<rel>last|this|past)\s+(?P<per>week|weekend|month|year))"
    r"|(?P<season>(?P<srel>last|this)\s+(?P<sname>spring|summer|autumn|fall|winter))"
    r"|(?P<weekday>(?:last|on|this past)\s+(?P<wd>" + "|".join(_WEEKDAYS) + r"))"
    r"|(?P<recently>recently|lately|these days)"
    r"|(?P<month>(?:(?:in|during|since|of|early|late|mid)\s+)?(?:early\s+|late\s+|mid-?\s*)?"
    + _MONTH_RE + r"(?:\s+(?P<myear>(?:19|20)\d{2}))?)"
    r"|(?P<year>(?:in|during|since)\s+(?P<y>(?:19|20)\d{2}))"
    r")\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TimeWindow:
    """A span of time a query points at, half-open [start, end), in UTC.

    Attributes:
        label: the words that set it ("last week"), for the `why` of a result.
    """

    start: datetime
    end: datetime
    label: str

    def contains(self, when: datetime) -> bool:
        return self.start <= when < self.end


@dataclass(frozen=True)
class PreparedQuery:
    """Everything the candidate SQL and the scorer need from one turn.

    Attributes:
        text: the turn as given.
        embed_text: what to embed (the turn, or the previous turn plus the turn).
        words: keyword words, stop words removed, in order, each once.
        weights: one weight per word (1.0 for the turn's own, less for the context's).
        window: the time window the turn points at, if any.
    """

    text: str
    embed_text: str
    words: tuple[str, ...]
    weights: tuple[float, ...]
    window: TimeWindow | None = None
    context_used: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def tsquery(self) -> str:
        """The OR-query for `to_tsquery('english', ...)`; words are letters/digits only."""
        return " | ".join(self.words)


def content_words(text: str) -> list[str]:
    """Lower-cased words of `text` that can carry meaning (no stop words, no 1-letter words)."""
    out: list[str] = []
    for raw in _WORD.findall(text.lower()):
        word = raw.split("'")[0] if raw.endswith("'s") else raw
        if len(word) < 2 or word in STOP_WORDS:
            continue
        # Apostrophes inside a word ("don't" is a stop word; "o'brien") are not tsquery-safe.
        word = word.replace("'", "")
        if word:
            out.append(word)
    return out


def _start_of_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _number(raw: str | None, default: int = 1) -> int:
    if raw is None:
        return default
    raw = raw.lower().strip()
    if raw.isdigit():
        return max(1, int(raw))
    return _NUMBER_WORDS.get(raw, default)


def _month_window(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if month == 12 else datetime(
        year, month + 1, 1, tzinfo=UTC
    )
    return start, end


def _window(match: re.Match[str], now: datetime) -> tuple[datetime, datetime] | None:
    today = _start_of_day(now)
    day = timedelta(days=1)
    if match.group("before_yesterday"):
        return today - 2 * day, today - day
    if match.group("yesterday"):
        return today - day, today
    if match.group("today"):
        return today, today + day
    if match.group("ago"):
        n = _number(match.group("n"))
        unit = match.group("unit").lower()
        # "3 weeks ago" is fuzzy: a window around the point, wider for longer units.
        span = {"day": (n * day, day), "week": (7 * n * day, 4 * day),
                "month": (30 * n * day, 15 * day), "year": (365 * n * day, 120 * day)}[unit]
        center = today - span[0]
        return center - span[1], center + span[1] + day
    if match.group("past"):
        n = _number(match.group("pn"))
        unit = match.group("punit").lower()
        length = {"day": 1, "week": 7, "month": 31, "year": 366}[unit] * n
        return today - length * day, today + day
    if match.group("period"):
        rel, per = match.group("rel").lower(), match.group("per").lower()
        if per in ("week", "weekend"):
            monday = today - timedelta(days=today.weekday())
            if rel == "this":
                return monday, monday + 7 * day
            if rel == "past":
                return today - 7 * day, today + day
            if per == "weekend":
                saturday = monday - 2 * day
                return saturday, saturday + 2 * day
            return monday - 7 * day, monday
        if per == "month":
            if rel == "this":
                return _month_window(today.year, today.month)
            if rel == "past":
                return today - 31 * day, today + day
            year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
            return _month_window(year, month)
        if rel == "past":
            return today - 366 * day, today + day
        year = today.year if rel == "this" else today.year - 1
        return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    if match.group("season"):
        name, rel = match.group("sname").lower(), match.group("srel").lower()
        if name == "winter":
            # December to February; "last winter" is the latest one that has begun.
            year = today.year if today.month == 12 else today.year - 1
            if rel == "last" and (today.month == 12 or today.month <= 2):
                year -= 1
            return datetime(year, 12, 1, tzinfo=UTC), datetime(year + 1, 3, 1, tzinfo=UTC)
        first, last = _SEASONS[name]
        year = today.year if today.month >= first else today.year - 1
        if rel == "last" and first <= today.month <= last:
            year -= 1
        start = datetime(year, first, 1, tzinfo=UTC)
        return start, _month_window(year, last)[1]
    if match.group("weekday"):
        wanted = _WEEKDAYS.index(match.group("wd").lower())
        back = (today.weekday() - wanted) % 7 or 7
        start = today - back * day
        return start, start + day
    if match.group("recently"):
        return today - 21 * day, today + day
    if match.group("month"):
        month = _MONTH_ALIASES[match.group("mon").lower()]
        if match.group("myear"):
            return _month_window(int(match.group("myear")), month)
        # "in May" without a year: the latest May that has begun.
        year = today.year if month <= today.month else today.year - 1
        return _month_window(year, month)
    if match.group("year"):
        year = int(match.group("y"))
        return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    return None


def find_time_window(text: str, now: datetime) -> tuple[TimeWindow | None, str]:
    """The first temporal hint in `text` as a window, and `text` with the hint taken out.

    "May" alone is only read as the month after "in/during/since/of" or beside a year, so
    "may I ask" is not a date.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    for match in _TEMPORAL.finditer(text):
        if match.group("month"):
            phrase = match.group("month").lower()
            bare_may = match.group("mon").lower() == "may" and not match.group("myear")
            if bare_may and not re.match(r"(in|during|since|of|early|late|mid)\b", phrase):
                continue
        bounds = _window(match, now)
        if bounds is None:
            continue
        start, end = bounds
        stripped = (text[: match.start()] + " " + text[match.end() :]).strip()
        return TimeWindow(start=start, end=end, label=match.group(0).strip()), stripped
    return None, text


def is_small_talk(text: str) -> bool:
    """Whether a turn is only an acknowledgement ("ok, thanks!", "haha yes")."""
    return all(word in _SMALL_TALK for word in content_words(text))


def leans_on_context(text: str) -> bool:
    """Whether a turn probably needs the previous turn to be understood."""
    words = [w for w in _WORD.findall(text.lower())]
    if len(content_words(text)) <= SHORT_TURN_WORDS:
        return True
    return any(w in _ANAPHORA for w in words[:6])


def prepare(
    text: str,
    *,
    recent_turns: Sequence[str] = (),
    now: datetime | None = None,
) -> PreparedQuery:
    """Build the keyword query, the text to embed and the time window for one turn.

    Args:
        text: the user's turn (or any search text).
        recent_turns: the last few turns before it, oldest first; they add low-weight keywords
            and, for a turn that leans on them, context for the embedding.
        now: the moment relative hints are read against (default: the current time).
    """
    now = now or datetime.now(UTC)
    window, keyword_text = find_time_window(text, now)
    words: list[str] = []
    weights: list[float] = []
    for word in content_words(keyword_text):
        if word not in words and len(words) < MAX_QUERY_TERMS:
            words.append(word)
            weights.append(1.0)
    notes: list[str] = []
    context_terms = 0
    # Most recent turn first: it is the likeliest referent.
    for turn in reversed(list(recent_turns)[-3:]):
        for word in content_words(turn):
            if context_terms >= MAX_CONTEXT_TERMS or len(words) >= MAX_QUERY_TERMS:
                break
            if word not in words:
                words.append(word)
                weights.append(CONTEXT_TERM_WEIGHT)
                context_terms += 1
    embed_text = text
    context_used = False
    if recent_turns and leans_on_context(text):
        previous = recent_turns[-1].strip()[-MAX_EMBED_CONTEXT_CHARS:]
        if previous:
            embed_text = f"{previous}\n{text}"
            context_used = True
            notes.append("previous turn")
    if window is not None:
        notes.append(f"time: {window.label}")
    return PreparedQuery(
        text=text,
        embed_text=embed_text,
        words=tuple(words),
        weights=tuple(weights),
        window=window,
        context_used=context_used,
        notes=tuple(notes),
    )
