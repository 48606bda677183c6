"""Shared network resources: one asyncpg pool, one httpx client, one AsyncOpenAI client."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg
import httpx
import numpy as np
from openai import AsyncOpenAI

from core.config import Settings
from core.errors import StorageUnavailable
from core.latency import LatencyWindow
from infrastructure import migrations
from infrastructure.embedded_postgres import EmbeddedPostgres

logger = logging.getLogger(__name__)

# Errors after which the same statement may work once the server or network is back.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    # Raised when a server shutdown kills a connection mid-statement. (Not InterfaceError:
    # its subclass DataError is a bad argument, which no retry can fix.)
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.ConnectionFailureError,
)


def encode_vector(value: Sequence[float] | np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in value) + "]"


def decode_vector(text: str) -> np.ndarray:
    return np.array(text[1:-1].split(","), dtype=np.float32) if len(text) > 2 else np.zeros(0)


def statement_cache_size_for(dsn: str, configured: int | None) -> int:
    """Transaction poolers (Supabase on 6543, pgbouncer) cannot keep prepared statements."""
    if configured is not None:
        return configured
    parsed = urlparse(dsn)
    behind_pooler = (
        parsed.port == 6543
        or "pooler.supabase.com" in (parsed.hostname or "")
        or parse_qs(parsed.query).get("pgbouncer", ["false"])[0] == "true"
    )
    return 0 if behind_pooler else 100


def _strip_pooler_flag(dsn: str) -> str:
    # `pgbouncer=true` is a hint for us (and Prisma); asyncpg would send it as a server setting.
    parsed = urlparse(dsn)
    if "pgbouncer" not in parse_qs(parsed.query):
        return dsn
    query = "&".join(p for p in parsed.query.split("&") if not p.startswith("pgbouncer="))
    return parsed._replace(query=query).geturl()


async def _register_vector_codec(conn: asyncpg.Connection) -> None:
    schema = await conn.fetchval(
        "select n.nspname from pg_type t join pg_namespace n on n.oid = t.typnamespace "
        "where t.typname = 'vector' limit 1"
    )
    if schema is not None:
        await conn.set_type_codec(
            "vector", schema=schema, encoder=encode_vector, decoder=decode_vector, format="text"
        )


class ConnectionPool:
    """Owns the database pool (and the embedded server if any) and the HTTP/OpenAI clients."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        openai: AsyncOpenAI | None,
        embedded: EmbeddedPostgres | None,
        statement_cache_size: int,
    ) -> None:
        self._pool = pool
        self.http = http
        self._openai = openai
        self._embedded = embedded
        self.statement_cache_size = statement_cache_size
        self._acquire_ms = LatencyWindow()
        self._errors = 0
        self._acquisitions = 0

    @classmethod
    async def create(cls, settings: Settings, *, dsn: str | None = None) -> ConnectionPool:
        """Start (or join) the database, apply pending migrations, open the pool and clients."""
        embedded = None
        if dsn is None and settings.database_url is not None:
            dsn = settings.database_url.get_secret_value()
        if dsn is None:
            embedded = await EmbeddedPostgres.start(settings.embedded_pg_dir)
            dsn = embedded.dsn
        cache_size = statement_cache_size_for(dsn, settings.db_statement_cache_size)
        dsn = _strip_pooler_flag(dsn)
        connect_kwargs: dict[str, Any] = {
            "statement_cache_size": cache_size,
            "command_timeout": settings.db_command_timeout_s,
        }
        try:
            conn = await asyncpg.connect(dsn, **connect_kwargs)
            try:
                await migrations.apply_pending(conn)
            finally:
                await conn.close()
            pool = await asyncpg.create_pool(
                dsn,
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                init=_register_vector_codec,
                **connect_kwargs,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if embedded is not None:
                await embedded.aclose()
            # `from None`: the driver's message may echo the DSN, password included.
            raise StorageUnavailable(
                f"could not connect to Postgres ({type(exc).__name__})",
                suggestion="check DATABASE_URL (host, port, password) or unset it for the "
                "embedded database",
            ) from None
        http = httpx.AsyncClient(timeout=httpx.Timeout(settings.openai_timeout_s, connect=5.0))
        openai_client = None
        if settings.has_llm_credentials or settings.embedding_provider.value == "openai":
            openai_client = AsyncOpenAI(
                api_key=settings.llm_api_key(),
                base_url=settings.openai_base_url,
                timeout=settings.openai_timeout_s,
                max_retries=settings.openai_max_retries,
                http_client=http,
            )
        logger.info(
            "database pool open (embedded=%s, statement_cache_size=%s)",
            embedded is not None,
            cache_size,
        )
        return cls(
            pool=pool,
            http=http,
            openai=openai_client,
            embedded=embedded,
            statement_cache_size=cache_size,
        )

    @property
    def openai(self) -> AsyncOpenAI:
        if self._openai is None:
            raise StorageUnavailable(
                "no OpenAI-compatible server is configured",
                suggestion="set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server",
                retryable=False,
            )
        return self._openai

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
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
            yield conn
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
            "backend": "embedded" if self._embedded is not None else "external",
            "size": self._pool.get_size(),
            "idle": self._pool.get_idle_size(),
            "in_use": self._pool.get_size() - self._pool.get_idle_size(),
            "min_size": self._pool.get_min_size(),
            "max_size": self._pool.get_max_size(),
            "statement_cache_size": self.statement_cache_size,
            "acquisitions": self._acquisitions,
            "errors": self._errors,
            "acquire_ms": self._acquire_ms.summary(),
            "http_client_open": not self.http.is_closed,
        }

    async def aclose(self) -> None:
        await self._pool.close()
        await self.http.aclose()
        if self._embedded is not None:
            await self._embedded.aclose()
