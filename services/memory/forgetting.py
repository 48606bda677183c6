"""Forgetting: one memory by id, every version of a key, or everything about a person.

Only rows of the given user, and of exactly the given scope, are ever touched; the cached
current memories of the scope are dropped with them, and the deleted ids are noted in the
process's `ForgottenMemories`, so that no copy held in this process serves them again (an
in-process index that cannot sync while Postgres is away).
"""

from __future__ import annotations

import uuid

from core.errors import InvalidInput
from core.forgotten import ForgottenMemories
from core.memory_records import normalize_key
from infrastructure.connection_pool import ConnectionPool
from services.memory.current_memories import CurrentMemories


class Forgetting:
    """Deletes memories for good (history included) and drops them from the cache.

    Args:
        pool: the shared database pool.
        current: the cached current memories, invalidated after a delete.
        forgotten: this process's notes of forgotten memories.
    """

    def __init__(
        self, *, pool: ConnectionPool, current: CurrentMemories, forgotten: ForgottenMemories
    ) -> None:
        self._pool = pool
        self._current = current
        self._forgotten = forgotten
        self.counters = {"forgotten": 0}

    async def forget(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        memory_id: uuid.UUID | None = None,
        key: str | None = None,
    ) -> int:
        """See `MemoryService.forget`.

        Raises:
            InvalidInput: not exactly one of `memory_id` and `key` was given.
        """
        if memory_id is not None and key is None:
            rows = await self._pool.fetch(
                "delete from public.memories where id = $1 and user_id = $2 "
                "and companion_id is not distinct from $3 returning id",
                memory_id, user_id, companion_id,
            )
        elif key is not None and memory_id is None:
            rows = await self._pool.fetch(
                "delete from public.memories where user_id = $1 "
                "and companion_id is not distinct from $2 and kind = 'explicit' and key = $3 "
                "returning id",
                user_id, companion_id, normalize_key(key),
            )
        else:
            raise InvalidInput(
                "forget needs exactly one of memory_id or key",
                suggestion="pass the id of the memory, or its key, not both",
            )
        return await self._forgot(user_id, companion_id, [r["id"] for r in rows])

    async def forget_all(self, user_id: uuid.UUID, companion_id: uuid.UUID | None = None) -> int:
        """See `MemoryService.forget_all`."""
        if companion_id is None:
            rows = await self._pool.fetch(
                "delete from public.memories where user_id = $1 returning id", user_id
            )
        else:
            rows = await self._pool.fetch(
                "delete from public.memories where user_id = $1 and companion_id = $2 "
                "returning id",
                user_id, companion_id,
            )
        count = await self._forgot(user_id, companion_id, [r["id"] for r in rows])
        if companion_id is None:
            self._forgotten.erased(user_id)
        return count

    async def _forgot(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None, ids: list[uuid.UUID]
    ) -> int:
        # Noted before anything else can run: from here on no copy in this process serves them.
        self._forgotten.forget_ids(user_id, ids)
        self.counters["forgotten"] += len(ids)
        if ids:
            await self._current.invalidate(user_id, companion_id)
        return len(ids)
