"""SIGTERM in the middle of heavy writing: the job drains its writes, and nothing is lost.

A child process (tests/support/heavy_writer.py) builds the real services over the test
database and logs turns as fast as it can. It gets SIGTERM mid-stream and runs the agent's
shutdown path (`companion.close(wait=True)`, then `Services.aclose()`) under LiveKit's job
shutdown deadline, past which it dies without cleanup, as LiveKit's kill would leave it. Then
the rows are counted: every message and every episodic memory it logged is in Postgres, either
written by the drain or spooled by it and replayed by the next batcher to start.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.spool import Spool
from tests.support.servers import PostgresProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GIVE_UP_S = 120.0
OUTAGE_BEFORE_SIGNAL_S = 2.0


class Child:
    """The heavy writer, read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def next_event(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), GIVE_UP_S)
            if not line:
                stderr = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"the writer exited early: {stderr.decode()[-2000:]}")
            if line.startswith(b"{"):
                event = json.loads(line)
                self.events.append(event)
                return event

    async def finish(self) -> tuple[int, dict[str, Any]]:
        event = await self.next_event()
        code = await asyncio.wait_for(self.proc.wait(), GIVE_UP_S)
        return code, event


async def start_writer(dsn: str, spool: Path, user_id: uuid.UUID, **options: Any) -> Child:
    args = [sys.executable, "-m", "tests.support.heavy_writer", "--dsn", dsn,
            "--spool", str(spool), "--user-id", str(user_id)]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    return Child(proc)


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
    await successor.start()
    replayed = int(successor.stats()["replayed"])
    await successor.aclose()
    return replayed


async def test_sigterm_during_heavy_writing_drains_every_write_to_postgres(
    pool: ConnectionPool, db_dsn: str, tmp_path: Path
) -> None:
    user_id = uuid.uuid4()
    child = await start_writer(db_dsn, tmp_path / "spool", user_id, signal_after=3_000)
    assert (await child.next_event())["event"] == "open"
    writing = await child.next_event()
    assert writing["event"] == "writing", child.events
    child.proc.send_signal(signal.SIGTERM)
    code, done = await child.finish()

    assert code == 0 and done["event"] == "done", child.events
    # It was cut off mid-stream, with writes still queued or being embedded.
    assert done["messages"] >= 3_000
    assert done["queued_at_signal"] + done["pending_embeddings"] > 0, done
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


async def test_sigterm_with_postgres_down_spools_within_the_deadline_and_the_next_start_replays(
    db_dsn: str, tmp_path: Path, postgres: PostgresProcess, make_settings
) -> None:
    user_id = uuid.uuid4()
    spool_dir = tmp_path / "spool"
    child = await start_writer(db_dsn, spool_dir, user_id, signal_after=3_000)
    try:
        assert (await child.next_event())["event"] == "open"
        assert (await child.next_event())["event"] == "writing", child.events
        await asyncio.to_thread(postgres.stop)
        try:
            # The writer goes on for a while with the database gone: its queue grows.
            await asyncio.sleep(OUTAGE_BEFORE_SIGNAL_S)
            child.proc.send_signal(signal.SIGTERM)
            code, done = await child.finish()
        finally:
            await asyncio.to_thread(postgres.start)
    finally:
        if child.proc.returncode is None:
            child.proc.kill()
            await child.proc.wait()

    # Inside LiveKit's 10 s shutdown deadline (else the writer exits with 3 and loses them).
    assert code == 0 and done["event"] == "done", child.events
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


async def test_a_hung_llm_at_shutdown_costs_the_summary_but_no_logged_turn(
    pool: ConnectionPool, db_dsn: str, tmp_path: Path
) -> None:
    user_id = uuid.uuid4()
    # The summary call hangs past the deadline: the shutdown may be cut short by the kill.
    child = await start_writer(db_dsn, tmp_path / "spool", user_id, signal_after=1_000,
                               llm_hang_s=60)
    assert (await child.next_event())["event"] == "open"
    assert (await child.next_event())["event"] == "writing", child.events
    child.proc.send_signal(signal.SIGTERM)
    _, last = await child.finish()

    assert last["event"] in ("done", "killed"), child.events
    # The flush loop kept writing while the summary waited.
    assert await logged_rows(pool, user_id) == (last["messages"], last["messages"])
    assert Spool(tmp_path / "spool").pending_files() == []
