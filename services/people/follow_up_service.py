"""Follow-ups: what to ask about in a later session ("how did the interview go?").

A session's summary leaves follow-ups when it ends; a later session's greeting brings up the
ones that are due, and so may a silence nudge; once brought up, a follow-up is marked raised
and no session asks again.

When a follow-up is due (the one meaning, for the greeting and the nudges alike): it is open,
it belongs to this companion or to none in particular, and either its time has come (`due_at`;
a follow-up about a day is due from the start of the next day in the person's time zone), or
it has no date and was made before the current session began (so the session that made it
never raises it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

import asyncpg

from core.dates import utc_now
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.write_kinds import WriteKind

RAISED_OP = "follow_up.raised"
_RAISED_SQL = (
    "update public.follow_ups set status = 'raised', raised_at = coalesce(raised_at, $2) "
    "where id = $1 and user_id = $3 and status = 'open'"
)
RAISED_KIND = WriteKind.of(RAISED_OP, _RAISED_SQL, "id:uuid raised_at:time user_id:uuid")
FOLLOW_UP_COLUMNS = "id, topic, detail, due_at"
# Most pressing first: dated ones by date, then undated ones, the newest first.
DUE_ORDER = "due_at nulls last, created_at desc"


def due_condition(alias: str) -> str:
    """The meaning of due, as SQL over `public.follow_ups <alias>`.

    Its parameters: $1 the user, $2 the companion, $3 now, $4 when the session began.
    """
    return (
        f"{alias}.user_id = $1 and {alias}.status = 'open' "
        f"and ({alias}.companion_id = $2 or {alias}.companion_id is null) "
        f"and ({alias}.due_at <= $3 or ({alias}.due_at is null and {alias}.created_at < $4))"
    )


def due_from_day(day: date, tz: tzinfo) -> datetime:
    """A follow-up about something on `day` is due from the start of the next day in `tz`."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)


@dataclass(frozen=True)
class FollowUp:
    """Something to ask about, such as "the interview" ("ask how it went").

    Attributes:
        due_at: from when to raise it; None means in any later session.
    """

    id: uuid.UUID
    topic: str
    detail: str
    due_at: datetime | None

    @property
    def label(self) -> str:
        """How it reads in instructions: "the interview (ask how it went)"."""
        return f"{self.topic} ({self.detail})" if self.detail else self.topic

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> FollowUp:
        return cls(id=row["id"], topic=row["topic"], detail=row["detail"], due_at=row["due_at"])

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "topic": self.topic,
            "detail": self.detail,
            "due_at": self.due_at.isoformat() if self.due_at is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FollowUp:
        """From `to_json`'s form, or Postgres' `json_build_object` of the same columns."""
        due_at = data.get("due_at")
        return cls(
            id=uuid.UUID(str(data["id"])),
            topic=data["topic"],
            detail=data.get("detail") or "",
            due_at=datetime.fromisoformat(due_at) if due_at else None,
        )


@dataclass(frozen=True)
class NewFollowUp:
    """A follow-up a session's summary asks for: what, and the day it is about (if any)."""

    topic: str
    detail: str
    day: date | None


class FollowUpService:
    """Stores a session's follow-ups, finds the due ones, marks the raised ones.

    Args:
        pool: the shared database pool.
        batcher: carries the "raised" marks off the critical path.
        clock: returns "now" (aware); tests pass a controllable one.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        batcher: DatabaseBatcher,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._batcher = batcher
        self._clock = clock
        batcher.register(RAISED_KIND)

    async def due(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        session_started_at: datetime,
        limit: int = 10,
    ) -> list[FollowUp]:
        """The follow-ups due now in the session that began at `session_started_at`."""
        rows = await self._pool.fetch(
            f"select {FOLLOW_UP_COLUMNS} from public.follow_ups f where {due_condition('f')} "
            f"order by {DUE_ORDER} limit $5",
            user_id, companion_id, self._clock(), session_started_at, limit,
        )
        return [FollowUp.from_row(r) for r in rows]

    def mark_raised(self, user_id: uuid.UUID, follow_up_ids: Iterable[uuid.UUID]) -> None:
        """These were brought up: no session raises them again. Returns at once (batched);
        a follow-up of another user is left alone."""
        now = self._clock()
        for follow_up_id in follow_up_ids:
            self._batcher.enqueue(RAISED_OP, (follow_up_id, now, user_id))

    @staticmethod
    def columns(
        follow_ups: Sequence[NewFollowUp], tz: tzinfo
    ) -> tuple[list[str], list[str], list[datetime | None]]:
        """A summary's follow-ups as columns (topics, details, due times), for the one
        statement that stores a summary with its follow-ups (`ConversationService`)."""
        return (
            [f.topic for f in follow_ups],
            [f.detail for f in follow_ups],
            [due_from_day(f.day, tz) if f.day is not None else None for f in follow_ups],
        )

