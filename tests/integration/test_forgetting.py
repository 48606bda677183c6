"""A forget while Postgres is down (stopped: connections refused) or frozen (SIGSTOP: nothing
answers), over the real batcher and spool: it holds at once, waits on disk, is made when the
database is back, spares a value saved after it, is in the person's export and goes with their
erasure; and when the disk will not keep it either, it is refused and hides nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from core.config import Settings
from core.errors import StorageUnavailable
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from services.composition import register_write_kinds
from services.memory.forgetting import OLDER_KINDS
from tests.conftest import PostgresFreezer
from tests.support.clocks import TickingClock
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


@asynccontextmanager
async def a_stack(settings: Settings, db_dsn: str) -> AsyncIterator[MemoryStack]:
    pool = await ConnectionPool.create(settings, dsn=db_dsn)
    try:
        async with OpenAIStubServer() as server, memory_stack(
            pool=pool, settings=settings, server=server,
            clock=TickingClock(START, timedelta(seconds=1)),
        ) as built:
            yield built
    finally:
        await pool.aclose()


@pytest.fixture
async def stack(db_dsn: str, make_settings, tmp_path) -> AsyncIterator[MemoryStack]:
    async with a_stack(make_settings(batch_spool_dir=tmp_path / "spool"), db_dsn) as built:
        yield built


def spooled_lines(stack: MemoryStack) -> str:
    """The pending spool files' text (not the kept ones, such as the erasure records)."""
    return "".join(
        path.read_text() for path in stack.settings.batch_spool_dir.iterdir()
        if path.name.startswith("spool-")
    )


async def replay_as_the_next_worker(stack: MemoryStack) -> int:
    """What the next worker does at its start: replay the spool; returns how many it ran."""
    successor = DatabaseBatcher(pool=stack.pool, settings=stack.settings)
    register_write_kinds(successor)
    await successor.start()
    await successor.aclose()
    replayed: int = successor.stats()["replayed"]
    return replayed


async def a_person(stack: MemoryStack) -> tuple[uuid.UUID, uuid.UUID]:
    user = await create_user(stack.pool)
    return user, await create_companion(stack.pool, user, "Veda")


async def test_a_forget_while_postgres_is_down_holds_and_spares_a_value_saved_after_it(
    stack: MemoryStack, postgres: PostgresProcess
) -> None:
    user, companion = await a_person(stack)
    await stack.memory.remember(user, companion, "PERSON", "partner", "Alex")
    with postgres.down():
        done = await stack.memory.forget(user, companion, key="partner")
        assert done.deferred and done.versions == 0
        assert stack.memory.forgotten.version(user) > 0
    stats = await stack.memory.stats()
    assert (stats["forgets_deferred"], stats["forgotten_key_notes"]) == (1, 1)
    # The delete, and the clearing of the profile summaries that may hold the value.
    assert stack.batcher.stats()["spooled"] == 2
    # Back before any replay: a new value is saved (the old one is still in the database).
    await stack.memory.remember(user, companion, "PERSON", "partner", "Robin")
    assert [m.value for m in await stack.memory.current(user, companion)] == ["Robin"]
    stored = await key_versions(stack.pool, user, companion, "PERSON", "partner")
    assert [m.value for m in stored] == ["Robin", "Alex"]

    assert await replay_as_the_next_worker(stack) == 2
    stored = await key_versions(stack.pool, user, companion, "PERSON", "partner")
    assert [m.value for m in stored] == ["Robin"]


async def test_a_forget_while_postgres_is_frozen_waits_on_disk_and_holds_until_it_is_made(
    db_dsn: str, make_settings, tmp_path, postgres_freezer: PostgresFreezer
) -> None:
    settings = make_settings(
        batch_spool_dir=tmp_path / "spool", db_command_timeout_s=0.5, db_acquire_timeout_s=0.5
    )
    async with a_stack(settings, db_dsn) as stack:
        user, companion = await a_person(stack)
        await stack.memory.remember(user, companion, "PERSON", "partner", "Alex")
        job = await stack.memory.remember(user, companion, "FACT", "job", "teacher")
        postgres_freezer.freeze()
        # The delete reaches a server that does not answer: it ends with the command timeout.
        done = await stack.memory.forget(user, companion, key="partner")
        assert done.deferred
        postgres_freezer.thaw()
        assert [m.id for m in await stack.memory.current(user, companion)] == [job.id]
        await replay_as_the_next_worker(stack)
        assert await key_versions(stack.pool, user, companion, "PERSON", "partner") == []
        assert [m.id for m in await stack.memory.current(user, companion)] == [job.id]


