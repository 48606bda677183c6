"""MemoryService over real Postgres+pgvector, real Redis, the real batcher and embedder code."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest

from core.errors import InvalidIdentity, InvalidInput
from core.memory_records import Episode
from infrastructure.connection_pool import ConnectionPool
from tests.support.clocks import HandClock
from tests.support.memory_stack import (
    MemoryStack,
    create_companion,
    create_user,
    key_versions,
    memory_stack,
)
from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import RedisProcess

pytestmark = pytest.mark.integration

# A Saturday.
START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> HandClock:
    return HandClock(START)


@pytest.fixture
async def stack(
    pool: ConnectionPool, make_settings, redis_server: RedisProcess, clock: HandClock
) -> AsyncIterator[MemoryStack]:
    settings = make_settings(redis_enabled=True, redis_url=redis_server.url)
    async with OpenAIStubServer() as server, memory_stack(
        pool=pool, settings=settings, server=server, clock=clock
    ) as built:
        yield built


async def current_rows(pool: ConnectionPool, user_id: uuid.UUID, key: str) -> int:
    return await pool.fetchval(
        "select count(*) from public.memories where user_id = $1 and key = $2 "
        "and kind = 'explicit' and superseded_at is null",
        user_id, key,
    )


# --- supersession and history -------------------------------------------------------------


async def test_saving_a_key_again_supersedes_the_old_value_and_keeps_it_in_history(
    stack: MemoryStack, clock: HandClock
) -> None:
    user = await create_user(stack.pool)
    first = await stack.memory.remember(user, None, "preference", "Favorite Food", "sushi")
    clock.now += timedelta(hours=1)
    second = await stack.memory.remember(user, None, "PREFERENCE", "favorite_food", "ramen")

    current = await stack.memory.current(user, None)
    history = await key_versions(stack.pool, user, None, "preference", "favorite food")

    assert [m.value for m in current] == ["ramen"]
    assert current[0].content == "favorite food: ramen"
    assert [m.value for m in history] == ["ramen", "sushi"]
    assert history[1].id == first.id and history[1].superseded_at == clock.now
    superseded_by = await stack.pool.fetchval(
        "select superseded_by from public.memories where id = $1", first.id
    )
    assert superseded_by == second.id
    assert await current_rows(stack.pool, user, "favorite_food") == 1


async def test_saving_the_current_value_again_is_a_no_op(
    stack: MemoryStack, clock: HandClock
) -> None:
    user = await create_user(stack.pool)
    first = await stack.memory.remember(user, None, "FACT", "home_city", "Lisbon")
    clock.now += timedelta(days=1)
    again = await stack.memory.remember(user, None, "FACT", "Home City", "lisbon.")

    assert again.id == first.id
    assert len(await key_versions(stack.pool, user, None, "FACT", "home_city")) == 1


async def test_concurrent_saves_of_one_key_leave_exactly_one_current_value(
    stack: MemoryStack,
) -> None:
    user = await create_user(stack.pool)
    values = [f"book number {i}" for i in range(12)]
    saved = await asyncio.gather(
        *(stack.memory.remember(user, None, "PREFERENCE", "current_book", v) for v in values)
    )

    history = await key_versions(stack.pool, user, None, "PREFERENCE", "current_book")
    assert await current_rows(stack.pool, user, "current_book") == 1
    assert len(history) == len(values)
    assert {m.id for m in history} == {m.id for m in saved}
    # Every superseded version points at a row that exists: the chain is intact.
    dangling = await stack.pool.fetchval(
        "select count(*) from public.memories where user_id = $1 and superseded_at is not null "
        "and superseded_by is null",
        user,
    )
    assert dangling == 0


async def test_relative_dates_are_stored_as_absolute_dates_in_the_users_timezone(
    stack: MemoryStack, clock: HandClock
) -> None:
    # 03:00 UTC Saturday is still Friday evening in Los Angeles: "tomorrow" is Saturday there.
    clock.now = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    user = await create_user(stack.pool, timezone="America/Los_Angeles")

    exam = await stack.memory.remember(user, None, "EVENT", "exam", "math exam tomorrow")
    trip = await stack.memory.remember(user, None, "EVENT", "trip", "Rome next Friday")

    assert exam.value == "math exam on Saturday 2026-11-21"
    assert exam.event_date == date(2026, 11, 21)
    assert trip.value == "Rome on Friday 2026-11-27"
    assert trip.event_date == date(2026, 11, 27)


async def test_a_statement_older_than_the_current_value_goes_to_history_only(
    stack: MemoryStack,
) -> None:
    user = await create_user(stack.pool)
    await stack.memory.remember(
        user, None, "FACT", "job", "nurse", occurred_at=START + timedelta(hours=2)
    )
    late = await stack.memory.remember(
        user, None, "FACT", "job", "student", occurred_at=START - timedelta(days=3)
    )

    assert late.superseded_at is not None
    assert [m.value for m in await stack.memory.current(user, None)] == ["nurse"]
    assert [m.value for m in await key_versions(stack.pool, user, None, "FACT", "job")] == [
        "nurse", "student",
    ]


# --- scoping -----------------------------------------------------------------------------------


async def test_every_query_is_scoped_to_its_user_and_companion(stack: MemoryStack) -> None:
    alice = await create_user(stack.pool)
    bob = await create_user(stack.pool)
    veda = await create_companion(stack.pool, alice, "Veda")
    kai = await create_companion(stack.pool, alice, "Kai")
    bobs = await create_companion(stack.pool, bob, "Veda")
    m = stack.memory
    shared = await m.remember(alice, None, "FACT", "name", "Alice")
    with_veda = await m.remember(alice, veda, "FACT", "secret", "told only Veda")
    with_kai = await m.remember(alice, kai, "FACT", "secret", "told only Kai")
    bobs_memory = await m.remember(bob, bobs, "FACT", "secret", "Bob's secret")

    assert {x.id for x in await m.current(alice, veda)} == {shared.id, with_veda.id}
    assert {x.id for x in await m.current(alice, kai)} == {shared.id, with_kai.id}
    assert {x.id for x in await m.current(alice, None)} == {shared.id}
    assert {x.id for x in await m.current(bob, bobs)} == {bobs_memory.id}
    secrets = await key_versions(stack.pool, alice, veda, "FACT", "secret")
    assert [x.id for x in secrets] == [with_veda.id]
    # Alice's session cannot reach Bob's memory, or another companion's, by id or by key.
    assert (await m.forget(alice, veda, memory_id=bobs_memory.id)).versions == 0
    assert (await m.forget(alice, veda, memory_id=with_kai.id)).versions == 0
    assert (await m.forget(alice, None, key="secret")).versions == 0
    assert {x.id for x in await m.current(bob, bobs)} == {bobs_memory.id}
    exported = await m.export(bob)
    assert [x["id"] for x in exported["explicit"]] == [str(bobs_memory.id)]
    stats = await m.stats(alice, veda)
    assert stats["rows"]["current"] == 2


async def test_the_companions_own_value_wins_over_a_shared_one(stack: MemoryStack) -> None:
    user = await create_user(stack.pool)
    veda = await create_companion(stack.pool, user, "Veda")
    await stack.memory.remember(user, None, "PREFERENCE", "nickname", "Al")
    await stack.memory.remember(user, veda, "PREFERENCE", "nickname", "Captain")

    assert [x.value for x in await stack.memory.current(user, veda)] == ["Captain"]
    assert [x.value for x in await stack.memory.current(user, None)] == ["Al"]


async def test_a_memory_for_an_unknown_companion_is_refused(stack: MemoryStack) -> None:
    user = await create_user(stack.pool)
    with pytest.raises(InvalidIdentity) as caught:
        await stack.memory.remember(user, uuid.uuid4(), "FACT", "pet", "a cat")
    assert caught.value.suggestion


# --- cache --------------------------------------------------------------------------------------


async def test_the_cached_list_follows_every_write_even_from_another_worker(
    stack: MemoryStack, clock: HandClock
) -> None:
    user = await create_user(stack.pool)
    veda = await create_companion(stack.pool, user, "Veda")
    other_worker = stack.another_service(clock)
    await stack.memory.remember(user, veda, "FACT", "pet", "a cat")

    assert [x.value for x in await stack.memory.current(user, veda)] == ["a cat"]
    hits = (await stack.memory.stats())["cache_hits"]
    assert [x.value for x in await stack.memory.current(user, veda)] == ["a cat"]
    assert (await stack.memory.stats())["cache_hits"] == hits + 1

    clock.now += timedelta(minutes=1)
    await other_worker.remember(user, veda, "FACT", "pet", "a dog")
    assert [x.value for x in await stack.memory.current(user, veda)] == ["a dog"]
    # A shared memory shows up in every companion's cached view at once.
    await other_worker.remember(user, None, "FACT", "home_city", "Porto")
    assert {x.value for x in await stack.memory.current(user, veda)} == {"a dog", "Porto"}
    await other_worker.forget(user, veda, key="pet")
    assert [x.value for x in await stack.memory.current(user, veda)] == ["Porto"]


# --- forget and export ---------------------------------------------------------------------------


async def test_forgetting_a_key_removes_every_version_of_it(
    stack: MemoryStack, clock: HandClock
) -> None:
    user = await create_user(stack.pool)
    await stack.memory.remember(user, None, "PERSON", "partner", "Sam")
    clock.now += timedelta(days=30)
    await stack.memory.remember(user, None, "PERSON", "partner", "Alex")
    keep = await stack.memory.remember(user, None, "FACT", "job", "teacher")

    assert (await stack.memory.forget(user, None, key="Partner")).versions == 2
    assert await key_versions(stack.pool, user, None, "PERSON", "partner") == []
    assert [x.id for x in await stack.memory.current(user, None)] == [keep.id]
    assert (await stack.memory.forget(user, None, memory_id=keep.id)).versions == 1
    assert await stack.memory.current(user, None) == []


async def test_export_holds_history_and_episodes_and_is_plain_json(
    stack: MemoryStack, clock: HandClock
) -> None:
    user = await create_user(stack.pool)
    await stack.memory.remember(user, None, "PREFERENCE", "drink", "tea")
    clock.now += timedelta(minutes=5)
    await stack.memory.remember(user, None, "PREFERENCE", "drink", "coffee")
    stack.memory.log_turn(user, None, uuid.uuid4(), "user", "I switched to coffee this week")
    await stack.settle()

    exported = json.loads(json.dumps(await stack.memory.export(user)))

    assert exported["user_id"] == str(user)
    assert sorted(m["value"] for m in exported["explicit"]) == ["coffee", "tea"]
    assert [m["superseded_at"] is None for m in exported["explicit"]].count(True) == 1
    assert [m["content"] for m in exported["episodic"]] == ["I switched to coffee this week"]


# --- episodic log ---------------------------------------------------------------------------------


async def test_logged_turns_are_embedded_and_written_through_the_batcher(
    stack: MemoryStack,
) -> None:
    user = await create_user(stack.pool)
    session = uuid.uuid4()
    stack.memory.log_turn(user, None, session, "user", "My sister Maya moved to Lisbon")
    stack.memory.log_turn(user, None, session, "assistant", "Lisbon is lovely!")
    # Nothing is written yet: the turn path only schedules the work.
    assert await stack.pool.fetchval("select count(*) from public.memories") == 0

    await stack.settle()

    rows = await stack.pool.fetch(
        "select speaker, content, embedding, source, importance from public.memories "
        "where user_id = $1 and kind = 'episodic' order by speaker desc",
        user,
    )
    assert [r["speaker"] for r in rows] == ["user", "assistant"]
    assert all(r["embedding"] is not None and len(r["embedding"]) == 384 for r in rows)
    assert json.loads(rows[0]["source"]) == {"session_id": str(session)}
    assert rows[0]["importance"] > rows[1]["importance"]
    assert stack.batcher.stats()["items_written"] >= 2
    # The companion's replies are never facts about the user.
    assert await stack.memory.current(user, None) == []


async def test_near_duplicate_turns_are_stored_once_per_speaker(stack: MemoryStack) -> None:
    user = await create_user(stack.pool)
    for text in ("I love sushi.", "i love   sushi", "I LOVE SUSHI!"):
        stack.memory.log_turn(user, None, None, "user", text)
    stack.memory.log_turn(user, None, None, "assistant", "I love sushi!")
    stack.memory.log_turn(user, None, None, "user", "   ")
    await stack.settle()

    rows = await stack.pool.fetch(
        "select speaker from public.memories where user_id = $1 order by speaker", user
    )
    assert [r["speaker"] for r in rows] == ["assistant", "user"]


async def test_a_turn_is_kept_without_a_vector_when_embedding_fails(stack: MemoryStack) -> None:
    user = await create_user(stack.pool)
    stack.server.fail_next(1, status=500, path_prefix="/v1/embeddings")
    stack.memory.log_turn(user, None, None, "user", "remember that I hate mornings")
    await stack.settle()

    row = await stack.pool.fetchrow(
        "select embedding, tsv::text as tsv from public.memories where user_id = $1", user
    )
    assert row is not None and row["embedding"] is None
    assert "morn" in row["tsv"]
    assert (await stack.memory.stats())["embedding_failures"] == 1


async def test_importing_episodes_twice_stores_each_turn_once(stack: MemoryStack) -> None:
    user = uuid.uuid4()  # imports create the bare user row themselves
    episodes = [
        Episode("user", f"On day {i} I went climbing with Jo", START + timedelta(days=i),
                {"dia_id": f"D1:{i}"})
        for i in range(300)
    ]
    episodes.append(Episode("assistant", "Sounds fun!", START, {"dia_id": "D1:x"}))
    episodes.append(Episode("user", "on day 0 I went climbing with jo!", START, {}))

    first = await stack.memory.import_episodes(user, None, episodes)
    second = await stack.memory.import_episodes(user, None, episodes)

    assert (first, second) == (301, 0)
    row = await stack.pool.fetchrow(
        "select occurred_at, source, embedding from public.memories "
        "where user_id = $1 and source ->> 'dia_id' = 'D1:7'",
        user,
    )
    assert row is not None
    assert row["occurred_at"] == START + timedelta(days=7)
    assert len(row["embedding"]) == 384
    matches = await stack.pool.fetchval(
        "select count(*) from public.memories where user_id = $1 "
        "and tsv @@ plainto_tsquery('english', 'climbing Jo')",
        user,
    )
    assert matches == 300


async def test_record_access_counts_each_use(stack: MemoryStack, clock: HandClock) -> None:
    user = await create_user(stack.pool)
    memory = await stack.memory.remember(user, None, "FACT", "pet", "a cat")
    stack.memory.record_access([memory.id, memory.id])
    await stack.memory.drain()
    clock.now += timedelta(hours=1)
    stack.memory.record_access([memory.id])
    await stack.memory.drain()

    row = await stack.pool.fetchrow(
        "select access_count, last_accessed_at from public.memories where id = $1", memory.id
    )
    assert row is not None
    assert row["access_count"] == 2
    assert row["last_accessed_at"] == clock.now


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "key", "value"),
    [("not a category!", "k", "v"), ("FACT", "", "v"), ("FACT", "k", "   "), ("FACT", "!!", "v")],
)
async def test_malformed_memories_are_refused_with_a_suggestion(
    stack: MemoryStack, category: str, key: str, value: str
) -> None:
    user = await create_user(stack.pool)
    with pytest.raises(InvalidInput) as caught:
        await stack.memory.remember(user, None, category, key, value)
    assert caught.value.suggestion


async def test_forget_needs_exactly_one_target_and_turns_a_known_speaker(
    stack: MemoryStack,
) -> None:
    user = await create_user(stack.pool)
    with pytest.raises(InvalidInput):
        await stack.memory.forget(user, None)
    with pytest.raises(InvalidInput):
        await stack.memory.forget(user, None, memory_id=uuid.uuid4(), key="x")
    with pytest.raises(InvalidInput):
        stack.memory.log_turn(user, None, None, "narrator", "once upon a time")
