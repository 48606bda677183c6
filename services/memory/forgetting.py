"""Forgetting: one memory by id, every version of a key, or everything about a person.

Only rows of the given user, and of exactly the given scope, are ever touched; the cached
current memories of the scope are dropped with them.
"""

from __future__ import annotations

import uuid

from core.errors import InvalidInput
from core.memory_records import normalize_key
from infrastructure.connection_pool import ConnectionPool, rows_affected
from services.memory.current_memories import CurrentMemories


class Forgetting:
    """Deletes memories for good (history included) and drops them from the cache.

    Args:
        pool: the shared database pool.
        current: the cached current memories, invalidated after a delete.
    """

    def __init__(self, *, pool: ConnectionPool, current: CurrentMemories) -> None:
        self._pool = pool
        self._current = current
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
            status = await self._pool.execute(
                "delete from public.memories where id = $1 and user_id = $2 "
                "and companion_id is not distinct from $3",
                memory_id, user_id, companion_id,
            )
        elif key is not None and memory_id is None:
            status = await self._pool.execute(
                "delete from public.memories where user_id = $1 "
                "and companion_id is not distinct from $2 and kind = 'explicit' and key = $3",
                user_id, companion_id, normalize_key(key),
            )
        else:
            raise InvalidInput(
                "forget needs exactly one of memory_id or key",
                suggestion="pass the id of the memory, or its key, not both",
            )
        count = rows_affected(status)
        self.counters["forgotten"] += count
        if count:
            await self._current.invalidate(user_id, companion_id)
        return count

    async def forget_all(self, user_id: uuid.UUID, companion_id: uuid.UUID | None = None) -> int:
        """See `MemoryService.forget_all`."""
        if companion_id is None:
            status = await self._pool.execute(
                "delete from public.memories where user_id = $1", user_id
            )
        else:
            status = await self._pool.execute(
                "delete from public.memories where user_id = $1 and companion_id = $2",
                user_id, companion_id,
            )
        count = rows_affected(status)
        self.counters["forgotten"] += count
        await self._current.invalidate(user_id, companion_id)
        return count
