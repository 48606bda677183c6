"""Retention over real Postgres: distilled old turns and old values expire, nothing that
consolidation has not read yet does, and the quota (explicit memories kept) is exact."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import QuotaExceeded
from core.memory_records import Episode
from infrastructure.connection_pool import ConnectionPool
from tests.support.clocks import TickingClock
from tests.support.memory_stack import MemoryStack, create_companion, create_user, memory_stack
from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import RedisProcess

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
async def stack(
    pool: ConnectionPool, make_settings, redis_server: RedisProcess
) -> AsyncIterator[MemoryStack]:
    settings = make_settings(
        redis_enabled=True, redis_url=redis_server.url, memory_quota_per_user=3,
        episodic_retention_days=30, episodic_max_per_user=8, memory_history_versions=2,
        consolidation_idle_s=600,
    )
    async with OpenAIStubServer() as server, memory_stack(
        pool=pool, settings=settings, server=server,
        clock=TickingClock(NOW, timedelta(milliseconds=1)),
    ) as built:
        yield built


async def start_session(
    pool: ConnectionPool, user: uuid.UUID, companion: uuid.UUID, *, ended: bool,
    consolidated: bool, said_at: datetime,
) -> uuid.UUID:
    """A session with one message of the person, consolidated or not, ended or live."""
    session = uuid.uuid4()
    await pool.execute(
        "insert into public.sessions (id, user_id, companion_id, started_at, last_activity_at, "
        "ended_at, consolidated_through) values ($1, $2, $3, $4, $5, $6, $7)",
        session, user, companion, said_at, said_at if ended else NOW,
        said_at if ended else None, said_at if consolidated else None,
    )
    await pool.execute(
        "insert into public.messages (session_id, user_id, companion_id, role, content, "
        "created_at) values ($1, $2, $3, 'user', 'hello', $4)",
        session, user, companion, said_at,
    )
    return session


async def talk(
    stack: MemoryStack, user: uuid.UUID, companion: uuid.UUID, texts: list[str], *,
    at: datetime, session: uuid.UUID | None = None,
) -> None:
    source = {"session_id": str(session)} if session is not None else {}
    episodes = [
        Episode("user", text, at + timedelta(seconds=i), source) for i, text in enumerate(texts)
    ]
    assert await stack.memory.import_episodes(user, companion, episodes) == len(texts)


async def episodes_left(pool: ConnectionPool, user: uuid.UUID) -> list[str]:
    rows = await pool.fetch(
        "select content from public.memories where user_id = $1 and kind = 'episodic' "
        "order by occurred_at", user,
    )
    return [r["content"] for r in rows]


async def test_old_distilled_turns_expire_and_recent_used_or_undistilled_ones_stay(
    stack: MemoryStack,
) -> None:
    pool = stack.pool
    user = await create_user(pool)
    companion = await create_companion(pool, user, "Ada")
    old = NOW - 40 * DAY
    done = await start_session(pool, user, companion, ended=True, consolidated=True,
                               said_at=old)
    pending = await start_session(pool, user, companion, ended=True, consolidated=False,
                                  said_at=old)
    await talk(stack, user, companion, ["old and distilled"], at=old, session=done)
    await talk(stack, user, companion, ["old, not distilled yet"], at=old, session=pending)
    await talk(stack, user, companion, ["old, without a session"], at=old)
    await talk(stack, user, companion, ["old but used last week"], at=old)
    await talk(stack, user, companion, ["recent and distilled"], at=NOW - 2 * DAY, session=done)
    await pool.execute(
        "update public.memories set last_accessed_at = $2 where user_id = $1 "
        "and content = 'old but used last week'", user, NOW - 7 * DAY,
    )
    result = await stack.memory.apply_retention(user)
    assert (result.users, result.episodes) == (1, 2)
    assert await episodes_left(pool, user) == [
        "old, not distilled yet", "old but used last week", "recent and distilled",
    ]


async def test_past_the_turn_limit_the_least_important_distilled_turns_expire_first(
    stack: MemoryStack,
) -> None:
    pool = stack.pool
    user = await create_user(pool)
    companion = await create_companion(pool, user, "Ada")
    live = await start_session(pool, user, companion, ended=False, consolidated=False,
                               said_at=NOW - DAY)
    await talk(stack, user, companion, [f"live turn {i}" for i in range(3)], at=NOW - DAY,
               session=live)
    await talk(stack, user, companion, [f"earlier turn {i}" for i in range(9)],
               at=NOW - 3 * DAY)
    await pool.execute(
        "update public.memories set importance = 0.9 where user_id = $1 "
        "and content in ('earlier turn 0', 'earlier turn 1')", user,
    )
    result = await stack.memory.apply_retention(user)
    # 12 turns, a limit of 8: four distilled ones go, the least important and oldest first.
    assert result.episodes == 4
    left = await episodes_left(pool, user)
    assert left == [
        "earlier turn 0", "earlier turn 1", *(f"earlier turn {i}" for i in range(6, 9)),
        "live turn 0", "live turn 1", "live turn 2",
    ]
    # A second pass finds nothing more to do.
    assert (await stack.memory.apply_retention(user)).episodes == 0


async def test_the_newest_old_values_of_a_key_stay_and_the_current_one_never_expires(
    stack: MemoryStack,
) -> None:
    pool = stack.pool
    user = await create_user(pool)
    companion = await create_companion(pool, user, "Ada")
    for value in ("red", "green", "blue", "violet", "amber"):
        await stack.memory.remember(user, companion, "PREFERENCE", "colour", value)
    result = await stack.memory.apply_retention(user)
    assert result.versions == 2
    rows = await pool.fetch(
        "select value, superseded_at is null as current from public.memories "
        "where user_id = $1 and key = 'colour' order by created_at", user,
    )
    assert [(r["value"], r["current"]) for r in rows] == [
        ("blue", False), ("violet", False), ("amber", True),
    ]


async def test_the_maintenance_sweep_reaches_everyone_with_old_turns(stack: MemoryStack) -> None:
    pool = stack.pool
    users = [await create_user(pool) for _ in range(3)]
    for user in users:
        companion = await create_companion(pool, user, "Ada")
        await talk(stack, user, companion, ["long ago"], at=NOW - 90 * DAY)
    first = await stack.memory.apply_retention_due(limit=2)
    second = await stack.memory.apply_retention_due(limit=2)
    assert (first.users, first.episodes, second.users, second.episodes) == (2, 2, 1, 1)
    for user in users:
        assert await episodes_left(pool, user) == []


async def test_concurrent_saves_of_new_keys_fill_the_quota_exactly(stack: MemoryStack) -> None:
    pool = stack.pool
    user = await create_user(pool)
    companion = await create_companion(pool, user, "Ada")
    await stack.memory.remember(user, None, "FACT", "shared", "kept by every companion")
    results = await asyncio.gather(*(
        stack.memory.remember(user, companion, "FACT", f"key_{i}", f"value {i}")
        for i in range(10)
    ), return_exceptions=True)
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(refused) == 8 and len(results) - len(refused) == 2
    assert all((r.used, r.quota) == (3, 3) and "forget_everything" in r.suggestion
               for r in refused)
    kept = await pool.fetchval(
        "select count(*) from public.memories where user_id = $1 and kind = 'explicit' "
        "and superseded_at is null", user,
    )
    assert kept == 3
    # Talk does not count: a turn logged now leaves the quota as it was.
    await talk(stack, user, companion, ["just talking"], at=NOW)
    with pytest.raises(QuotaExceeded):
        await stack.memory.remember(user, companion, "FACT", "one_more", "no room")
