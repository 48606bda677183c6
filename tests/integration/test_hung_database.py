"""A hung database (every Postgres process SIGSTOPped: connections open, nothing answers).

It must degrade the way a dead one does: every wait ends with a clear "try again in a moment",
nothing waits on the server for ever, and the database is usable again once it thaws.
"""

from __future__ import annotations

import asyncio

import pytest

from core.deadline import Deadline
from core.errors import StorageUnavailable
from infrastructure.connection_pool import TRY_AGAIN, ConnectionPool
from tests.conftest import PostgresFreezer

pytestmark = pytest.mark.integration


async def test_a_query_on_a_frozen_database_ends_with_try_again_and_the_pool_recovers(
    make_settings, db_dsn: str, postgres_freezer: PostgresFreezer
) -> None:
    settings = make_settings(
        db_command_timeout_s=0.5, db_acquire_timeout_s=0.5, db_pool_min_size=2
    )
    pool = await ConnectionPool.create(settings, dsn=db_dsn)
    try:
        assert await pool.fetchval("select 1") == 1
        postgres_freezer.freeze()
        with pytest.raises(StorageUnavailable) as caught:
            await pool.fetchval("select 2")
        assert caught.value.retryable and caught.value.suggestion == TRY_AGAIN
        # A deadline cuts a whole use of a connection short, whatever the statement's timeout.
        with pytest.raises(StorageUnavailable):
            async with pool.acquire(deadline=Deadline.after(0.2)) as conn:
                await conn.execute("select 3", timeout=3600)
        # No connection is left to hand out and a new one cannot open: the wait is bounded.
        with pytest.raises(StorageUnavailable):
            await pool.fetchval("select 4")
        postgres_freezer.thaw()
        assert await pool.fetchval("select 5") == 5
        assert pool.stats()["dropped"] >= 2
    finally:
        postgres_freezer.thaw()
        await pool.aclose()


async def test_closing_a_pool_on_a_frozen_database_ends_by_its_deadline(
    make_settings, db_dsn: str, postgres_freezer: PostgresFreezer
) -> None:
    settings = make_settings(db_pool_min_size=3)
    pool = await ConnectionPool.create(settings, dsn=db_dsn)
    held = asyncio.Event()

    async def hold_a_connection() -> None:
        async with pool.acquire() as conn:
            held.set()
            await conn.execute("select pg_sleep(3600)", timeout=3600)

    holder = asyncio.create_task(hold_a_connection())
    await held.wait()
    postgres_freezer.freeze()
    # A graceful close waits for the held connection and for the server: neither comes.
    await pool.aclose(Deadline.after(0.5))
    # The close dropped the connection under the hung statement.
    with pytest.raises(StorageUnavailable):
        await holder
