"""A finished session in a few sentences, and what to ask about next time.

The transcript the summarizer reads, the parse of its JSON answer (summary and follow-ups, with
their days resolved in the person's time zone), and the plain extract used when no LLM answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from core.dates import parse_date, timezone_named
from core.mentions import mentions, without_mentions
from core.validators import clean_text
from services.people.follow_up_service import NewFollowUp

MAX_FOLLOW_UPS = 3
MAX_SUMMARY_CHARS = 600
MAX_TOPIC_CHARS = 120
MAX_DETAIL_CHARS = 300
# The summarizer sees at most this much of the transcript (the end of it).
MAX_TRANSCRIPT_CHARS = 12_000
_SPEAKERS = {"user": "User", "assistant": "Companion"}


@dataclass(frozen=True)
class SessionSummary:
    summary: str
    follow_ups: tuple[NewFollowUp, ...]
    by_llm: bool


def transcript(turns: Sequence[tuple[str, str]]) -> str:
    """(role, text) turns as "User: ..." / "Companion: ..." lines, the end of them."""
    lines = [f"{_SPEAKERS[role]}: {text}" for role, text in turns if role in _SPEAKERS]
    return "\n".join(lines)[-MAX_TRANSCRIPT_CHARS:]


def parse_summary(raw: str, *, now: datetime, tz_name: str | None = None) -> SessionSummary:
    """The summarizer's JSON answer; a follow-up's "due" is a date or words ("next Friday").

    Raises:
        ValueError: the answer is not JSON with a "summary" string.
    """
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("summary"), str):
        raise ValueError("summary JSON has no 'summary' string")
    summary = clean_text(data["summary"], field="summary", max_chars=MAX_SUMMARY_CHARS,
                         truncate=True)
    follow_ups: list[NewFollowUp] = []
    for item in data.get("follow_ups") or []:
        if not isinstance(item, dict) or not isinstance(item.get("topic"), str):
            continue
        topic = clean_text(item["topic"], field="topic", max_chars=MAX_TOPIC_CHARS,
                           truncate=True)
        detail = clean_text(str(item.get("detail") or ""), field="detail",
                            max_chars=MAX_DETAIL_CHARS, truncate=True)
        day = _parse_day(item.get("due"), now, tz_name)
        if topic:
            follow_ups.append(NewFollowUp(topic, detail, day))
    return SessionSummary(summary=summary, follow_ups=tuple(follow_ups[:MAX_FOLLOW_UPS]),
                          by_llm=True)


def extract_summary(user_turns: Sequence[str]) -> SessionSummary:
    """What they said, in their words (the first three turns): the summary without an LLM."""
    pieces = [s if len(s) <= 100 else s[:97].rstrip() + "..." for s in user_turns[:3]]
    return SessionSummary(
        summary="They said: " + " / ".join(pieces), follow_ups=(), by_llm=False
    )


def without_forgotten(summary: SessionSummary, words: frozenset[str]) -> SessionSummary:
    """The summary without its sentences and follow-ups that mention `words` (what the
    person had forgotten during the session, `core.mentions`)."""
    return SessionSummary(
        summary=without_mentions(summary.summary, words) or "",
        follow_ups=tuple(
            f for f in summary.follow_ups if not mentions(f"{f.topic} {f.detail}", words)
        ),
        by_llm=summary.by_llm,
    )


def _parse_day(raw: object, now: datetime, tz_name: str | None) -> date | None:
    if not isinstance(raw, str) or not raw.strip() or raw.strip().lower() == "null":
        return None
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        return parse_date(raw, now=now, tz=timezone_named(tz_name))
