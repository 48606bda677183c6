"""Fixtures: a real Postgres+pgvector and a real redis-server for the whole run, a fresh
migrated database per test, and Settings that never read the developer's .env."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.config import Settings
from infrastructure import migrations
from infrastructure.connection_pool import ConnectionPool
from infrastructure.model_clients import ModelClients
from tests.support.servers import PostgresProcess, RedisProcess

TEMPLATE_DB = "companion_template"
GENEROUS_DB_WAIT_S = 60.0


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresProcess]:
    server = PostgresProcess()
    server.start()
    server.psql(f"create database {TEMPLATE_DB}")
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def migrated_template(postgres: PostgresProcess) -> str:
    async def migrate() -> None:
        conn = await asyncpg.connect(postgres.dsn_for(TEMPLATE_DB))
        try:
            await migrations.apply_pending(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    return TEMPLATE_DB


@pytest.fixture
def db_dsn(postgres: PostgresProcess, migrated_template: str) -> Iterator[str]:
    """A new database cloned from the migrated template: every test starts from the schema."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.psql(f"create database {name} template {migrated_template}")
    yield postgres.dsn_for(name)
    postgres.psql(f"drop database if exists {name} with (force)")


class PostgresFreezer:
    """Freezes the test server (SIGSTOP on all its processes) and thaws it (SIGCONT)."""

    def __init__(self, server: PostgresProcess) -> None:
        self.server = server

    def freeze(self) -> None:
        self.server.freeze()

    def thaw(self) -> None:
        self.server.thaw()


@pytest.fixture
def postgres_freezer(postgres: PostgresProcess, db_dsn: str) -> Iterator[PostgresFreezer]:
    """Freeze and thaw the server at will; it is always thawed when the test ends (before
    the test database is dropped)."""
    freezer = PostgresFreezer(postgres)
    try:
        yield freezer
    finally:
        freezer.thaw()


@pytest.fixture
def empty_db(postgres: PostgresProcess) -> Iterator[str]:
    """A new database the migrations never ran on."""
    name = f"m_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"create database {name}")
    yield postgres.dsn_for(name)
    postgres.psql(f"drop database if exists {name} with (force)")


@pytest.fixture
def behind_dsn(postgres: PostgresProcess, tmp_path: Path) -> Iterator[str]:
    """A database migrated with every file but the newest: its schema is one migration behind."""
    name = f"b_{uuid.uuid4().hex[:12]}"
    postgres.psql(f"create database {name}")
    older = tmp_path / "older-migrations"
    older.mkdir()
    for path in sorted(migrations.MIGRATIONS_DIR.glob("*.sql"))[:-1]:
        shutil.copy(path, older / path.name)

    async def migrate() -> None:
        conn = await asyncpg.connect(postgres.dsn_for(name))
        try:
            await migrations.apply_pending(conn, older)
        finally:
            await conn.close()

    asyncio.run(migrate())
    yield postgres.dsn_for(name)
    postgres.psql(f"drop database if exists {name} with (force)")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.kill()


@pytest.fixture
def make_settings(tmp_path: Path):
    """Settings from explicit values only (no .env, no stray environment variables)."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "embedded_pg_dir": tmp_path / "pg",
            "batch_spool_dir": tmp_path / "spool",
            "redis_enabled": False,
            "openai_api_key": None,
            "openai_base_url": None,
            # The product's database time limits are seconds; a test on a loaded 2-core machine
            # must not fail on a slow answer it did not ask about. Tests of those limits (a
            # frozen server) set their own.
            "db_command_timeout_s": GENEROUS_DB_WAIT_S,
            "db_acquire_timeout_s": GENEROUS_DB_WAIT_S,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
async def pool(db_dsn: str, make_settings) -> AsyncIterator[ConnectionPool]:
    pool = await ConnectionPool.create(make_settings(), dsn=db_dsn)
    yield pool
    await pool.aclose()


@pytest.fixture
async def models(make_settings) -> AsyncIterator[ModelClients]:
    """Model clients with no model server configured: `models.openai` raises LLMUnavailable."""
    models = ModelClients.create(make_settings())
    yield models
    await models.aclose()
