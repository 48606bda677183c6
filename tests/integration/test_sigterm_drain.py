"""SIGTERM in the middle of heavy writing: the job drains its writes, and nothing is lost.

A child process (tests/support/heavy_writer.py) builds the real services over the test
database and logs turns as fast as it can. It gets SIGTERM mid-stream and runs the agent's
shutdown path (`livekit_layer.job.end_job`). Then the rows are counted: every message and every
episodic memory it logged is in Postgres, either written by the drain or spooled by it and
replayed by the next batcher to start. Where the shutdown cannot finish (a hung LLM), the
child is killed as LiveKit kills a job past its deadline, at a moment the test chooses.
How long a drain takes against LiveKit's 10 s budget is measured in bench/shutdown_drain.py.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.spool import Spool
from services.composition import register_write_kinds
from tests.conftest import PostgresFreezer
from tests.support.child_process import LIVEKIT_KILLS_AFTER_S, Child, start_child
from tests.support.servers import PostgresProcess

pytestmark = pytest.mark.integration


async def start_writer(dsn: str, spool: Path, user_id: uuid.UUID, **options: Any) -> Child:
    args = ["--dsn", dsn, "--spool", str(spool), "--user-id", str(user_id)]
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        args += [flag] if value is True else [flag, str(value)]
    return await start_child("tests.support.heavy_writer", args, spool.parent / "writer.log")


async def logged_rows(pool: ConnectionPool, user_id: uuid.UUID) -> tuple[int, int]:
    row = await pool.fetchrow(
        "select (select count(*) from public.messages where user_id = $1) as messages, "
        "(select count(*) from public.memories where user_id = $1 and kind = 'episodic') "
        "as episodes",
        user_id,
    )
    assert row is not None
    return int(row["messages"]), int(row["episodes"])


async def replay_spool(pool: ConnectionPool, settings: Settings) -> int:
    """What the next job's batcher does at start: replay the spool it finds."""
    successor = DatabaseBatcher(pool=pool, settings=settings)
    register_write_kinds(successor)
    await successor.start()
    replayed = int(successor.stats()["replayed"])
    await successor.aclose()
    return replayed


async def test_sigterm_during_heavy_writing_drains_every_write_to_postgres(
    pool: ConnectionPool, db_dsn: str, tmp_path: Path
) -> None:
    user_id = uuid.uuid4()
    child = await start_writer(db_dsn, tmp_path / "spool", user_id, signal_after=3_000)
    await child.wait_for("writing")
    child.proc.send_signal(signal.SIGTERM)
    code, done = await child.finish()

    assert code == 0
    # It was cut off mid-stream, with writes still queued and being embedded.
    assert done["messages"] > 3_000
    assert done["queued_at_signal"] > 0 and done["pending_embeddings"] > 0, done
    batcher = done["batcher"]
    assert batcher["lost"] == 0 and batcher["rejected"] == 0 and batcher["queue_depth"] == 0
    assert batcher["spooled"] == 0 and Spool(tmp_path / "spool").pending_files() == []
    assert await logged_rows(pool, user_id) == (done["messages"], done["messages"])
    ended = await pool.fetchrow(
        "select ended_at, turn_count, summary from public.sessions where id = $1",
        uuid.UUID(done["session_id"]),
    )
    assert ended is not None and ended["ended_at"] is not None
    assert ended["turn_count"] == done["messages"] and ended["summary"]


