"""The database connection pool: one asyncpg pool per job, with acquire timings and errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

from core.config import Settings
from core.deadline import Deadline, sooner
from core.errors import StorageUnavailable
from core.latency import LatencyWindow
from infrastructure.db_errors import TRANSIENT_DB_ERRORS
from infrastructure.postgres_dsn import CONNECT_ERRORS, PostgresDsn, could_not_connect
from infrastructure.vector_codec import register_vector_codec

logger = logging.getLogger(__name__)

_RELEASE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, asyncpg.InterfaceError)

# At shutdown, a use of a connection the database has not answered in this long is taken for a
# hung database (a healthy one answers in milliseconds): the rest is spooled while there is time.
SHUTDOWN_USE_S = 2.0

# What the person is told (through the model) when the database cannot answer right now.
TRY_AGAIN = "the memory store is not answering right now; try again in a moment"


def rows_affected(status: str) -> int:
    """How many rows a command changed, from its status tag ("DELETE 3", "UPDATE 0")."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


def unavailable(exc: BaseException) -> StorageUnavailable:
    """The error for a database that failed or did not answer in time (keep `exc` as cause)."""
    if isinstance(exc, TimeoutError):
        message = "the database did not answer in time"
    else:
        message = f"database unavailable ({type(exc).__name__})"
    return StorageUnavailable(message, suggestion=TRY_AGAIN)


class ConnectionPool:
    """The shared asyncpg pool; connection failures and timeouts surface as
    `StorageUnavailable`, and no wait on the database is unbounded.

    Build it with `await ConnectionPool.create(settings, dsn=...)` on a migrated database.
    """

    def __init__(
        self,
        *,
        pool: asyncpg.Pool[asyncpg.Record],
        statement_cache_size: int,
        backend: str,
        acquire_timeout_s: float = 2.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_s
        self._close_timeout_s = close_timeout_s
        self.statement_cache_size = statement_cache_size
        self._backend = backend
        self._acquire_ms = LatencyWindow()
        self._errors = 0
        self._dropped = 0
        self._uses: set[asyncio.Timeout] = set()
        self._finish: Deadline | None = None
        self._hung_at_shutdown = False
        self._acquisitions = 0

    @classmethod
    async def create(
        cls, settings: Settings, *, dsn: str, embedded: bool = False
    ) -> ConnectionPool:
        """Open the pool (DB_POOL_MIN_SIZE connections at once) with the vector codec.

        Args:
            settings: pool sizes, statement cache size, connect, acquire and command timeouts.
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
            acquire_timeout_s=settings.db_acquire_timeout_s,
            close_timeout_s=settings.db_command_timeout_s,
        )

    @asynccontextmanager
    async def acquire(
        self, *, deadline: Deadline | None = None
    ) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
        """A pooled connection; connection failures and timeouts surface as
        `StorageUnavailable` (retryable, "try again in a moment").

        Waiting for a connection takes at most DB_ACQUIRE_TIMEOUT_S, each statement at most
        DB_COMMAND_TIMEOUT_S; with `deadline`, the whole use of the connection ends by it too.
        A connection whose use was cut short (timeout, cancellation, a broken link) is dropped,
        not released: releasing would wait for the server once more, and a hung server never
        answers. After `finish_by`, see there.
        """
        if self._hung_at_shutdown:
            self._errors += 1
            raise StorageUnavailable(
                "the database did not answer during shutdown", suggestion=TRY_AGAIN
            )
        deadline = self._shutdown_bound(deadline)
        started = time.perf_counter()
        wait = self._acquire_timeout_s if deadline is None else deadline.bound(
            self._acquire_timeout_s
        )
        try:
            conn = await self._pool.acquire(timeout=wait)
        except TRANSIENT_DB_ERRORS as exc:
            self._failed(exc)
            raise unavailable(exc) from None
        self._acquisitions += 1
        self._acquire_ms.add((time.perf_counter() - started) * 1000)
        clean = False
        try:
            async with asyncio.timeout_at(deadline.loop_time() if deadline else None) as use:
                self._uses.add(use)
                try:
                    # The pool's proxy forwards every Connection method; callers type
                    # against those.
                    yield cast("asyncpg.Connection[asyncpg.Record]", conn)
                finally:
                    self._uses.discard(use)
            clean = True
        except TRANSIENT_DB_ERRORS as exc:
            self._failed(exc)
            raise unavailable(exc) from exc
        except asyncio.CancelledError:
            raise
        except BaseException:
            # The server answered (a constraint, a syntax error) or the caller's own error.
            clean = True
            raise
        finally:
            await self._give_back(conn, clean=clean)

    def finish_by(self, deadline: Deadline) -> None:
        """The job ends at `deadline`: from now on every use of a connection, the ones under
        way included, ends by it and within SHUTDOWN_USE_S; once one has not been answered
        in time, the database is taken for hung and every later `acquire` fails at once (the
        shutdown spools rather than waits)."""
        self._finish = sooner(self._finish, deadline)
        cap = self._shutdown_cap()
        if cap is None:
            return
        for use in self._uses:
            when = use.when()
            if when is None or when > cap.loop_time():
                use.reschedule(cap.loop_time())

    def _shutdown_cap(self) -> Deadline | None:
        """When a use of a connection starting now must end at shutdown (None before)."""
        if self._finish is None:
            return None
        return sooner(self._finish, Deadline.after(SHUTDOWN_USE_S))

    def _shutdown_bound(self, deadline: Deadline | None) -> Deadline | None:
        """`deadline`, or sooner during shutdown."""
        return sooner(deadline, self._shutdown_cap())

    def _failed(self, exc: BaseException) -> None:
        self._errors += 1
        if self._finish is not None and isinstance(exc, TimeoutError):
            if not self._hung_at_shutdown:
                logger.warning("the database did not answer during shutdown; not waiting again")
            self._hung_at_shutdown = True

    async def _give_back(self, conn: Any, *, clean: bool) -> None:
        if not clean:
            self._dropped += 1
            # Already detached when the pool itself was terminated meanwhile.
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()
        try:
            # Bounded: releasing resets the session on the server, one more round trip.
            await self._pool.release(conn, timeout=self._acquire_timeout_s)
        except _RELEASE_ERRORS as exc:
            # asyncpg has terminated the connection; the pool opens a fresh one when needed.
            self._dropped += 1
            logger.warning("a database connection was dropped on release (%s)",
                           type(exc).__name__)

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
            "dropped": self._dropped,
            "acquire_ms": self._acquire_ms.summary(),
        }

    async def aclose(self, deadline: Deadline | None = None) -> None:
        """Close every connection; by `deadline` (DB_COMMAND_TIMEOUT_S without one, at most
        SHUTDOWN_USE_S after `finish_by`), else drop them: a graceful close waits for a server
        that may never answer (and one found hung at shutdown is not asked)."""
        if self._hung_at_shutdown:
            self._pool.terminate()
            return
        bound = self._close_timeout_s if deadline is None else deadline.bound(
            self._close_timeout_s
        )
        if self._finish is not None:
            bound = min(bound, SHUTDOWN_USE_S)
        try:
            await asyncio.wait_for(self._pool.close(), timeout=bound)
        except TimeoutError:
            logger.warning("database pool did not close in %.1f s; connections dropped", bound)
            self._pool.terminate()
