"""The companion's first words in a session: what it knows when someone joins, and the
instructions for the greeting (or, when the person called it by name in another companion's
session, for its answer to that turn).

Pure: `ConversationService.greeting_context` loads the `GreetingContext`; the session passes it
here with the moment the session began.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.prompts import quote_memory, render
from services.people.follow_up_service import FollowUp


@dataclass(frozen=True)
class GreetingContext:
    """What the companion knows when someone joins, loaded in one query and cached."""

    user_id: uuid.UUID
    companion_id: uuid.UUID | None
    display_name: str | None
    preferred_name: str | None
    interests: tuple[str, ...]
    onboarding_state: str
    timezone: str | None
    last_session_id: uuid.UUID | None
    last_started_at: datetime | None
    last_activity_at: datetime | None
    last_ended_at: datetime | None
    last_summary: str | None
    last_summary_at: datetime | None
    session_count: int
    follow_ups: tuple[FollowUp, ...]

    @property
    def address_as(self) -> str | None:
        return self.preferred_name or self.display_name

    def resumable(self, now: datetime, grace_s: int) -> bool:
        """Whether a join now continues the latest session instead of starting a new one."""
        if self.last_session_id is None or self.last_activity_at is None or grace_s <= 0:
            return False
        return now - self.last_activity_at <= timedelta(seconds=grace_s)

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "user_id": str(self.user_id),
            "companion_id": str(self.companion_id) if self.companion_id else None,
            "display_name": self.display_name,
            "preferred_name": self.preferred_name,
            "interests": list(self.interests),
            "onboarding_state": self.onboarding_state,
            "timezone": self.timezone,
            "last_session_id": str(self.last_session_id) if self.last_session_id else None,
            "last_started_at": iso(self.last_started_at),
            "last_activity_at": iso(self.last_activity_at),
            "last_ended_at": iso(self.last_ended_at),
            "last_summary": self.last_summary,
            "last_summary_at": iso(self.last_summary_at),
            "session_count": self.session_count,
            "follow_ups": [f.to_json() for f in self.follow_ups],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GreetingContext:
        def dt(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        def uid(value: str | None) -> uuid.UUID | None:
            return uuid.UUID(value) if value else None

        return cls(
            user_id=uuid.UUID(data["user_id"]),
            companion_id=uid(data.get("companion_id")),
            display_name=data.get("display_name"),
            preferred_name=data.get("preferred_name"),
            interests=tuple(data.get("interests") or ()),
            onboarding_state=data.get("onboarding_state", "new"),
            timezone=data.get("timezone"),
            last_session_id=uid(data.get("last_session_id")),
            last_started_at=dt(data.get("last_started_at")),
            last_activity_at=dt(data.get("last_activity_at")),
            last_ended_at=dt(data.get("last_ended_at")),
            last_summary=data.get("last_summary"),
            last_summary_at=dt(data.get("last_summary_at")),
            session_count=int(data.get("session_count") or 0),
            follow_ups=tuple(FollowUp.from_json(f) for f in data.get("follow_ups") or ()),
        )


def describe_gap(gap: timedelta) -> str:
    """'3 days', 'a few minutes': how long ago the last talk was, as a person would say it."""
    seconds = max(0.0, gap.total_seconds())
    if seconds < 120:
        return "only a moment"
    if seconds < 3600:
        return f"{int(seconds // 60)} minutes"
    hours = seconds / 3600
    if hours < 24:
        return "about an hour" if hours < 1.5 else f"about {round(hours)} hours"
    days = int(hours // 24)
    if days == 1:
        return "a day"
    if days < 14:
        return f"{days} days"
    if days < 60:
        return f"{days // 7} weeks"
    return f"{days // 30} months"


def greeting_instructions(
    context: GreetingContext,
    *,
    companion_name: str,
    name: str | None,
    started_at: datetime,
    resumed: bool,
    answering_turn: bool = False,
) -> str:
    """The instructions for the companion's first words in a session.

    Args:
        context: what the companion knew when the session began.
        name: how to address the person, if known.
        started_at: when this session began (the gap since the last talk ends there).
        resumed: this join continues a session that was active moments ago.
        answering_turn: the person called this companion by name in another companion's
            session; its first words answer that turn instead of greeting.
    """
    if answering_turn:
        return _answer_instructions(
            context, companion_name=companion_name, name=name, started_at=started_at,
            resumed=resumed,
        )
    if resumed:
        return render("greeting_resumed", companion=companion_name, name=name or "them")
    if context.session_count == 0:
        return render("greeting_new", companion=companion_name, name_line=(
            f"Their name is {name}." if name else "You do not know their name yet: ask for it."
        ))
    # Notes distilled from what they said: quoted background, never instructions.
    summary = (
        f"Last time you talked about:\n{quote_memory(context.last_summary)}"
        if context.last_summary else "You do not have notes from last time."
    )
    follow_ups = (
        f"Things to ask about (pick the most natural one):\n{quote_memory(_labels(context))}"
        if context.follow_ups else "There is nothing specific to follow up on."
    )
    return render(
        "greeting_returning",
        companion=companion_name,
        name=name or "them (you do not know their name yet: ask for it)",
        since=_time_since_last_talk(context, started_at),
        summary_line=summary,
        follow_up_line=follow_ups,
    )


def _answer_instructions(
    context: GreetingContext,
    *,
    companion_name: str,
    name: str | None,
    started_at: datetime,
    resumed: bool,
) -> str:
    if resumed:
        history = "You were talking with them only moments ago: carry on from there."
    elif context.session_count == 0:
        history = "You have not talked with them before: this is your first conversation."
    else:
        gap = _time_since_last_talk(context, started_at)
        history = f"It has been {gap} since you two last talked."
        if context.last_summary:
            history += f" Last time you talked about:\n{quote_memory(context.last_summary)}"
    return render(
        "companion_switch",
        companion=companion_name,
        name_line=f"Their name is {name}." if name else "",
        history_line=history,
        follow_up_line=f"Later, if it fits naturally, ask about:\n{quote_memory(_labels(context))}"
        if context.follow_ups else "",
    )


def _time_since_last_talk(context: GreetingContext, started_at: datetime) -> str:
    since = context.last_activity_at or context.last_started_at
    return describe_gap(started_at - since) if since else "a while"


def _labels(context: GreetingContext) -> str:
    return "; ".join(f.label for f in context.follow_ups)