async def test_a_forget_by_id_while_postgres_is_down_hides_that_memory_until_it_is_made(
    stack: MemoryStack, postgres: PostgresProcess
) -> None:
    user, companion = await a_person(stack)
    partner = await stack.memory.remember(user, companion, "PERSON", "partner", "Alex")
    job = await stack.memory.remember(user, companion, "FACT", "job", "teacher")
    with postgres.down():
        done = await stack.memory.forget(user, companion, memory_id=partner.id)
        assert done.deferred
    # Back before any replay: the row is still there, and this process does not serve it.
    assert [m.id for m in await stack.memory.current(user, companion)] == [job.id]
    assert len(await key_versions(stack.pool, user, companion, "PERSON", "partner")) == 1

    assert await replay_as_the_next_worker(stack) == 2
    assert await key_versions(stack.pool, user, companion, "PERSON", "partner") == []
    assert [m.id for m in await stack.memory.current(user, companion)] == [job.id]


async def test_a_waiting_forget_is_in_the_export_and_goes_with_the_persons_erasure(
    stack: MemoryStack, postgres: PostgresProcess
) -> None:
    user, companion = await a_person(stack)
    await stack.memory.remember(user, companion, "PERSON", "partner", "Alex")
    with postgres.down():
        assert (await stack.memory.forget(user, companion, key="partner")).deferred
    assert "partner" in spooled_lines(stack)

    exported = (await stack.memory.export(user))["pending"]["pending"]
    assert [(e["op"], e["values"].get("key")) for e in exported] == [
        ("memory.forget_key", "partner"), ("memory.forget_profiles", None)
    ]
    # What an erasure of the person does first (PersonData.erase): the forget and its
    # profile clearing go from the spool.
    assert await stack.memory.erase_pending(user) == 2
    assert str(user) not in spooled_lines(stack)
    assert "partner" not in spooled_lines(stack)
    assert (await stack.memory.export(user))["pending"]["pending"] == []
    assert await replay_as_the_next_worker(stack) == 0


async def test_a_forget_neither_the_database_nor_the_disk_takes_is_refused_and_hides_nothing(
    stack: MemoryStack, postgres: PostgresProcess, tmp_path
) -> None:
    user, companion = await a_person(stack)
    await stack.memory.remember(user, companion, "PERSON", "partner", "Alex")
    # The spool directory cannot be made: a file is where it should be.
    stack.settings.batch_spool_dir.write_text("in the way")
    with postgres.down(), pytest.raises(StorageUnavailable) as refused:
        await stack.memory.forget(user, companion, key="partner")
    assert refused.value.retryable and "try again" in refused.value.suggestion
    assert stack.memory.forgotten.version(user) == 0
    assert [m.value for m in await stack.memory.current(user, companion)] == ["Alex"]


async def forgotten_keys(stack: MemoryStack, user: uuid.UUID) -> list[tuple[str, datetime]]:
    rows = await stack.pool.fetch(
        "select key, forgotten_at from public.forgotten_keys where user_id = $1 order by key",
        user,
    )
    return [(r["key"], r["forgotten_at"]) for r in rows]


async def test_forgets_made_from_the_spool_record_their_keys_for_every_later_consolidation(
    stack: MemoryStack, postgres: PostgresProcess
) -> None:
    user, companion = await a_person(stack)
    partner = await stack.memory.remember(user, companion, "PERSON", "partner", "Alex")
    job = await stack.memory.remember(user, companion, "FACT", "job", "teacher")
    with postgres.down():
        assert (await stack.memory.forget(user, companion, key="partner")).deferred
        assert (await stack.memory.forget(user, companion, memory_id=job.id)).deferred
    assert await forgotten_keys(stack, user) == []

    # Each forget with the clearing of the profile summaries that may hold its value.
    assert await replay_as_the_next_worker(stack) == 4
    noted = dict(await forgotten_keys(stack, user))
    assert sorted(noted) == ["job", "partner"]
    # Stamped with the time of the forget (the service's clock), not of the replay.
    assert job.created_at < noted["partner"] < noted["job"] < START + timedelta(minutes=1)
    assert partner.created_at < job.created_at
    assert await stack.memory.current(user, companion) == []


async def test_forget_lines_spooled_before_the_upgrade_still_replay(
    stack: MemoryStack,
) -> None:
    user, companion = await a_person(stack)
    await stack.memory.remember(user, companion, "PERSON", "partner", "Alex")
    job = await stack.memory.remember(user, companion, "FACT", "job", "teacher")
    # A build from before the forgotten keys spooled these (version 1 of each kind).
    before = DatabaseBatcher(pool=stack.pool, settings=stack.settings)
    (key_v1,), (id_v1,) = OLDER_KINDS["memory.forget_key"], OLDER_KINDS["memory.forget_id"]
    before.register(key_v1)
    before.register(id_v1)
    await before.spool(key_v1.op, (user, companion, "partner", START + timedelta(hours=1)))
    await before.spool(id_v1.op, (job.id, user, companion))

    assert await replay_as_the_next_worker(stack) == 2
    assert await key_versions(stack.pool, user, companion, "PERSON", "partner") == []
    assert await key_versions(stack.pool, user, companion, "FACT", "job") == []
