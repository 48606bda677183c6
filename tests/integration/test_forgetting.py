"""A forget while Postgres is down (stopped: connections refused), over the real batcher and
spool: it holds at once, waits on disk, is made when the database is back, spares a value saved
after it; and when the disk will not keep it either, it is refused and hides nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import StorageUnavailable
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from services.composition import register_write_kinds
from tests.support.memory_stack import (
    MemoryStack,
    create_companion,
    create_user,
    key_versions,
    memory_stack,
)
from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import PostgresProcess

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class TickingClock:
    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> datetime:
        self.ticks += 1
        return START + timedelta(seconds=self.ticks)


@contextmanager
def postgres_down(postgres: PostgresProcess) -> Iterator[None]:
    postgres.stop()
    try:
        yield
    finally:
        postgres.start()


@pytest.fixture
async def stack(
    db_dsn: str, make_settings, tmp_path
) -> AsyncIterator[MemoryStack]:
    settings = make_settings(batch_spool_dir=tmp_path / "spool")
    pool = await ConnectionPool.create(settings, dsn=db_dsn)
    try:
        async with OpenAIStubServer() as server, memory_stack(
            pool=pool, settings=settings, server=server, clock=TickingClock()
        ) as built:
            yield built
    finally:
        await pool.aclose()


async def a_person(stack: MemoryStack) -> tuple[uuid.UUID, uuid.UUID]:
    user = await create_user(stack.pool)
    return user, await create_companion(stack.pool, user, "Veda")


async def test_a_forget_while_postgres_is_down_holds_and_spares_a_value_saved_after_it(
    stack: MemoryStack, postgres: PostgresProcess
) -> None:
    user, companion = await a_person(stack)
    await stack.memory.remember(user, companion, "PERSON", "partner", "Alex")
    with postgres_down(postgres):
        done = await stack.memory.forget(user, companion, key="partner")
        assert done.deferred and done.versions == 0
        assert stack.memory.forgotten.version(user) > 0
    # Back before any replay: a new value is saved (the old one is still in the database).
    await stack.memory.remember(user, companion, "PERSON", "partner", "Robin")
    assert [m.value for m in await stack.memory.current(user, companion)] == ["Robin"]
    stored = await key_versions(stack.pool, user, companion, "PERSON", "partner")
    assert [m.value for m in stored] == ["Robin", "Alex"]

    successor = DatabaseBatcher(pool=stack.pool, settings=stack.settings)
    register_write_kinds(successor)
    await successor.start()  # what the next worker does: replay the spool
    await successor.aclose()
    assert successor.stats()["replayed"] == 1
    stored = await key_versions(stack.pool, user, companion, "PERSON", "partner")
    assert [m.value for m in stored] == ["Robin"]


async def test_a_forget_neither_the_database_nor_the_disk_takes_is_refused_and_hides_nothing(
    stack: MemoryStack, postgres: PostgresProcess, tmp_path
) -> None:
    user, companion = await a_person(stack)
    await stack.memory.remember(user, companion, "PERSON", "partner", "Alex")
    # The spool directory cannot be made: a file is where it should be.
    stack.settings.batch_spool_dir.write_text("in the way")
    with postgres_down(postgres), pytest.raises(StorageUnavailable) as refused:
        await stack.memory.forget(user, companion, key="partner")
    assert refused.value.retryable and "try again" in refused.value.suggestion
    assert stack.memory.forgotten.version(user) == 0
    assert [m.value for m in await stack.memory.current(user, companion)] == ["Alex"]
