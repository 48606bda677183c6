"""Turns a user turn (and the last few turns) into what the candidate SQL needs, with no LLM.

Three cheap steps, all local and sub-millisecond:
  * temporal hints ("last week", "in May", "3 days ago"), read by `core.dates`, become a time
    window and are taken out of the keyword query, so "may" or "week" do not match every turn
    that says them;
  * keywords are OR-ed words without stop words (Postgres stems them), each with a weight:
    the turn's own words count fully, words from the recent turns a little;
  * the text to embed gets the previous turn prepended when the turn leans on it ("what about
    her?"), so an elliptical follow-up still finds what the conversation is about.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from core.dates import find_dates

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


def find_time_window(
    text: str, now: datetime, tz: tzinfo = UTC
) -> tuple[TimeWindow | None, str]:
    """The first date expression in `text` as a window, and `text` with it taken out.

    Expressions are read by `core.dates` leaning back ("on Tuesday" is the last one); a fuzzy
    one ("3 weeks ago") gets its slack on both sides. "May I ask" and "my sister June" are not
    dates there.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    for mention in find_dates(text, now=now, tz=tz, lean="back"):
        slack = timedelta(days=mention.slack)
        start, end = _midnight(mention.date - slack, tz), _midnight(mention.until + slack, tz)
        stripped = (text[: mention.start] + " " + text[mention.end :]).strip()
        return TimeWindow(start=start, end=end, label=mention.text.strip()), stripped
    return None, text


def _midnight(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)


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
