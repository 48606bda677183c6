"""Applies pending SQL migrations from supabase/migrations at start-up.

Safe to run twice and from several processes at once: a transaction-scoped advisory lock
serializes runners, each file is applied in its own transaction together with its record,
and a file whose content changed after it was applied is reported instead of silently skipped.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from core.config import PROJECT_ROOT
from core.errors import MigrationError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = PROJECT_ROOT / "supabase" / "migrations"
# Any constant works; it only has to be the same for every process running migrations.
_ADVISORY_LOCK_KEY = 7_311_420_615_001

_LEDGER_DDL = """
create table if not exists public.companion_schema_migrations (
  version text primary key,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Files named `<YYYYMMDDHHMMSS>_<what>.sql`, in version order."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit():
            raise MigrationError(
                f"migration file {path.name} does not start with a timestamp",
                suggestion="name it <YYYYMMDDHHMMSS>_<what>.sql",
            )
        found.append(Migration(version=version, name=name, sql=path.read_text()))
    return found


async def apply_pending(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not yet recorded; return the versions applied by this call."""
    migrations = discover(directory)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", _ADVISORY_LOCK_KEY)
        await conn.execute(_LEDGER_DDL)
    for migration in migrations:
        async with conn.transaction():
            # Held until this transaction ends, so a racing runner waits and then sees the record.
            await conn.execute("select pg_advisory_xact_lock($1)", _ADVISORY_LOCK_KEY)
            recorded = await conn.fetchval(
                "select checksum from public.companion_schema_migrations where version = $1",
                migration.version,
            )
            if recorded is not None:
                if recorded != migration.checksum:
                    logger.warning(
                        "migration %s changed after it was applied; write a new migration instead",
                        migration.version,
                    )
                continue
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version}_{migration.name} failed: {exc}",
                    suggestion="fix the SQL file; nothing of this migration was applied",
                ) from exc
            await conn.execute(
                "insert into public.companion_schema_migrations (version, name, checksum) "
                "values ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
            logger.info("applied migration %s_%s", migration.version, migration.name)
    return applied_now
