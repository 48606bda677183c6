"""The SQL migrations in supabase/migrations: applied once per worker, checked by every job.

`migrate` applies what is pending (at worker start and as `python manage.py migrate`). It is
safe to run twice and from several processes at once: a transaction-scoped advisory lock
serializes runners, each file is applied in its own transaction together with its record.
A file whose content changed after it was applied stops it before anything runs: the
database no longer matches the files, and skipping the change would hide that.

`require_current` is the job's check: one read of the ledger, no lock, nothing written.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from core.config import PROJECT_ROOT, Settings
from core.errors import MigrationError, SchemaBehind
from infrastructure.postgres_dsn import CONNECT_ERRORS, PostgresDsn, could_not_connect

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = PROJECT_ROOT / "supabase" / "migrations"
# Any constant works; it only has to be the same for every process running migrations.
_ADVISORY_LOCK_KEY = 7_311_420_615_001

_LEDGER = "public.companion_schema_migrations"
_LEDGER_DDL = f"""
create table if not exists {_LEDGER} (
  version text primary key,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now()
);
-- Only the role running migrations touches the ledger. On Supabase, default privileges grant
-- every new table in public to anon and authenticated: a client could read the schema's
-- history or delete a record (and a deleted record makes its migration run again). RLS with
-- no policy refuses them even if a grant comes back.
do $$
declare
  r text;
begin
  if not (select relrowsecurity from pg_class where oid = '{_LEDGER}'::regclass) then
    alter table {_LEDGER} enable row level security;
  end if;
  foreach r in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_roles where rolname = r) then
      execute format('revoke all on table {_LEDGER} from %I', r);
    end if;
  end loop;
end
$$;
"""


class Queries(Protocol):
    """What reads the ledger: an asyncpg connection or the project's ConnectionPool."""

    async def fetch(self, query: str, *args: Any) -> Sequence[Any]: ...


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def file_name(self) -> str:
        return f"{self.version}_{self.name}.sql"


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


def check_unchanged(migrations: list[Migration], recorded: dict[str, str]) -> None:
    """Raise `MigrationError` naming every applied file whose content differs from its record."""
    changed = [
        f"{m.version}_{m.name}.sql (applied as sha256 {recorded[m.version][:12]}, "
        f"the file is now {m.checksum[:12]})"
        for m in migrations
        if m.version in recorded and recorded[m.version] != m.checksum
    ]
    if changed:
        raise MigrationError(
            "migrations changed after they were applied to this database: " + "; ".join(changed),
            suggestion="nothing was applied; restore each file exactly as it was applied (git "
            "log -- supabase/migrations/<file> shows its history) and put the change in a new "
            "file supabase/migrations/<YYYYMMDDHHMMSS>_<what>.sql",
        )


async def pending(db: Queries, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in `directory` that the database has not recorded, in order.

    One query (the ledger), no lock and nothing written. A database the migrations never ran
    on has no ledger: everything is pending.

    Raises:
        MigrationError: a recorded file changed since it was applied.
    """
    migrations = await asyncio.to_thread(discover, directory)
    try:
        rows = await db.fetch(f"select version, checksum from {_LEDGER}")
    except asyncpg.UndefinedTableError:
        return migrations
    recorded = {r["version"]: r["checksum"] for r in rows}
    check_unchanged(migrations, recorded)
    return [m for m in migrations if m.version not in recorded]


async def require_current(db: Queries, directory: Path = MIGRATIONS_DIR) -> None:
    """A job's check that the schema is what this code needs, by one read of the ledger.

    Raises:
        SchemaBehind: migrations are pending; it names them and says to run
            `python manage.py migrate`. Nothing is migrated here: that is the worker's job.
        MigrationError: a recorded file changed since it was applied.
    """
    behind = await pending(db, directory)
    if behind:
        raise SchemaBehind(
            f"the database schema is behind: {len(behind)} migration(s) not applied ("
            + ", ".join(m.file_name for m in behind) + ")"
        )


async def migrate(dsn: str, settings: Settings) -> list[str]:
    """Apply pending migrations over one connection of their own; the versions applied."""
    conn = await PostgresDsn.parse(dsn, settings).connect()
    try:
        return await apply_pending(conn)
    except CONNECT_ERRORS as exc:
        # A failed SQL file is a MigrationError; this is the server or the link giving way.
        raise could_not_connect(exc) from None
    finally:
        await conn.close()


async def pending_in(dsn: str, settings: Settings) -> list[Migration]:
    """`pending` over one connection of its own (`manage.py migrate --check`)."""
    conn = await PostgresDsn.parse(dsn, settings).connect()
    try:
        return await pending(conn)
    except CONNECT_ERRORS as exc:
        raise could_not_connect(exc) from None
    finally:
        await conn.close()


async def apply_pending(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not yet recorded; return the versions applied by this call.

    Raises:
        MigrationError: a recorded file changed since it was applied (before anything runs),
            or a pending file failed (nothing of it is applied).
    """
    migrations = await asyncio.to_thread(discover, directory)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", _ADVISORY_LOCK_KEY)
        await conn.execute(_LEDGER_DDL)
        rows = await conn.fetch(f"select version, checksum from {_LEDGER}")
        done = {r["version"]: r["checksum"] for r in rows}
        check_unchanged(migrations, done)
    # Nothing pending (the usual start): one transaction in all, no lock per file.
    for migration in [m for m in migrations if m.version not in done]:
        async with conn.transaction():
            # Held until this transaction ends, so a racing runner waits and then sees the record.
            await conn.execute("select pg_advisory_xact_lock($1)", _ADVISORY_LOCK_KEY)
            recorded = await conn.fetchval(
                f"select checksum from {_LEDGER} where version = $1", migration.version
            )
            if recorded is not None:
                # A racing runner recorded it meanwhile: from another checkout, it may differ.
                check_unchanged([migration], {migration.version: recorded})
                continue
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version}_{migration.name} failed: {exc}",
                    suggestion="fix the SQL file; nothing of this migration was applied",
                ) from exc
            await conn.execute(
                f"insert into {_LEDGER} (version, name, checksum) values ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
            logger.info("applied migration %s_%s", migration.version, migration.name)
    return applied_now
