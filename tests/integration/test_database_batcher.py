from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from core.config import Settings
from core.errors import InvalidInput
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.spool import REJECTED_FILE, Spool
from infrastructure.spool_codec import SpoolEntry
from infrastructure.write_kinds import WriteKind
from tests.support.servers import PostgresProcess

pytestmark = pytest.mark.integration

PROBE_TABLE = """
create table batch_probe (
  id uuid primary key,
  n integer not null check (n >= 0),
  label text,
  at timestamptz,
  day date,
  embedding vector(3)
)
"""
PROBE_INSERT = (
    "insert into batch_probe (id, n, label, at, day, embedding) "
    "values ($1, $2, $3, $4, $5, $6) on conflict (id) do nothing"
)
USER_INSERT = (
    "insert into public.users (id, display_name, onboarding_state) "
    "values ($1, $2, $3) on conflict (id) do nothing"
)
PROBE = WriteKind.of(
    "probe", PROBE_INSERT, "id:uuid n:int label:text? at:time? day:date? embedding:vector?"
)
USER = WriteKind.of("user", USER_INSERT, "id:uuid display_name:text? onboarding_state:text")
# Long enough that only size, flush() and aclose() trigger writes unless a test wants the timer.
NO_TIMER_MS = 3_600_000
# Bounds a test that would otherwise hang; nothing is timed.
GIVE_UP_S = 120.0


def probe_row(n: int) -> tuple[Any, ...]:
    return (
        uuid.uuid4(),
        n,
        f"item {n}",
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n),
        date(2026, 1, 1) + timedelta(days=n % 365),
        np.array([n, 0.5, -1.0], dtype=np.float32),
    )


async def make_batcher(pool: ConnectionPool, settings: Settings, **kwargs: Any) -> DatabaseBatcher:
    batcher = DatabaseBatcher(pool=pool, settings=settings, **kwargs)
    batcher.register(PROBE)
    return batcher


@pytest.fixture
async def probe_table(pool: ConnectionPool) -> None:
    await pool.execute(PROBE_TABLE)


async def probe_count(pool: ConnectionPool) -> int:
    return int(await pool.fetchval("select count(*) from batch_probe"))


async def wait_for_count(pool: ConnectionPool, expected: int, give_up_after_s: float = 60) -> int:
    """Poll until `expected` rows exist; the deadline only bounds a failing test."""
    deadline = time.monotonic() + give_up_after_s
    count = await probe_count(pool)
    while count != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        count = await probe_count(pool)
    return count


async def test_a_thousand_writes_land_in_a_handful_of_round_trips(
    pool: ConnectionPool, probe_table: None, make_settings
) -> None:
    batcher = await make_batcher(
        pool, make_settings(batch_max_size=200, batch_flush_interval_ms=NO_TIMER_MS)
    )
    await batcher.start()
    rows = [probe_row(n) for n in range(1000)]
    for row in rows:
        batcher.enqueue("probe", row)
    await batcher.flush()

    assert await probe_count(pool) == 1000
    stats = batcher.stats()
    assert stats["items_enqueued"] == stats["items_written"] == 1000
    assert stats["round_trips"] <= 10
    assert stats["round_trips_saved"] == 1000 - stats["round_trips"]
    assert stats["queue_depth"] == 0 and stats["spooled"] == 0 and stats["failures"] == 0
    stored = await pool.fetchrow("select * from batch_probe where id = $1", rows[7][0])
    assert stored is not None
    assert (stored["n"], stored["label"], stored["at"], stored["day"]) == rows[7][1:5]
    assert np.allclose(stored["embedding"], rows[7][5])
    await batcher.aclose()


async def test_the_flush_loop_writes_on_its_own_and_reports_queue_age(
    pool: ConnectionPool, probe_table: None, make_settings
) -> None:
    batcher = await make_batcher(pool, make_settings(batch_flush_interval_ms=20))
    batcher.enqueue("probe", probe_row(1))
    stats = batcher.stats()
    assert stats["queue_depth"] == 1 and stats["oldest_item_age_ms"] >= 0
    await batcher.start()
    for n in range(2, 6):
        batcher.enqueue("probe", probe_row(n))
    assert await wait_for_count(pool, 5) == 5
    assert batcher.stats()["state"] == "running"
    await batcher.aclose()
    assert batcher.stats()["state"] == "closed"


