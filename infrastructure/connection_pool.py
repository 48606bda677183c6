"""The database connection pool: one asyncpg pool per job, with acquire timings and errors."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

from core.config import Settings
from core.errors import StorageUnavailable
from core.latency import LatencyWindow
from infrastructure.db_errors import TRANSIENT_DB_ERRORS
from infrastructure.postgres_dsn import CONNECT_ERRORS, PostgresDsn, could_not_connect
from infrastructure.vector_codec import register_vector_codec

logger = logging.getLogger(__name__)


def rows_affected(status: str) -> int:
    """How many rows a command changed, from its status tag ("DELETE 3", "UPDATE 0")."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


class ConnectionPool:
    """The shared asyncpg pool; connection failures surface as `StorageUnavailable`.

    Build it with `await ConnectionPool.create(settings, dsn=...)` on a migrated database.
    """

    def __init__(
        self, *, pool: asyncpg.Pool[asyncpg.Record], statement_cache_size: int, backend: str
    ) -> None:
        self._pool = pool
        self.statement_cache_size = statement_cache_size
        self._backend = backend
        self._acquire_ms = LatencyWindow()
        self._errors = 0
        self._acquisitions = 0

    @classmethod
    async def create(
        cls, settings: Settings, *, dsn: str, embedded: bool = False
    ) -> ConnectionPool:
        """Open the pool (DB_POOL_MIN_SIZE connections at once) with the vector codec.

        Args:
            settings: pool sizes, statement cache size, command timeout.
            dsn: the database's connection string (never logged).
            embedded: whether `dsn` is the embedded server's, for `stats()`.
        """
        target = PostgresDsn.parse(dsn, settings)
        try:
            pool = await asyncpg.create_pool(
                target.url,
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                init=register_vector_codec,
                **target.connect_kwargs(),
            )
        except CONNECT_ERRORS as exc:
            raise could_not_connect(exc) from None
        logger.info(
            "database pool open (embedded=%s, statement_cache_size=%s)",
            embedded,
            target.statement_cache_size,
        )
        return cls(
            pool=pool,
            statement_cache_size=target.statement_cache_size,
            backend="embedded" if embedded else "external",
        )

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
        """A pooled connection; connection failures surface as `StorageUnavailable`."""
        started = time.perf_counter()
        try:
            conn = await self._pool.acquire()
        except TRANSIENT_DB_ERRORS as exc:
            self._errors += 1
            raise StorageUnavailable(f"database unavailable ({type(exc).__name__})") from None
        self._acquisitions += 1
        self._acquire_ms.add((time.perf_counter() - started) * 1000)
        try:
            # The pool's proxy forwards every Connection method; callers type against those.
            yield cast("asyncpg.Connection[asyncpg.Record]", conn)
        except TRANSIENT_DB_ERRORS as exc:
            self._errors += 1
            raise StorageUnavailable(f"database unavailable ({type(exc).__name__})") from exc
        finally:
            await self._pool.release(conn)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as conn:
            return list(await conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            return str(await conn.execute(query, *args))

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self._backend,
            "size": self._pool.get_size(),
            "idle": self._pool.get_idle_size(),
            "in_use": self._pool.get_size() - self._pool.get_idle_size(),
            "min_size": self._pool.get_min_size(),
            "max_size": self._pool.get_max_size(),
            "statement_cache_size": self.statement_cache_size,
            "acquisitions": self._acquisitions,
            "errors": self._errors,
            "acquire_ms": self._acquire_ms.summary(),
        }

    async def aclose(self) -> None:
        await self._pool.close()
