"""The spool against an attacker and an unlucky operator: replay runs only the project's own
registered statements, chosen by write kind and version; a line it does not recognize is set
aside and reported; a forget erases the person's pending writes, so nothing forgotten comes
back when a spool is replayed; an export shows them."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.spool import SET_ASIDE_FILE, STALE_AFTER_S, Spool
from services.composition import register_write_kinds
from services.memory.episodic_log import EPISODE_KIND
from services.people.conversation_service import ACTIVITY_KIND, ACTIVITY_KIND_V1, MESSAGE_KIND
from tests.support.memory_stack import MemoryStack, create_user, memory_stack
from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import PostgresProcess

pytestmark = pytest.mark.integration

ATTACK_SQL = "update public.users set display_name = $1 where true"


def drop_spool_file(directory: Path, records: list[dict[str, Any]]) -> Path:
    """A spool file as anyone with access to the directory could leave it there."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"spool-20260101T000000000000-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


async def production_batcher(pool: ConnectionPool, settings: Settings) -> DatabaseBatcher:
    """A batcher as a job starts it: every kind the services write is registered."""
    batcher = DatabaseBatcher(pool=pool, settings=settings)
    register_write_kinds(batcher)
    await batcher.start()
    return batcher


async def a_session(pool: ConnectionPool) -> tuple[uuid.UUID, uuid.UUID]:
    user_id = await create_user(pool)
    session_id = uuid.uuid4()
    await pool.execute(
        "insert into public.sessions (id, user_id, last_activity_at) "
        "values ($1, $2, '2020-01-01')", session_id, user_id,
    )
    return user_id, session_id


def line(kind_op: str, version: int, digest: str, args: list[Any], **extra: Any) -> dict[str, Any]:
    return {"v": 2, "op": kind_op, "ver": version, "stmt": digest, "user": None,
            "companion": None, "at": None, "args": args, **extra}


