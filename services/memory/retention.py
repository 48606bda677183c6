"""Retention: what the memory store lets go of, so that talking never fills it.

The quota counts what the person chose to keep (current explicit memories). Everything else
the store holds about them is bounded here:

- An episodic turn (a turn of talk, logged as it was said) may expire only once consolidation
  has distilled its session: the session ended or went quiet (`consolidation_idle_s`) and no
  message of the person is past its consolidation watermark. A turn without a session (an
  import) has nothing left to distill. A distilled turn expires when
  - it is older than `episodic_retention_days` and no reply used it within that time, or
  - the person has more than `episodic_max_per_user` turns: distilled ones expire, the least
    important first (the oldest first among equals), until they are back at the limit.
  A turn not yet distilled never expires: what consolidation has not read yet is not lost.
- Of each explicit key's older values (its history), the newest `memory_history_versions`
  stay.
- Current explicit memories never expire; only the person's "forget" removes them.

Expired rows are deleted (their ids leave tombstones, so in-process indexes drop them too).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.config import Settings
from infrastructure.connection_pool import ConnectionPool, rows_affected

logger = logging.getLogger(__name__)

# $1 user, $2 expired-before, $3 quiet-before (a session silent since is not live), $4 the cap.
_EXPIRE_EPISODES = """
with open_sessions as (
  select s.id::text as id from public.sessions s
  where s.user_id = $1
    and ((s.ended_at is null and s.last_activity_at >= $3)
         or exists (select 1 from public.messages x
                    where x.session_id = s.id and x.user_id = s.user_id and x.role = 'user'
                      and x.created_at > coalesce(s.consolidated_through,
                                                  '-infinity'::timestamptz)))
), distilled as (
  select m.id, m.importance, m.occurred_at, m.last_accessed_at from public.memories m
  where m.user_id = $1 and m.kind = 'episodic'
    and not exists (select 1 from open_sessions o where o.id = m.source ->> 'session_id')
), aged as (
  select id from distilled
  where occurred_at < $2 and coalesce(last_accessed_at, '-infinity'::timestamptz) < $2
), over_cap as (
  select id from (
    select id, row_number() over (order by importance, occurred_at, id) as r
    from distilled where id not in (select id from aged)
  ) ranked
  where r <= (select count(*) from public.memories where user_id = $1 and kind = 'episodic')
             - (select count(*) from aged) - $4
)
delete from public.memories m
where m.user_id = $1 and m.id in (select id from aged union all select id from over_cap)
"""

# $1 user, $2 versions kept per key.
_EXPIRE_VERSIONS = """
delete from public.memories m
using (
  select id, row_number() over (partition by companion_id, category, key
                                order by superseded_at desc, id) as r
  from public.memories
  where user_id = $1 and kind = 'explicit' and superseded_at is not null
) old
where m.id = old.id and m.user_id = $1 and old.r > $2
"""

# Users holding a turn past the retention age, in id order after a cursor.
_DUE_USERS = """
select distinct user_id from public.memories
where kind = 'episodic' and occurred_at < $1 and user_id > $2
order by user_id limit $3
"""
_FIRST_ID = uuid.UUID(int=0)


@dataclass(frozen=True)
class RetentionResult:
    """What one retention pass let go of.

    Attributes:
        users: people whose memories were looked at.
        episodes: episodic turns that expired.
        versions: older values of explicit keys that expired.
    """

    users: int = 0
    episodes: int = 0
    versions: int = 0

    def __add__(self, other: RetentionResult) -> RetentionResult:
        return RetentionResult(
            self.users + other.users, self.episodes + other.episodes,
            self.versions + other.versions,
        )


class MemoryRetention:
    """Applies the retention rule (module docstring) to one person, or to those due.

    Args:
        pool: the shared database pool.
        settings: `episodic_retention_days`, `episodic_max_per_user`,
            `memory_history_versions`, `consolidation_idle_s`.
        clock: returns "now".
    """

    def __init__(
        self, *, pool: ConnectionPool, settings: Settings, clock: Callable[[], datetime]
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock
        self._cursor = _FIRST_ID
        self.counters = {"retention_runs": 0, "episodes_expired": 0, "versions_expired": 0}

    async def apply(self, user_id: uuid.UUID) -> RetentionResult:
        """Let go of what the rule lets go of for this person (safe to run at any time)."""
        settings = self._settings
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            episodes = rows_affected(await conn.execute(
                _EXPIRE_EPISODES, user_id,
                now - timedelta(days=settings.episodic_retention_days),
                now - timedelta(seconds=settings.consolidation_idle_s),
                settings.episodic_max_per_user,
            ))
            versions = rows_affected(await conn.execute(
                _EXPIRE_VERSIONS, user_id, settings.memory_history_versions
            ))
        self.counters["retention_runs"] += 1
        self.counters["episodes_expired"] += episodes
        self.counters["versions_expired"] += versions
        if episodes or versions:
            logger.info("retention: %s turns and %s old values expired", episodes, versions)
        return RetentionResult(1, episodes, versions)

    async def apply_due(self, *, limit: int = 100) -> RetentionResult:
        """Apply the rule to up to `limit` people holding turns past the retention age.

        Successive calls walk through everyone (a cursor over user ids, starting over at the
        end), so people whose old turns cannot expire yet do not keep others waiting. The
        turn limit needs no sweep: only talking adds turns, and each session's final
        consolidation applies the rule to its person.
        """
        before = self._clock() - timedelta(days=self._settings.episodic_retention_days)
        rows = await self._pool.fetch(_DUE_USERS, before, self._cursor, limit)
        self._cursor = rows[-1]["user_id"] if len(rows) == limit else _FIRST_ID
        total = RetentionResult()
        for row in rows:
            total += await self.apply(row["user_id"])
        return total
