"""How this project connects to a Postgres connection string.

Shared by the migration runner and the pool, so both talk to a transaction pooler (Supabase on
6543, pgbouncer) the same way, and neither ever echoes the DSN (it holds the password).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg

from core.config import Settings
from core.errors import StorageUnavailable

# What a failed connect raises: bad host or port, refused login, server not ready.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


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


@dataclass(frozen=True)
class PostgresDsn:
    """A connection string made ready for asyncpg, with the driver options it needs.

    Attributes:
        url: what asyncpg connects to (our `pgbouncer=` hint removed); never logged.
        statement_cache_size: 0 behind a transaction pooler, else DB_STATEMENT_CACHE_SIZE or 100.
        command_timeout_s: DB_COMMAND_TIMEOUT_S, the longest one statement may run.
        connect_timeout_s: DB_CONNECT_TIMEOUT_S, the longest opening a connection may take.
    """

    url: str = field(repr=False)
    statement_cache_size: int
    command_timeout_s: float
    connect_timeout_s: float

    @classmethod
    def parse(cls, dsn: str, settings: Settings) -> PostgresDsn:
        return cls(
            url=_strip_pooler_flag(dsn),
            statement_cache_size=statement_cache_size_for(dsn, settings.db_statement_cache_size),
            command_timeout_s=settings.db_command_timeout_s,
            connect_timeout_s=settings.db_connect_timeout_s,
        )

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "statement_cache_size": self.statement_cache_size,
            "command_timeout": self.command_timeout_s,
            "timeout": self.connect_timeout_s,
        }

    async def connect(self) -> asyncpg.Connection:
        """One connection outside the pool (the migration runner's), whose statements are not
        cut short: building an index on a large table may take minutes."""
        try:
            return await asyncpg.connect(
                self.url, **{**self.connect_kwargs(), "command_timeout": None}
            )
        except CONNECT_ERRORS as exc:
            raise could_not_connect(exc) from None


def could_not_connect(exc: BaseException) -> StorageUnavailable:
    """The error for a failed connect. Raise it `from None`: the driver's message may echo
    the DSN, password included."""
    return StorageUnavailable(
        f"could not connect to Postgres ({type(exc).__name__})",
        suggestion="check DATABASE_URL (host, port, password) or unset it for the "
        "embedded database",
    )