async def test_writes_survive_postgres_stopping_and_starting_mid_flush(
    pool: ConnectionPool, probe_table: None, make_settings, postgres: PostgresProcess
) -> None:
    batcher = await make_batcher(
        pool,
        make_settings(batch_max_size=50, batch_flush_interval_ms=20, batch_max_attempts=50),
    )
    await batcher.start()
    enqueued = 0

    def write_some() -> None:
        nonlocal enqueued
        for _ in range(10):
            batcher.enqueue("probe", probe_row(enqueued))
            enqueued += 1

    # Keep writing through the whole outage, as a live session would: while the server stops,
    # while it is down until a flush has failed, and while it starts again.
    give_up = time.monotonic() + GIVE_UP_S  # bounds a failing test; nothing is timed
    stopping = asyncio.ensure_future(asyncio.to_thread(postgres.stop))
    try:
        while not stopping.done() or batcher.stats()["retries"] == 0:
            assert time.monotonic() < give_up, "no flush failed while Postgres was down"
            write_some()
            await asyncio.sleep(0.01)
        await stopping
    finally:
        starting = asyncio.ensure_future(asyncio.to_thread(postgres.start))
        while not starting.done():
            write_some()
            await asyncio.sleep(0.01)
        await starting
    for _ in range(100):
        batcher.enqueue("probe", probe_row(enqueued))
        enqueued += 1
    await batcher.flush()

    assert await probe_count(pool) == enqueued
    stats = batcher.stats()
    assert stats["retries"] > 0
    assert stats["items_written"] == enqueued
    assert stats["spooled"] == 0 and stats["rejected"] == 0 and stats["lost"] == 0
    await batcher.aclose()