async def test_replay_never_runs_sql_from_a_file_and_sets_aside_what_it_does_not_know(
    pool: ConnectionPool, make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    user_id, session_id = await a_session(pool)
    await pool.execute("update public.users set display_name = 'Ann' where id = $1", user_id)
    sid, uid = {"$uuid": str(session_id)}, {"$uuid": str(user_id)}
    attacks = [
        # The first spool format carried SQL; this one is not a registered statement.
        {"v": 1, "op": "conversation.message", "sql": ATTACK_SQL, "args": ["pwned"]},
        line("users.rename", 1, "0" * 16, ["pwned"]),
        line(MESSAGE_KIND.op, 7, MESSAGE_KIND.digest, ["pwned"]),
        line(MESSAGE_KIND.op, 1, "f" * 16, ["pwned"]),
        line(ACTIVITY_KIND.op, 2, ACTIVITY_KIND.digest, [sid, "pwned", uid], user=str(user_id)),
        line(ACTIVITY_KIND.op, 2, ACTIVITY_KIND.digest, [sid]),
        "{not json",
    ]
    path = drop_spool_file(settings.batch_spool_dir, [a for a in attacks if isinstance(a, dict)])
    path.write_text(path.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    caplog.set_level(logging.INFO, logger="infrastructure")

    batcher = await production_batcher(pool, settings)
    await batcher.aclose()

    names = [r["display_name"] for r in await pool.fetch("select display_name from public.users")]
    assert names == ["Ann"]
    stats = batcher.stats()
    assert stats["set_aside"] == len(attacks) and stats["replayed"] == 0
    assert Spool(settings.batch_spool_dir).pending_files() == []
    kept = [json.loads(x) for x in
            (settings.batch_spool_dir / SET_ASIDE_FILE).read_text().splitlines()]
    reasons = " | ".join(k["reason"] for k in kept)
    for why in ("first spool format", "unknown op", "version 7", "changed without a new "
                "version", "argument $2 (at) must be time", "takes 3 arguments", "unreadable"):
        assert why in reasons
    assert "set aside 7 spool lines" in caplog.text and "pwned" not in caplog.text


async def test_lines_spooled_before_an_upgrade_replay_through_the_kept_statement(
    pool: ConnectionPool, make_settings
) -> None:
    settings = make_settings()
    user_id, session_id = await a_session(pool)
    when = {"$datetime": datetime(2026, 2, 3, 4, 5, tzinfo=UTC).isoformat()}
    drop_spool_file(settings.batch_spool_dir, [
        # Version 1 of the activity update, as a line of the first format and of the second.
        {"v": 1, "op": ACTIVITY_KIND.op, "sql": ACTIVITY_KIND_V1.sql,
         "args": [{"$uuid": str(session_id)}, when]},
        line(ACTIVITY_KIND.op, 1, ACTIVITY_KIND_V1.digest, [{"$uuid": str(session_id)}, when]),
    ])

    batcher = await production_batcher(pool, settings)
    await batcher.aclose()

    assert batcher.stats()["replayed"] == 2 and batcher.stats()["set_aside"] == 0
    last = await pool.fetchval(
        "select last_activity_at from public.sessions where id = $1", session_id
    )
    assert last == datetime(2026, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
async def stack(pool: ConnectionPool, make_settings) -> AsyncIterator[MemoryStack]:
    settings = make_settings(batch_max_attempts=1, batch_flush_interval_ms=3_600_000)
    async with OpenAIStubServer() as server, memory_stack(
        pool=pool, settings=settings, server=server
    ) as built:
        yield built


async def episodes(pool: ConnectionPool, user_id: uuid.UUID) -> int:
    return int(await pool.fetchval(
        "select count(*) from public.memories where user_id = $1 and kind = 'episodic'", user_id
    ))


def spool_text(directory: Path) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in directory.iterdir() if p.is_file())


async def test_a_turn_spooled_in_an_outage_does_not_come_back_after_forget_everything(
    stack: MemoryStack, pool: ConnectionPool, postgres: PostgresProcess
) -> None:
    me, other = await create_user(pool), await create_user(pool)
    with postgres.down():
        for n in range(3):
            stack.memory.log_turn(me, None, None, "user", f"my secret plan number {n}")
        stack.memory.log_turn(other, None, None, "user", "their ordinary day")
        await stack.settle()
        assert stack.batcher.stats()["spooled"] == 4
    assert "my secret plan" in spool_text(stack.settings.batch_spool_dir)

    assert await stack.memory.erase_pending(me) == 3
    assert (await stack.memory.stats())["pending_writes_erased"] == 3
    assert "my secret plan" not in spool_text(stack.settings.batch_spool_dir)

    successor = await production_batcher(pool, stack.settings)
    await successor.aclose()
    assert successor.stats()["replayed"] == 1
    assert await episodes(pool, me) == 0 and await episodes(pool, other) == 1


async def test_a_turn_being_embedded_or_queued_when_forgotten_is_never_written(
    stack: MemoryStack, pool: ConnectionPool
) -> None:
    me = await create_user(pool)
    stack.memory.log_turn(me, None, None, "user", "queued, not yet written")
    await stack.memory.drain()  # embedded and queued: the flush interval is an hour
    assert stack.batcher.stats()["queue_depth"] == 1
    stack.server.hang_next(1, seconds=1.0, path_prefix="/v1/embeddings")
    stack.memory.log_turn(me, None, None, "user", "still being embedded")
    assert (await stack.memory.stats())["pending_tasks"] == 1

    await stack.memory.erase_pending(me)
    await stack.settle()

    assert await episodes(pool, me) == 0
    stats = await stack.memory.stats()
    assert stats["turns_forgotten"] == 1 and stats["pending_writes_erased"] == 2


async def test_an_erasure_reaches_a_file_another_process_held_while_it_was_recorded(
    stack: MemoryStack, pool: ConnectionPool, postgres: PostgresProcess
) -> None:
    me = await create_user(pool)
    with postgres.down():
        stack.memory.log_turn(me, None, None, "user", "said before the forget")
        await stack.settle()
    # Another process claimed the file (its replay under way), then died holding it.
    spool = Spool(stack.settings.batch_spool_dir)
    [held] = spool.claim()
    await stack.memory.erase_pending(me)
    assert "said before the forget" in held.path.read_text(encoding="utf-8")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(held.path, (old, old))

    successor = await production_batcher(pool, stack.settings)
    await successor.aclose()
    assert successor.stats()["erased"] == 1 and successor.stats()["replayed"] == 0
    assert await episodes(pool, me) == 0


async def test_export_shows_every_pending_write_of_the_person_and_a_forget_erases_them(
    stack: MemoryStack, pool: ConnectionPool, postgres: PostgresProcess
) -> None:
    me, other = await create_user(pool), await create_user(pool)
    # Set aside by a replay: a line of an op nobody registered, naming the person.
    drop_spool_file(stack.settings.batch_spool_dir, [
        line("notes.add", 1, "0" * 16, [{"$uuid": str(me)}, "odd line"], user=str(me))])
    replayer = DatabaseBatcher(pool=pool, settings=stack.settings)
    replayer.register(EPISODE_KIND)
    await replayer.start()
    await replayer.aclose()
    with postgres.down():
        stack.memory.log_turn(me, None, None, "user", "spooled in the outage")
        stack.memory.log_turn(other, None, None, "user", "someone else's words")
        await stack.settle()
    # Refused by the database: a companion that does not exist.
    stack.memory.log_turn(me, uuid.uuid4(), None, "user", "refused for good")
    await stack.settle()
    stack.memory.log_turn(me, None, None, "user", "queued right now")
    await stack.memory.drain()

    pending = (await stack.memory.export(me))["pending"]
    contents = {
        "queued": [q["values"]["content"] for q in pending["queued"]],
        "pending": [p["values"]["content"] for p in pending["pending"]],
        "rejected": len(pending["rejected"]),
        "set_aside": len(pending["set_aside"]),
    }
    assert contents == {"queued": ["queued right now"], "pending": ["spooled in the outage"],
                        "rejected": 1, "set_aside": 1}
    assert pending["pending"][0]["values"]["embedding"] == {"vector_dimensions": 384}
    json.dumps(pending)

    await stack.memory.erase_pending(me)
    after = (await stack.memory.export(me))["pending"]
    assert after == {"embedding": [], "queued": [], "pending": [], "rejected": [],
                     "set_aside": []}
    assert "someone else's words" in spool_text(stack.settings.batch_spool_dir)
