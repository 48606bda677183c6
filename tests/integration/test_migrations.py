from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import asyncpg
import pytest

from core.errors import MigrationError, SchemaBehind
from infrastructure import migrations
from infrastructure.connection_pool import ConnectionPool

pytestmark = pytest.mark.integration

EXPECTED_TABLES = {
    "users", "companions", "memories", "sessions", "messages", "personality_state",
    "personality_history", "needs", "quirks", "follow_ups", "security_incidents",
    "forgotten_keys",
}


async def test_migrations_apply_once_and_reapply_as_a_no_op(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        first = await migrations.apply_pending(conn)
        second = await migrations.apply_pending(conn)
        tables = {r["tablename"] for r in await conn.fetch(
            "select tablename from pg_tables where schemaname = 'public'")}
        rls = {r["relname"] for r in await conn.fetch(
            "select relname from pg_class where relrowsecurity "
            "and relnamespace = 'public'::regnamespace")}
    finally:
        await conn.close()
    assert first == [m.version for m in migrations.discover()]
    assert second == []
    assert EXPECTED_TABLES <= tables
    assert EXPECTED_TABLES <= rls


async def test_a_database_the_migrations_never_ran_on_has_every_migration_pending(
    empty_db: str,
) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        assert await migrations.pending(conn) == migrations.discover()
    finally:
        await conn.close()


async def test_a_schema_one_migration_behind_is_refused_naming_the_file_and_the_command(
    behind_dsn: str, make_settings
) -> None:
    pool = await ConnectionPool.create(make_settings(), dsn=behind_dsn)
    try:
        with pytest.raises(SchemaBehind) as caught:
            await migrations.require_current(pool)
        # Checking migrates nothing: the file is still pending afterwards.
        assert [m.file_name for m in await migrations.pending(pool)] == [
            migrations.discover()[-1].file_name
        ]
    finally:
        await pool.aclose()
    message = str(caught.value)
    assert "the database schema is behind: 1 migration(s) not applied" in message
    assert migrations.discover()[-1].file_name in message
    assert "python manage.py migrate" in message


async def test_a_current_schema_passes_the_check(db_dsn: str, make_settings) -> None:
    pool = await ConnectionPool.create(make_settings(), dsn=db_dsn)
    try:
        await migrations.require_current(pool)
        assert await migrations.pending(pool) == []
    finally:
        await pool.aclose()


async def test_memories_have_hnsw_and_gin_indexes(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await migrations.apply_pending(conn)
        defs = [r["indexdef"] for r in await conn.fetch(
            "select indexdef from pg_indexes where tablename = 'memories'")]
        dims = await conn.fetchval(
            "select atttypmod from pg_attribute where attrelid = 'public.memories'::regclass "
            "and attname = 'embedding'")
    finally:
        await conn.close()
    assert any("hnsw" in d and "vector_cosine_ops" in d for d in defs)
    assert any("gin" in d and "tsv" in d for d in defs)
    assert dims == 384


def test_two_processes_racing_to_migrate_both_succeed_and_apply_each_file_once(
    empty_db: str,
) -> None:
    script = textwrap.dedent(f"""
        import asyncio, asyncpg
        from infrastructure import migrations
        async def main():
            conn = await asyncpg.connect({empty_db!r})
            print(len(await migrations.apply_pending(conn)))
            await conn.close()
        asyncio.run(main())
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    # Each file is applied by whichever runner takes the lock for it first, exactly once.
    applied = [int(o[0].strip()) for o in outs]
    assert sum(applied) == len(migrations.discover())

    async def count() -> int:
        conn = await asyncpg.connect(empty_db)
        try:
            return int(await conn.fetchval("select count(*) from companion_schema_migrations"))
        finally:
            await conn.close()

    assert asyncio.run(count()) == len(migrations.discover())


async def test_a_broken_migration_applies_nothing_and_names_the_file(empty_db, tmp_path) -> None:
    (tmp_path / "20990101000000_broken.sql").write_text(
        "create table half_done (id int); select * from no_such_table;")
    conn = await asyncpg.connect(empty_db)
    try:
        with pytest.raises(MigrationError, match="20990101000000_broken"):
            await migrations.apply_pending(conn, tmp_path)
        assert await conn.fetchval("select to_regclass('public.half_done')") is None
    finally:
        await conn.close()


async def test_pool_works_with_the_statement_cache_off_as_behind_a_transaction_pooler(
    db_dsn: str, make_settings
) -> None:
    pool = await ConnectionPool.create(make_settings(db_statement_cache_size=0), dsn=db_dsn)
    try:
        # The same statement many times: with a cache it would be prepared and reused.
        for i in range(20):
            assert await pool.fetchval("select $1::int + 1", i) == i + 1
        async with pool.acquire() as conn:
            for i in range(10):
                await conn.fetchval("select $1::int * 2", i)
            # A transaction pooler breaks on named prepared statements: none may be left behind.
            assert await conn.fetchval("select count(*) from pg_prepared_statements") == 0
        assert pool.stats()["statement_cache_size"] == 0
        assert pool.stats()["acquisitions"] >= 21
    finally:
        await pool.aclose()


def test_pooler_urls_turn_the_statement_cache_off() -> None:
    from infrastructure.postgres_dsn import statement_cache_size_for

    assert statement_cache_size_for(
        "postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres", None) == 0
    assert statement_cache_size_for("postgresql://u@db:5432/x?pgbouncer=true", None) == 0
    assert statement_cache_size_for("postgresql://u@db:5432/x", None) > 0
    assert statement_cache_size_for("postgresql://u@db:6543/x", 50) == 50


async def test_a_migration_changed_after_it_was_applied_stops_start_up_and_says_what_to_do(
    empty_db: str, tmp_path
) -> None:
    first = tmp_path / "20990101000000_first.sql"
    first.write_text("create table first_table (id int);")
    conn = await asyncpg.connect(empty_db)
    try:
        assert await migrations.apply_pending(conn, tmp_path) == ["20990101000000"]
        recorded = await conn.fetchval("select checksum from companion_schema_migrations")
        first.write_text("create table first_table (id int, extra text);")
        (tmp_path / "20990101000100_second.sql").write_text("create table second_table (id int);")
        with pytest.raises(MigrationError) as caught:
            await migrations.apply_pending(conn, tmp_path)
        message = str(caught.value)
        assert "20990101000000_first.sql" in message
        assert recorded[:12] in message
        assert migrations.discover(tmp_path)[0].checksum[:12] in message
        assert "new file supabase/migrations/<YYYYMMDDHHMMSS>_<what>.sql" in message
        # Start-up stopped before anything ran: the pending file is neither applied nor recorded.
        assert await conn.fetchval("select to_regclass('public.second_table')") is None
        assert await conn.fetchval("select count(*) from companion_schema_migrations") == 1
    finally:
        await conn.close()


# What a Supabase project does: every new table in public is granted to its API roles.
SUPABASE_DEFAULT_PRIVILEGES = (
    "do $$ begin "
    "if not exists (select 1 from pg_roles where rolname = 'anon') then "
    "  create role anon nologin noinherit; end if; "
    "if not exists (select 1 from pg_roles where rolname = 'authenticated') then "
    "  create role authenticated nologin noinherit; end if; "
    "end $$; "
    "alter default privileges in schema public grant all on tables to anon, authenticated; "
    "grant usage on schema public to anon, authenticated"
)


async def test_the_migration_ledger_is_closed_to_supabase_clients(empty_db: str) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(SUPABASE_DEFAULT_PRIVILEGES)
        await migrations.apply_pending(conn)
        ledger = "public.companion_schema_migrations"
        assert await conn.fetchval(
            "select relrowsecurity from pg_class where oid = $1::regclass", ledger
        )
        for role in ("anon", "authenticated"):
            for privilege in ("select", "insert", "update", "delete", "truncate"):
                assert not await conn.fetchval(
                    "select has_table_privilege($1, $2, $3)", role, ledger, privilege
                ), (role, privilege)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(f"set local role {role}")
                    await conn.execute(f"delete from {ledger}")
        # Even if a grant comes back, row-level security with no policy shows them nothing.
        await conn.execute(f"grant select, delete on {ledger} to authenticated")
        async with conn.transaction():
            await conn.execute("set local role authenticated")
            assert await conn.fetchval(f"select count(*) from {ledger}") == 0
            assert await conn.execute(f"delete from {ledger}") == "DELETE 0"
        assert await conn.fetchval(f"select count(*) from {ledger}") == len(migrations.discover())
    finally:
        await conn.close()


async def test_under_supabase_default_privileges_anon_keeps_no_grant_on_any_table(
    empty_db: str,
) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(SUPABASE_DEFAULT_PRIVILEGES)
        await migrations.apply_pending(conn)
        granted = await conn.fetch(
            "select table_name, privilege_type from information_schema.role_table_grants "
            "where grantee = 'anon' and table_schema = 'public' order by 1, 2"
        )
        tables = await conn.fetchval(
            "select count(*) from pg_tables where schemaname = 'public'"
        )
    finally:
        await conn.close()
    assert tables >= len(EXPECTED_TABLES)
    assert [tuple(r) for r in granted] == []
