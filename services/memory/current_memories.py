"""The current explicit memories of a scope (one companion plus the shared ones), cached.

Every write to a scope invalidates its entry; a shared memory (no companion) shows in every
companion's view, so writing one invalidates them all. Whatever a read finds, the process's
notes of forgotten memories have the last word (an entry a failed invalidation left behind
never brings a forgotten memory back).
"""

from __future__ import annotations

import uuid

from core.config import Settings
from core.forgotten import ForgottenMemories
from core.memory_records import MEMORY_COLUMNS, Memory
from infrastructure.cache import Cache
from infrastructure.connection_pool import ConnectionPool

# A scope holds at most this many current memories in the cache, the most important first.
CURRENT_CACHE_LIMIT = 500


class CurrentMemories:
    """Reads (cached) and invalidates the current explicit memories of each scope.

    Args:
        pool: the shared database pool.
        cache: the shared cache, entries under `memories:current:<user>:<companion|shared>`.
        settings: `cache_default_ttl_s`.
        forgotten: this process's notes of forgotten memories.
    """

    def __init__(
        self, *, pool: ConnectionPool, cache: Cache, settings: Settings,
        forgotten: ForgottenMemories,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._settings = settings
        self._forgotten = forgotten
        self.counters = {"cache_hits": 0, "cache_misses": 0}

    async def get(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> list[Memory]:
        """The companion's current memories and the shared ones, most important first; where
        both hold a key, the companion's value wins."""
        key = _cache_key(user_id, companion_id)
        cached = await self._cache.get_json(key)
        if isinstance(cached, list):
            self.counters["cache_hits"] += 1
            return self._forgotten.visible([Memory.from_json(item) for item in cached])
        self.counters["cache_misses"] += 1
        rows = await self._pool.fetch(
            f"select {MEMORY_COLUMNS} from public.memories "
            "where user_id = $1 and (companion_id = $2 or companion_id is null) "
            "and kind = 'explicit' and superseded_at is null "
            "order by (companion_id is null), importance desc, occurred_at desc limit $3",
            user_id, companion_id, CURRENT_CACHE_LIMIT,
        )
        seen: set[tuple[str | None, str | None]] = set()
        memories: list[Memory] = []
        for row in rows:
            memory = Memory.from_record(row)
            if (memory.category, memory.key) in seen:
                continue
            seen.add((memory.category, memory.key))
            memories.append(memory)
        memories.sort(key=lambda m: (-m.importance, -m.occurred_at.timestamp()))
        memories = self._forgotten.visible(memories)
        await self._cache.set_json(
            key, [m.to_json() for m in memories], self._settings.cache_default_ttl_s
        )
        return memories

    async def invalidate(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> None:
        """Drop the cached current memories of a scope (and of every companion, for shared)."""
        # The scope's own entry first: it goes even when the companions cannot be listed.
        await self._cache.delete(_cache_key(user_id, companion_id))
        if companion_id is None:
            rows = await self._pool.fetch(
                "select id from public.companions where user_id = $1", user_id
            )
            await self._cache.delete(*[_cache_key(user_id, r["id"]) for r in rows])


def _cache_key(user_id: uuid.UUID, companion_id: uuid.UUID | None) -> str:
    return f"memories:current:{user_id}:{companion_id or 'shared'}"
