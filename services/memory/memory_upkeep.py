"""Upkeep of the memory store: importance decays, duplicates merge, contradictions are flagged.

Each job is safe to run often and again after a crash: decay applies at most once a day per
row, a merged duplicate is superseded once, a contradiction is flagged once.

Merges and contradictions look at one scope (a person and one companion, or their shared
memories) at a time, and with `since` only at pairs with a memory created since then: the
pairs of older memories were looked at by an earlier pass, so a pass costs what changed, not
what is stored. Which pairs qualify is `upkeep_pairs`' plain CPU work, run in a thread; the
writes are one statement per scope and kind.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from core.config import Settings
from core.dates import utc_now
from core.memory_records import MEMORY_COLUMNS, Memory
from infrastructure.connection_pool import ConnectionPool, rows_affected
from services.memory.memory_service import MemoryService
from services.memory.upkeep_pairs import (
    Merge,
    Vector,
    contradiction_pairs,
    merge_groups,
    merge_plan,
)

Scope = tuple[uuid.UUID, uuid.UUID | None]

_CURRENT = (
    f"select {MEMORY_COLUMNS} from public.memories "
    "where user_id = $1 and companion_id is not distinct from $2 "
    "and kind = 'explicit' and superseded_at is null order by created_at, id"
)
_SUPERSEDE = """
update public.memories m set superseded_at = $4, superseded_by = p.keep_id, updated_at = $4
from unnest($1::uuid[], $2::uuid[]) as p(drop_id, keep_id)
where m.id = p.drop_id and m.user_id = $3 and m.superseded_at is null
returning m.id
"""
# The kept memory is as important as the most important one it absorbed.
_RAISE = """
update public.memories k set importance = greatest(k.importance, p.importance)
from unnest($1::uuid[], $2::real[]) as p(keep_id, importance)
where k.id = p.keep_id and k.user_id = $3
"""
# Each memory gets the ids of those it contradicts in `source.contradicts`, once.
_FLAG = """
with wanted as (
  select f.id, array_agg(f.other order by f.n) as others
  from unnest($1::uuid[], $2::text[]) with ordinality as f(id, other, n) group by f.id
), added as (
  select m.id, (select coalesce(jsonb_agg(to_jsonb(u.other) order by u.n), '[]'::jsonb)
                from unnest(w.others) with ordinality as u(other, n)
                where not coalesce(m.source -> 'contradicts', '[]'::jsonb) ? u.other) as new
  from public.memories m join wanted w on w.id = m.id where m.user_id = $3
)
update public.memories m set source = jsonb_set(
  m.source, '{contradicts}', coalesce(m.source -> 'contradicts', '[]'::jsonb) || a.new)
