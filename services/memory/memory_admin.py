"""Forgetting, export, access counts and stats over a person's memories."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from core.errors import InvalidInput
from core.memory_records import MEMORY_COLUMNS, Memory, normalize_key
from services.memory.memory_core import MemoryCore


class MemoryAdmin(MemoryCore):
    """The upkeep of `MemoryService`: forget, forget_all, export, record_access, stats."""

    async def forget(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        memory_id: uuid.UUID | None = None,
        key: str | None = None,
    ) -> int:
        """Delete one memory by id, or every version of a key (any category); returns the count.

        Only rows of this user and exactly this scope are touched, whatever id is passed.
        """
        if (memory_id is None) == (key is None):
            raise InvalidInput(
                "forget needs exactly one of memory_id or key",
                suggestion="pass the id of the memory, or its key, not both",
            )
        if memory_id is not None:
            status = await self._pool.execute(
                "delete from public.memories where id = $1 and user_id = $2 "
                "and companion_id is not distinct from $3",
                memory_id, user_id, companion_id,
            )
        else:
            status = await self._pool.execute(
                "delete from public.memories where user_id = $1 "
                "and companion_id is not distinct from $2 and kind = 'explicit' and key = $3",
                user_id, companion_id, normalize_key(key or ""),
            )
        count = _affected(status)
        self._counters["forgotten"] += count
        if count:
            await self.invalidate(user_id, companion_id)
        return count

    async def forget_all(self, user_id: uuid.UUID, companion_id: uuid.UUID | None = None) -> int:
        """Delete the user's memories: one companion's (not the shared ones), or with None all."""
        if companion_id is None:
            status = await self._pool.execute(
                "delete from public.memories where user_id = $1", user_id
            )
        else:
            status = await self._pool.execute(
                "delete from public.memories where user_id = $1 and companion_id = $2",
                user_id, companion_id,
            )
        count = _affected(status)
        self._counters["forgotten"] += count
        await self.invalidate(user_id, companion_id)
        return count

    async def export(self, user_id: uuid.UUID) -> dict[str, Any]:
        """Everything remembered about the user, across companions, history included (JSON-safe)."""
        rows = await self._pool.fetch(
            f"select {MEMORY_COLUMNS} from public.memories where user_id = $1 "
            "order by kind, occurred_at, created_at",
            user_id,
        )
        memories = [Memory.from_record(r).to_json() for r in rows]
        return {
            "user_id": str(user_id),
            "exported_at": self._clock().isoformat(),
            "explicit": [m for m in memories if m["kind"] == "explicit"],
            "episodic": [m for m in memories if m["kind"] == "episodic"],
        }

    def record_access(self, memory_ids: Sequence[uuid.UUID]) -> None:
        """Count that these memories were used (retrieved into a reply); off the critical path."""
        ids = list(dict.fromkeys(memory_ids))
        if ids:
            self._tasks.spawn(self._record_access(ids, self._clock()))

    async def _record_access(self, ids: list[uuid.UUID], at: datetime) -> None:
        await self._pool.execute(
            "update public.memories set access_count = access_count + 1, "
            "last_accessed_at = greatest(last_accessed_at, $2) where id = any($1::uuid[])",
            ids, at,
        )

    async def stats(
        self, user_id: uuid.UUID | None = None, companion_id: uuid.UUID | None = None
    ) -> dict[str, Any]:
        """Service counters, plus row counts for a user (and companion) when given."""
        out: dict[str, Any] = {**self._counters, "pending_tasks": len(self._tasks)}
        if user_id is not None:
            row = await self._pool.fetchrow(
                "select count(*) filter (where kind = 'explicit' and superseded_at is null) "
                "as current, "
                "count(*) filter (where kind = 'explicit' and superseded_at is not null) "
                "as superseded, "
                "count(*) filter (where kind = 'episodic' and speaker = 'user') as user_turns, "
                "count(*) filter (where kind = 'episodic' and speaker <> 'user') as replies, "
                "count(*) filter (where embedding is null) as unembedded "
                "from public.memories where user_id = $1 "
                "and ($2::uuid is null or companion_id = $2 or companion_id is null)",
                user_id, companion_id,
            )
            out["rows"] = dict(row) if row is not None else {}
        return out


def _affected(status: str) -> int:
    """Row count from an asyncpg command tag such as 'DELETE 3'."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