async def test_sigterm_with_postgres_down_spools_and_the_next_start_replays(
    db_dsn: str, tmp_path: Path, postgres: PostgresProcess, make_settings
) -> None:
    user_id = uuid.uuid4()
    spool_dir = tmp_path / "spool"
    child = await start_writer(db_dsn, spool_dir, user_id, signal_after=3_000)
    try:
        await child.wait_for("writing")
        await asyncio.to_thread(postgres.stop)
        try:
            # The writer goes on with the database gone until a flush has failed.
            await child.wait_for("flush_failed")
            child.proc.send_signal(signal.SIGTERM)
            code, done = await child.finish()
        finally:
            await asyncio.to_thread(postgres.start)
    finally:
        if child.proc.returncode is None:
            await child.kill()

    assert code == 0
    batcher = done["batcher"]
    assert batcher["lost"] == 0 and batcher["spooled"] > 0, batcher
    assert Spool(spool_dir).pending_files()

    settings = make_settings(batch_spool_dir=spool_dir)
    # The fixture's pool lost its connections with the server: start afresh, as a new job does.
    fresh = await ConnectionPool.create(settings, dsn=db_dsn)
    try:
        replayed = await replay_spool(fresh, settings)
        assert replayed == batcher["spooled"]
        assert await logged_rows(fresh, user_id) == (done["messages"], done["messages"])
    finally:
        await fresh.aclose()
    assert Spool(spool_dir).pending_files() == []


async def test_sigterm_with_postgres_frozen_loses_nothing_and_the_spool_replays_after_it_thaws(
    db_dsn: str, tmp_path: Path, postgres_freezer: PostgresFreezer, make_settings
) -> None:
    """A hung database (SIGSTOP: connections stay open, nothing answers) at SIGTERM: the job
    writes what it can, spools the rest by its own deadline and exits before LiveKit's kill."""
    user_id = uuid.uuid4()
    spool_dir = tmp_path / "spool"
    child = await start_writer(db_dsn, spool_dir, user_id, signal_after=3_000)
    try:
        await child.wait_for("writing")
        postgres_freezer.freeze()
        try:
            # The writer goes on against the hung database until a flush has failed (a
            # statement timed out), with writes in flight and queued behind it.
            await child.wait_for("flush_failed")
            child.proc.send_signal(signal.SIGTERM)
            # LiveKit's kill comes this long after its stop request; it must not be needed.
            code = await child.exit_or_kill(LIVEKIT_KILLS_AFTER_S)
        finally:
            postgres_freezer.thaw()
    finally:
        if child.proc.returncode is None:
            await child.kill()

    assert code == 0, child.log.read_text(errors="replace")[-2000:]
    done = await child.wait_for("done")
    batcher = done["batcher"]
    assert batcher["lost"] == 0 and batcher["queue_depth"] == 0, batcher
    assert batcher["spooled"] > 0 and batcher["set_aside"] == 0, batcher

    settings = make_settings(batch_spool_dir=spool_dir)
    fresh = await ConnectionPool.create(settings, dsn=db_dsn)
    try:
        assert await replay_spool(fresh, settings) == batcher["spooled"]
        assert await logged_rows(fresh, user_id) == (done["messages"], done["messages"])
        ended = await fresh.fetchrow(
            "select ended_at, turn_count, summary from public.sessions where id = $1",
            uuid.UUID(done["session_id"]),
        )
    finally:
        await fresh.aclose()
    assert ended is not None and ended["ended_at"] is not None
    assert ended["turn_count"] == done["messages"] and ended["summary"]
    assert Spool(spool_dir).pending_files() == []


async def test_a_job_killed_while_its_summary_hangs_loses_the_summary_but_no_logged_turn(
    pool: ConnectionPool, db_dsn: str, tmp_path: Path
) -> None:
    user_id = uuid.uuid4()
    # Every chat call (the summary at close) is held: the shutdown can never finish.
    child = await start_writer(db_dsn, tmp_path / "spool", user_id, signal_after=1_000,
                               hold_llm=True)
    try:
        opened = await child.wait_for("open")
        await child.wait_for("writing")
        child.proc.send_signal(signal.SIGTERM)
        # The flush loop keeps writing while the summary waits: everything logged lands.
        held = await child.wait_for("held")
    finally:
        code = await child.kill()

    assert code == -signal.SIGKILL
    assert await logged_rows(pool, user_id) == (held["messages"], held["messages"])
    summary = await pool.fetchval(
        "select summary from public.sessions where id = $1", uuid.UUID(opened["session_id"])
    )
    assert summary is None
    assert Spool(tmp_path / "spool").pending_files() == []
