"""The real parts a MemoryService runs on, wired for tests: Redis cache, batcher, embedder.

Embeddings come from `OpenAIEmbedder` talking to the loopback `OpenAIStubServer`, so the
project's own embedding code runs unchanged over the real wire protocol.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from openai import AsyncOpenAI

from core.config import Settings
from core.dates import utc_now
from core.memory_records import MEMORY_COLUMNS, Memory, normalize_key
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.openai_embedder import OpenAIEmbedder
from infrastructure.redis_cache import RedisCache
from services.memory.memory_service import MemoryService
from tests.support.openai_server import OpenAIStubServer


@dataclass
class MemoryStack:
    memory: MemoryService
    cache: RedisCache
    batcher: DatabaseBatcher
    embedder: OpenAIEmbedder
    settings: Settings
    pool: ConnectionPool
    server: OpenAIStubServer

    def another_service(self, clock: Callable[[], datetime] = utc_now) -> MemoryService:
        """A second service over the same database and Redis, like another worker process."""
        return MemoryService(
            pool=self.pool, cache=self.cache, batcher=self.batcher, embedder=self.embedder,
            settings=self.settings, clock=clock,
        )

    async def settle(self) -> None:
        """Wait for every background embedding, then for the batcher to write it."""
        await self.memory.drain()
        await self.batcher.flush()


@asynccontextmanager
async def memory_stack(
    *,
    pool: ConnectionPool,
    settings: Settings,
    server: OpenAIStubServer,
    clock: Callable[[], datetime] = utc_now,
) -> AsyncIterator[MemoryStack]:
    cache = await RedisCache.create(settings)
    batcher = DatabaseBatcher(pool=pool, settings=settings)
    client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    embedder = OpenAIEmbedder(client=client, dimensions=384)
    memory = MemoryService(
        pool=pool, cache=cache, batcher=batcher, embedder=embedder, settings=settings, clock=clock
    )
    await batcher.start()
    try:
        yield MemoryStack(memory, cache, batcher, embedder, settings, pool, server)
    finally:
        await memory.aclose()
        await batcher.aclose()
        await embedder.aclose()
        await cache.aclose()
        await client.close()


async def create_user(pool: ConnectionPool, *, timezone: str | None = None) -> uuid.UUID:
    user_id = uuid.uuid4()
    await pool.execute(
        "insert into public.users (id, timezone) values ($1, $2)", user_id, timezone
    )
    return user_id


async def create_companion(pool: ConnectionPool, user_id: uuid.UUID, name: str) -> uuid.UUID:
    return await pool.fetchval(
        "insert into public.companions (user_id, name) values ($1, $2) returning id",
        user_id, name,
    )


async def key_versions(
    pool: ConnectionPool,
    user_id: uuid.UUID,
    companion_id: uuid.UUID | None,
    category: str,
    key: str,
) -> list[Memory]:
    """Every value a key has had in exactly this scope, as stored: the current one first, then
    newest first; what a test reads back to check supersession."""
    rows = await pool.fetch(
        f"select {MEMORY_COLUMNS} from public.memories "
        "where user_id = $1 and companion_id is not distinct from $2 and kind = 'explicit' "
        "and category = $3 and key = $4 "
        "order by (superseded_at is not null), occurred_at desc, created_at desc",
        user_id, companion_id, category.upper(), normalize_key(key),
    )
    return [Memory.from_record(r) for r in rows]