async def test_exhausted_retries_spool_to_disk_and_a_new_batcher_replays_them_once(
    pool: ConnectionPool, probe_table: None, make_settings, postgres: PostgresProcess,
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(batch_max_attempts=2, batch_flush_interval_ms=20)
    first = await make_batcher(pool, settings)
    await first.start()
    rows = [probe_row(n) for n in range(30)]
    caplog.set_level(logging.DEBUG, logger="infrastructure")
    with postgres.down():
        for row in rows:
            first.enqueue("probe", row)
        await first.flush()
        stats = first.stats()
        assert stats["spooled"] == 30 and stats["items_written"] == 0
        assert stats["failures"] >= 1 and stats["retries"] >= 1
        assert stats["last_error"] in {"ConnectionRefusedError", "OSError", "StorageUnavailable"}
    assert "item 3" not in caplog.text and str(rows[3][0]) not in caplog.text

    # The loop survived the failed flush: new writes still go out on their own.
    late = probe_row(100)
    first.enqueue("probe", late)
    assert await wait_for_count(pool, 1) == 1
    await first.aclose()

    spooled_files = Spool(settings.batch_spool_dir).pending_files()
    assert spooled_files
    saved = tmp_path / "saved"
    saved.mkdir()
    for path in spooled_files:
        shutil.copy(path, saved / path.name)

    second = await make_batcher(pool, settings)
    await second.start()
    assert second.stats()["replayed"] == 30
    assert await probe_count(pool) == 31
    assert Spool(settings.batch_spool_dir).pending_files() == []
    stored = await pool.fetchrow("select * from batch_probe where id = $1", rows[5][0])
    assert stored is not None
    assert (stored["n"], stored["label"], stored["at"], stored["day"]) == rows[5][1:5]
    assert np.allclose(stored["embedding"], rows[5][5])
    await second.aclose()

    # The same file replayed again (say, a crash before it was removed) adds nothing.
    for path in saved.iterdir():
        shutil.copy(path, settings.batch_spool_dir / path.name)
    third = await make_batcher(pool, settings)
    await third.start()
    assert third.stats()["replayed"] == 30
    assert await probe_count(pool) == 31
    await third.aclose()


async def test_two_batchers_starting_together_replay_each_spool_file_once(
    pool: ConnectionPool, probe_table: None, make_settings
) -> None:
    settings = make_settings(batch_flush_interval_ms=NO_TIMER_MS)
    spool = Spool(settings.batch_spool_dir)
    for f in range(20):
        spool.write([SpoolEntry("probe", 1, PROBE.digest, probe_row(f * 10 + i))
                     for i in range(10)])
    left, right = await make_batcher(pool, settings), await make_batcher(pool, settings)

    await asyncio.gather(left.start(), right.start())

    assert left.stats()["replayed"] + right.stats()["replayed"] == 200
    assert await probe_count(pool) == 200
    assert spool.pending_files() == []
    await asyncio.gather(left.aclose(), right.aclose())


async def test_aclose_drains_everything_including_writes_enqueued_while_draining(
    pool: ConnectionPool, probe_table: None, make_settings, db_dsn: str
) -> None:
    settings = make_settings(batch_max_size=50, batch_flush_interval_ms=NO_TIMER_MS)
    batcher = await make_batcher(pool, settings)
    await batcher.start()
    rows = [probe_row(n) for n in range(500)]

    # An uncommitted row with the first item's id holds the first batch mid-flight.
    blocker = await asyncpg.connect(db_dsn)
    try:
        hold = blocker.transaction()
        await hold.start()
        await blocker.execute("insert into batch_probe (id, n) values ($1, 0)", rows[0][0])
        for row in rows:
            batcher.enqueue("probe", row)
        closer = asyncio.create_task(batcher.aclose())
        waiting = 0
        while waiting == 0 and not closer.done():
            await asyncio.sleep(0.01)
            waiting = await pool.fetchval(
                "select count(*) from pg_stat_activity "
                "where datname = current_database() and wait_event_type = 'Lock'"
            )
        assert waiting == 1 and batcher.stats()["state"] == "closing"
        for n in range(500, 600):
            batcher.enqueue("probe", probe_row(n))
        await hold.rollback()
    finally:
        await blocker.close()
    await closer

    assert await probe_count(pool) == 600
    stats = batcher.stats()
    assert stats["items_written"] == 600 and stats["queue_depth"] == 0
    assert stats["state"] == "closed" and stats["spooled"] == 0

    # A write arriving after shutdown is kept on disk for the next start, not dropped.
    batcher.enqueue("probe", probe_row(600))
    assert batcher.stats()["spooled"] == 1
    assert len(Spool(settings.batch_spool_dir).pending_files()) == 1
    successor = await make_batcher(pool, settings)
    await successor.start()
    assert await probe_count(pool) == 601
    await successor.aclose()


async def test_a_bad_item_is_reported_without_losing_the_good_items_in_its_batch(
    pool: ConnectionPool, make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(batch_flush_interval_ms=NO_TIMER_MS)
    batcher = DatabaseBatcher(pool=pool, settings=settings)
    batcher.register(USER)
    await batcher.start()
    good = [uuid.uuid4() for _ in range(9)]
    bad = uuid.uuid4()
    caplog.set_level(logging.DEBUG, logger="infrastructure")
    for i, user_id in enumerate(good):
        batcher.enqueue("user", (user_id, f"Person {i}", "new"))
        if i == 4:
            batcher.enqueue("user", (bad, "Secret Name", "bogus"))
    await batcher.flush()

    stored = {r["id"] for r in await pool.fetch("select id from public.users")}
    assert stored == set(good)
    stats = batcher.stats()
    assert stats["rejected"] == 1 and stats["items_written"] == 9
    assert stats["last_error"] == "CheckViolationError"
    assert stats["spooled"] == 0
    [record] = [
        json.loads(line)
        for line in (settings.batch_spool_dir / REJECTED_FILE).read_text().splitlines()
    ]
    assert record["op"] == "user" and record["error"] == "CheckViolationError"
    assert record["args"][0] == {"$uuid": str(bad)}
    assert "users_onboarding_state_check" in caplog.text
    assert "Secret Name" not in caplog.text and str(bad) not in caplog.text
    assert Spool(settings.batch_spool_dir).pending_files() == []

    # The batcher carries on with full batches afterwards.
    later = [uuid.uuid4() for _ in range(5)]
    for user_id in later:
        batcher.enqueue("user", (user_id, None, "done"))
    await batcher.flush()
    count = await pool.fetchval("select count(*) from public.users where id = any($1)", later)
    assert count == 5
    await batcher.aclose()


async def test_overflow_past_the_high_water_mark_goes_to_disk_and_comes_back(
    pool: ConnectionPool, probe_table: None, make_settings
) -> None:
    settings = make_settings(batch_max_size=50, batch_flush_interval_ms=NO_TIMER_MS)
    batcher = await make_batcher(pool, settings, high_water=100)
    for n in range(150):
        batcher.enqueue("probe", probe_row(n))
    assert batcher.stats()["queue_depth"] == 100

    await batcher.flush()
    assert await probe_count(pool) == 100
    assert batcher.stats()["spooled"] == 50
    await batcher.aclose()

    successor = await make_batcher(pool, settings)
    await successor.start()
    assert successor.stats()["replayed"] == 50
    assert await probe_count(pool) == 150
    await successor.aclose()


async def test_enqueue_refuses_writes_no_retry_could_fix(
    pool: ConnectionPool, make_settings
) -> None:
    batcher = await make_batcher(pool, make_settings())
    with pytest.raises(InvalidInput, match="not registered"):
        batcher.enqueue("nope", ())
    with pytest.raises(InvalidInput, match="takes 6 arguments"):
        batcher.enqueue("probe", (uuid.uuid4(), 1))
    with pytest.raises(InvalidInput, match="must be vector"):
        batcher.enqueue("probe", (uuid.uuid4(), 1, "x", None, None, {1, 2}))
    with pytest.raises(InvalidInput, match="another statement"):
        batcher.register(WriteKind.of("probe", "insert into batch_probe (id) values ($1)",
                                      "id:uuid"))
    assert batcher.stats()["items_enqueued"] == 0
    await batcher.aclose()