from added a where m.id = a.id and jsonb_array_length(a.new) > 0
returning jsonb_array_length(a.new) as added
"""


class MemoryUpkeep:
    """The periodic jobs over the memory store (`MemoryMaintenance` runs them).

    Args:
        pool: the shared database pool.
        memory: its cached current memories are invalidated after a change.
        settings: `memory_decay_factor`.
        clock: returns "now".
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        memory: MemoryService,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._memory = memory
        self._settings = settings
        self._clock = clock
        self.counters = {"decayed": 0, "merged": 0, "contradictions": 0, "scopes_checked": 0}

    async def decay(self) -> int:
        """Lower the importance of unused episodic memories and of events now past.

        Applied at most once a day per row (by `updated_at`), so running it often, or again
        after a crash, does not decay anything twice.
        """
        now = self._clock()
        status = await self._pool.execute(
            "update public.memories set importance = greatest(0.05, importance * $2), "
            "updated_at = $1::timestamptz "
            "where updated_at < $1::timestamptz - interval '1 day' and importance > 0.05 "
            "and (last_accessed_at is null "
            "     or last_accessed_at < $1::timestamptz - interval '7 days') "
            "and (kind = 'episodic' or (kind = 'explicit' and category = 'EVENT' "
            "     and event_date < ($1::timestamptz at time zone 'utc')::date))",
            now, self._settings.memory_decay_factor,
        )
        count = rows_affected(status)
        self.counters["decayed"] += count
        return count

    async def scopes(
        self, user_id: uuid.UUID | None = None, *, since: datetime | None = None
    ) -> list[Scope]:
        """Scopes with two or more current explicit memories, or (`since`) with one created
        since then."""
        if since is None:
            rows = await self._pool.fetch(
                "select user_id, companion_id from public.memories "
                "where kind = 'explicit' and superseded_at is null "
                "and ($1::uuid is null or user_id = $1) "
                "group by user_id, companion_id having count(*) > 1",
                user_id,
            )
        else:
            rows = await self._pool.fetch(
                "select distinct user_id, companion_id from public.memories "
                "where kind = 'explicit' and superseded_at is null and created_at >= $2 "
                "and ($1::uuid is null or user_id = $1)",
                user_id, since,
            )
        return [(r["user_id"], r["companion_id"]) for r in rows]

    async def merge_duplicates(
        self, user_id: uuid.UUID | None = None, *, since: datetime | None = None
    ) -> int:
        """Supersede current explicit memories that repeat another under a different key.

        Same scope and category, the same value (ignoring case and punctuation), and a
        similar key or a near-identical embedding: the older one is superseded by the newer.
        """
        merged = 0
        for scope in await self.scopes(user_id, since=since):
            merged += await self.merge_scope(scope, since=since)
        return merged

    async def flag_contradictions(
        self, user_id: uuid.UUID | None = None, *, since: datetime | None = None
    ) -> int:
        """Mark pairs of current memories that look like one thing with two different values.

        Same scope and category, alike keys ("favorite_food" / "favourite_food"), different
        values: each gets the other's id in `source.contradicts`, for the model or the person
        to settle. Flagging twice adds nothing.
        """
        flagged = 0
        for scope in await self.scopes(user_id, since=since):
            flagged += await self.flag_scope(scope, since=since)
        return flagged

    async def merge_scope(self, scope: Scope, *, since: datetime | None = None) -> int:
        """Merge one scope's duplicates (with `since`: those involving a newer memory)."""
        memories = await self._current(scope)
        new = _created_since(memories, since)
        wanted = merge_groups(memories, new)
        if not wanted:
            return 0
        vectors = await self._vectors(scope[0], wanted)
        plan = await asyncio.to_thread(merge_plan, memories, vectors, new)
        merged = await self._supersede(scope[0], plan) if plan else 0
        if merged:
            await self._memory.invalidate(*scope)
        self.counters["scopes_checked"] += 1
        self.counters["merged"] += merged
        return merged

    async def flag_scope(self, scope: Scope, *, since: datetime | None = None) -> int:
        """Flag one scope's contradictions (with `since`: those involving a newer memory)."""
        memories = await self._current(scope)
        pairs = await asyncio.to_thread(
            contradiction_pairs, memories, _created_since(memories, since)
        )
        if not pairs:
            return 0
        ids: list[uuid.UUID] = []
        others: list[str] = []
        for a, b in pairs:
            ids += [a.id, b.id]
            others += [str(b.id), str(a.id)]
        rows = await self._pool.fetch(_FLAG, ids, others, scope[0])
        flagged = sum(int(r["added"]) for r in rows)
        if flagged:
            await self._memory.invalidate(*scope)
        self.counters["contradictions"] += flagged
        return flagged

    async def _current(self, scope: Scope) -> list[Memory]:
        rows = await self._pool.fetch(_CURRENT, *scope)
        return [Memory.from_record(r) for r in rows]

    async def _vectors(
        self, user_id: uuid.UUID, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Vector | None]:
        rows = await self._pool.fetch(
            "select id, embedding from public.memories "
            "where user_id = $1 and id = any($2::uuid[])",
            user_id, list(ids),
        )
        return {r["id"]: r["embedding"] for r in rows}

    async def _supersede(self, user_id: uuid.UUID, plan: Sequence[Merge]) -> int:
        now = self._clock()
        async with self._pool.acquire() as conn, conn.transaction():
            # Two statements: one statement may not change a row twice (a memory merged into
            # another and then into a third is superseded here and raised below).
            dropped = {
                r["id"] for r in await conn.fetch(
                    _SUPERSEDE, [m.drop.id for m in plan], [m.keep.id for m in plan],
                    user_id, now,
                )
            }
            raised: dict[uuid.UUID, float] = {}
            for merge in plan:
                if merge.drop.id in dropped:
                    raised[merge.keep.id] = max(
                        raised.get(merge.keep.id, 0.0), merge.drop.importance
                    )
            if raised:
                await conn.execute(_RAISE, list(raised), list(raised.values()), user_id)
        return len(dropped)


def _created_since(memories: Sequence[Memory], since: datetime | None) -> set[uuid.UUID] | None:
    if since is None:
        return None
    return {m.id for m in memories if m.created_at >= since}
