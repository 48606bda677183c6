"""Which Postgres this process talks to: DATABASE_URL's, or the embedded one when it is unset.

A worker opens it once at its start and applies the migrations (`open_migrated`), and holds
it until it stops, so the embedded server stays up between jobs; each job opens it again
(joining the running server) and only checks that the schema is current.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from core.config import Settings
from infrastructure import migrations
from infrastructure.embedded_postgres import EmbeddedPostgres

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Database:
    """A database to connect to.

    Attributes:
        dsn: its connection string (holds the password; never logged).
        embedded: the handle on the embedded server, None for DATABASE_URL's database.
    """

    dsn: str = field(repr=False)
    embedded: EmbeddedPostgres | None

    @classmethod
    async def open(cls, settings: Settings) -> Database:
        """DATABASE_URL's database, or the embedded server (started, or joined if running)."""
        if settings.database_url is not None:
            return cls(dsn=settings.database_url.get_secret_value(), embedded=None)
        embedded = await EmbeddedPostgres.start(settings.embedded_pg_dir)
        return cls(dsn=embedded.dsn, embedded=embedded)

    async def aclose(self) -> None:
        """Release the embedded server's handle (it stops when nobody holds one)."""
        if self.embedded is not None:
            await self.embedded.aclose()


async def open_migrated(settings: Settings) -> tuple[Database, list[str]]:
    """Open the database and apply pending migrations: once per worker, at its start, and
    `python manage.py migrate`. Returns the database, still open, and the versions applied."""
    database = await Database.open(settings)
    try:
        applied = await migrations.migrate(database.dsn, settings)
    except BaseException:
        await database.aclose()
        raise
    logger.info(
        "database schema current (embedded=%s, applied=%s)",
        database.embedded is not None, len(applied),
    )
    return database, applied
