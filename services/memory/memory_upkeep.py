"""Upkeep of the memory store: importance decays, duplicates merge, contradictions are flagged.

Each job is safe to run often and again after a crash: decay applies at most once a day per
row, a merged duplicate is superseded once, a contradiction is flagged once.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Callable
from datetime import datetime

import numpy as np

from core.config import Settings
from core.dates import utc_now
from core.memory_records import MEMORY_COLUMNS, Memory, normalize_text
from infrastructure.connection_pool import ConnectionPool, rows_affected
from services.memory.memory_service import MemoryService

MERGE_SIMILARITY = 0.92
KEY_SIMILARITY = 0.85


class MemoryUpkeep:
    """The periodic jobs over every user's memories (`ConsolidationService` runs them).

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
        self.counters = {"decayed": 0, "merged": 0, "contradictions": 0}

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

    async def merge_duplicates(self, user_id: uuid.UUID | None = None) -> int:
        """Supersede current explicit memories that repeat another under a different key.

        Same scope and category, the same value (ignoring case and punctuation), and a
        similar key or a near-identical embedding: the older one is superseded by the newer.
        """
        merged = 0
        for scope in await self._scopes(user_id):
            memories = await self._current_with_vectors(*scope)
            gone: set[uuid.UUID] = set()
            for a, va, b, vb in _pairs(memories):
                if a.id in gone or b.id in gone or a.category != b.category:
                    continue
                if normalize_text(a.value or "") != normalize_text(b.value or ""):
                    continue
                if not (_keys_alike(a, b) or _cosine(va, vb) >= MERGE_SIMILARITY):
                    continue
                keep, drop = (a, b) if (a.occurred_at, a.created_at) >= (
                    b.occurred_at, b.created_at) else (b, a)
                status = await self._pool.execute(
                    "update public.memories set superseded_at = $3, superseded_by = $2, "
                    "updated_at = $3 where id = $1 and superseded_at is null",
                    drop.id, keep.id, self._clock(),
                )
                if rows_affected(status):
                    await self._pool.execute(
                        "update public.memories set importance = greatest(importance, $2) "
                        "where id = $1",
                        keep.id, drop.importance,
                    )
                    merged += 1
                gone.add(drop.id)
            if gone:
                await self._memory.invalidate(scope[0], scope[1])
        self.counters["merged"] += merged
        return merged

    async def flag_contradictions(self, user_id: uuid.UUID | None = None) -> int:
        """Mark pairs of current memories that look like one thing with two different values.

        Same scope and category, alike keys ("favorite_food" / "favourite_food"), different
        values: each gets the other's id in `source.contradicts`, for the model or the person
        to settle. Flagging twice adds nothing.
        """
        flagged = 0
        for scope in await self._scopes(user_id):
            memories = await self._current_with_vectors(*scope)
            in_scope = 0
            for a, _, b, _ in _pairs(memories):
                if a.category != b.category or not _keys_alike(a, b):
                    continue
                if normalize_text(a.value or "") == normalize_text(b.value or ""):
                    continue
                for one, other in ((a, b), (b, a)):
                    status = await self._pool.execute(
                        "update public.memories set source = jsonb_set(source, '{contradicts}', "
                        "coalesce(source -> 'contradicts', '[]'::jsonb) || to_jsonb($2::text)) "
                        "where id = $1 and not coalesce(source -> 'contradicts', '[]'::jsonb) "
                        "? $2",
                        one.id, str(other.id),
                    )
                    in_scope += rows_affected(status)
            if in_scope:
                await self._memory.invalidate(scope[0], scope[1])
            flagged += in_scope
        self.counters["contradictions"] += flagged
        return flagged

    async def _scopes(self, user_id: uuid.UUID | None) -> list[tuple[uuid.UUID, uuid.UUID | None]]:
        rows = await self._pool.fetch(
            "select user_id, companion_id from public.memories "
            "where kind = 'explicit' and superseded_at is null "
            "and ($1::uuid is null or user_id = $1) "
            "group by user_id, companion_id having count(*) > 1",
            user_id,
        )
        return [(r["user_id"], r["companion_id"]) for r in rows]

    async def _current_with_vectors(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None
    ) -> list[tuple[Memory, np.ndarray | None]]:
        rows = await self._pool.fetch(
            f"select {MEMORY_COLUMNS}, embedding from public.memories "
            "where user_id = $1 and companion_id is not distinct from $2 "
            "and kind = 'explicit' and superseded_at is null order by created_at limit 1000",
            user_id, companion_id,
        )
        return [(Memory.from_record(r), r["embedding"]) for r in rows]


def _pairs(
    memories: list[tuple[Memory, np.ndarray | None]],
) -> list[tuple[Memory, np.ndarray | None, Memory, np.ndarray | None]]:
    return [
        (a, va, b, vb)
        for i, (a, va) in enumerate(memories)
        for (b, vb) in memories[i + 1 :]
    ]


def _keys_alike(a: Memory, b: Memory) -> bool:
    return difflib.SequenceMatcher(None, a.key or "", b.key or "").ratio() >= KEY_SIMILARITY


def _cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None or len(a) == 0 or len(a) != len(b):
        return 0.0
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom else 0.0
