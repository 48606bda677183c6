"""What every part of the memory service shares: collaborators, counters, cache, embedding.

`MemoryCore` holds the state; the explicit-memory, episodic-log and admin parts build on it and
`services.memory.memory_service.MemoryService` puts them together.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from core.config import Settings
from core.dates import utc_now
from core.tasks import BackgroundTasks
from infrastructure.connection_pool import ConnectionPool

if TYPE_CHECKING:
    from infrastructure.cache import Cache
    from infrastructure.database_batcher import DatabaseBatcher
    from infrastructure.embeddings import Embedder

logger = logging.getLogger(__name__)

EPISODE_OP = "memory.episode"
EPISODE_SQL = """
insert into public.memories
  (id, user_id, companion_id, kind, speaker, content, content_hash, importance, occurred_at,
   source, embedding)
values ($1, $2, $3, 'episodic', $4, $5, $6, $7, $8, $9::jsonb, $10)
on conflict do nothing
"""


class MemoryCore:
    """The state and helpers the parts of `MemoryService` share; see that class for the Args.

    It also registers the batched episodic insert, which the episodic log enqueues.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        cache: Cache,
        batcher: DatabaseBatcher,
        embedder: Embedder,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._batcher = batcher
        self._embedder = embedder
        self._settings = settings
        self._clock = clock
        self._tasks = BackgroundTasks("memory")
        self._counters: dict[str, int] = {
            "remembered": 0,
            "unchanged": 0,
            "superseded": 0,
            "late_history": 0,
            "forgotten": 0,
            "turns_logged": 0,
            "turns_skipped": 0,
            "episodes_imported": 0,
            "embedding_failures": 0,
            "cache_hits": 0,
            "cache_misses": 0,
        }
        batcher.register(EPISODE_OP, EPISODE_SQL)

    async def drain(self) -> None:
        """Wait until every background embedding/access task has finished."""
        await self._tasks.drain()

    async def aclose(self) -> None:
        """Finish background work; the batcher (not owned here) is drained by its owner."""
        await self.drain()

    async def _embed_or_none(self, text: str) -> np.ndarray | None:
        # A memory without a vector is still found by full-text search; never lose the write.
        try:
            return await self._embedder.embed(text)
        except Exception as exc:
            self._counters["embedding_failures"] += 1
            logger.warning("embedding failed, storing without vector (%s)", type(exc).__name__)
            return None

    def _cache_key(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> str:
        return f"memories:current:{user_id}:{companion_id or 'shared'}"

    async def invalidate(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> None:
        """Drop the cached current memories of a scope (and of every companion, for shared)."""
        keys = [self._cache_key(user_id, companion_id)]
        if companion_id is None:
            # Shared memories appear in every companion's view of this user.
            rows = await self._pool.fetch(
                "select id from public.companions where user_id = $1", user_id
            )
            keys += [self._cache_key(user_id, r["id"]) for r in rows]
        await self._cache.delete(*keys)
