"""A forget reaches what an LLM derived from the memory, in its scope only: a shared memory
clears every companion's profile summary and scrubs all the person's summaries; a memory of
one companion leaves the other companions' and other people's text alone. A forget spooled
while Postgres is down clears the scope's profile summaries when it is replayed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from core.config import Settings
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from services.composition import register_write_kinds
from services.people.conversation_service import ConversationService
from services.people.user_service import UserService
from tests.support.memory_stack import MemoryStack, create_companion, create_user, memory_stack
from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import PostgresProcess

pytestmark = pytest.mark.integration

EARLIER = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
SUMMARY = "They walked Rex on the beach. They planned a trip to Lisbon."
PROFILE = "Has a dog named Rex."


@pytest.fixture
async def stack(db_dsn: str, make_settings, tmp_path) -> AsyncIterator[MemoryStack]:
    settings: Settings = make_settings(batch_spool_dir=tmp_path / "spool")
    pool = await ConnectionPool.create(settings, dsn=db_dsn)
    try:
        async with OpenAIStubServer() as server, memory_stack(
            pool=pool, settings=settings, server=server
        ) as built:
            yield built
    finally:
        await pool.aclose()


async def a_companion_who_knows_about_rex(
    stack: MemoryStack, user: uuid.UUID, name: str
) -> uuid.UUID:
    """A companion with a profile summary, an earlier session's summary and a follow-up that
    mention the dog, and a cached profile summary and greeting context."""
    companion = await create_companion(stack.pool, user, name)
    await stack.pool.execute(
        "update public.companions set profile_summary = $3 where id = $2 and user_id = $1",
        user, companion, PROFILE,
    )
    session = await stack.pool.fetchval(
        "insert into public.sessions (user_id, companion_id, started_at, last_activity_at, "
        "summary) values ($1, $2, $3, $3, $4) returning id",
        user, companion, EARLIER, SUMMARY,
    )
    await stack.pool.execute(
        "insert into public.follow_ups (user_id, companion_id, session_id, topic) "
        "values ($1, $2, $3, 'how Rex is doing')",
        user, companion, session,
    )
    await stack.cache.set_json(UserService.summary_key(user, companion), {"summary": PROFILE})
    await stack.cache.set_json(ConversationService.greeting_key(user, companion), {"x": 1})
    return companion


async def derived(stack: MemoryStack, user: uuid.UUID, companion: uuid.UUID) -> tuple:
    """(profile summary, due, session summary, follow-ups, cached summary, cached greeting)."""
    row = await stack.pool.fetchrow(
        "select c.profile_summary, s.profile_due_at is not null as due, s.summary, "
        "(select count(*) from public.follow_ups f where f.companion_id = c.id) as follow_ups "
        "from public.companions c join public.sessions s on s.companion_id = c.id "
        "where c.id = $1",
        companion,
    )
    assert row is not None
    return (
        row["profile_summary"], row["due"], row["summary"], row["follow_ups"],
        await stack.cache.get_json(UserService.summary_key(user, companion)) is not None,
        await stack.cache.get_json(ConversationService.greeting_key(user, companion)) is not None,
    )


UNTOUCHED = (PROFILE, False, SUMMARY, 1, True, True)
FORGOTTEN = (None, True, "They planned a trip to Lisbon.", 0, False, False)


async def test_forgetting_a_shared_memory_reaches_every_companions_derived_text(
    stack: MemoryStack,
) -> None:
    user = await create_user(stack.pool)
    veda = await a_companion_who_knows_about_rex(stack, user, "Veda")
    milo = await a_companion_who_knows_about_rex(stack, user, "Milo")
    stranger = await create_user(stack.pool)
    theirs = await a_companion_who_knows_about_rex(stack, stranger, "Veda")
    dog = await stack.memory.remember(user, None, "PERSON", "dog_name", "Rex")

    done = await stack.memory.forget(user, None, memory_id=dog.id)
    assert done.versions == 1
    assert (done.derived.profiles_cleared, done.derived.summaries_scrubbed) == (2, 2)
    assert len(done.derived.follow_ups_removed) == 2
    assert await derived(stack, user, veda) == FORGOTTEN
    assert await derived(stack, user, milo) == FORGOTTEN
    assert await derived(stack, stranger, theirs) == UNTOUCHED


async def test_forgetting_a_companions_memory_leaves_the_other_companions_text(
    stack: MemoryStack,
) -> None:
    user = await create_user(stack.pool)
    veda = await a_companion_who_knows_about_rex(stack, user, "Veda")
    milo = await a_companion_who_knows_about_rex(stack, user, "Milo")
    await stack.memory.remember(user, veda, "PERSON", "dog_name", "Rex")

    assert (await stack.memory.forget(user, veda, key="dog_name")).versions == 1
    assert await derived(stack, user, veda) == FORGOTTEN
    assert await derived(stack, user, milo) == UNTOUCHED


async def test_a_forget_of_nothing_changes_no_derived_text(stack: MemoryStack) -> None:
    user = await create_user(stack.pool)
    veda = await a_companion_who_knows_about_rex(stack, user, "Veda")
    assert (await stack.memory.forget(user, veda, key="dog_name")).versions == 0
    assert await derived(stack, user, veda) == UNTOUCHED


async def test_a_forget_spooled_while_postgres_is_down_clears_the_profiles_when_replayed(
    stack: MemoryStack, postgres: PostgresProcess
) -> None:
    user = await create_user(stack.pool)
    veda = await a_companion_who_knows_about_rex(stack, user, "Veda")
    await stack.memory.remember(user, veda, "PERSON", "dog_name", "Rex")
    postgres.stop()
    try:
        assert (await stack.memory.forget(user, veda, key="dog_name")).deferred
    finally:
        postgres.start()
    # The cached copies went at once; the stored ones wait for the replay.
    assert (await derived(stack, user, veda))[:4] == UNTOUCHED[:4]
    assert (await derived(stack, user, veda))[4:] == (False, False)

    successor = DatabaseBatcher(pool=stack.pool, settings=stack.settings)
    register_write_kinds(successor)
    await successor.start()
    await successor.aclose()
    assert successor.stats()["replayed"] == 2
    # The profile summary is cleared and due; the sentence scrub needs the deleted values,
    # which the spooled forget does not have (`derived_text`).
    assert await derived(stack, user, veda) == (None, True, SUMMARY, 1, False, False)
