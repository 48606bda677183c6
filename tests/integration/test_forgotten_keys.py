"""A key the person asked to forget is not saved again by consolidation, in any process, hours
later: the session's transcript still holds the words said before the forget, and the LLM (the
loopback server, scripted here) distills them into that key again. Words said after the forget
may set a new value. Over real Postgres and Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from infrastructure.connection_pool import ConnectionPool
from infrastructure.model_clients import ModelClients
from services.memory.consolidation_service import ConsolidationService
from tests.support.clocks import HandClock
from tests.support.memory_stack import (
    MemoryStack,
    create_companion,
    create_user,
    key_versions,
    memory_stack,
)
from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import PostgresProcess, RedisProcess

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@dataclass
class World:
    stack: MemoryStack
    pool: ConnectionPool
    models: ModelClients
    server: OpenAIStubServer
    clock: HandClock
    user: uuid.UUID
    companion: uuid.UUID

    async def session(self, turns: list[tuple[str, str]]) -> uuid.UUID:
        """An ended session with one message per (role, text), a minute apart from START."""
        session_id = uuid.uuid4()
        last = START + timedelta(minutes=len(turns))
        await self.pool.execute(
            "insert into public.sessions (id, user_id, companion_id, started_at, "
            "last_activity_at, ended_at) values ($1, $2, $3, $4, $5, $5)",
            session_id, self.user, self.companion, START, last,
        )
        for i, (role, text) in enumerate(turns):
            await self.pool.execute(
                "insert into public.messages (session_id, user_id, companion_id, role, "
                "content, created_at) values ($1, $2, $3, $4, $5, $6)",
                session_id, self.user, self.companion, role, text,
                START + timedelta(minutes=i + 1),
            )
        return session_id

    async def consolidate_later_elsewhere(self, session_id: uuid.UUID) -> Any:
        """Consolidate as another process does hours later: its own memory service (none of
        the notes of the process that forgot) and its own consolidation service."""
        self.clock.now = START + timedelta(hours=5)
        elsewhere = ConsolidationService(
            pool=self.pool, models=self.models,
            memory=self.stack.another_service(clock=self.clock),
            settings=self.stack.settings, clock=self.clock,
        )
        try:
            result = await elsewhere.consolidate_session(session_id)
            return result, elsewhere.stats()
        finally:
            await elsewhere.aclose()

    async def dog_names(self) -> list[str]:
        versions = await key_versions(self.pool, self.user, self.companion, "PET", "dog_name")
        return [m.value or "" for m in versions]


@pytest.fixture
async def world(
    db_dsn: str, make_settings, redis_server: RedisProcess
) -> AsyncIterator[World]:
    clock = HandClock(START)
    async with OpenAIStubServer() as server:
        settings = make_settings(
            redis_enabled=True, redis_url=redis_server.url, openai_base_url=server.base_url,
            openai_max_retries=0, llm_model="memory-model",
        )
        pool = await ConnectionPool.create(settings, dsn=db_dsn)
        models = ModelClients.create(settings)
        try:
            async with memory_stack(
                pool=pool, settings=settings, server=server, clock=clock
            ) as stack:
                user = await create_user(pool)
                companion = await create_companion(pool, user, "Veda")
                yield World(stack, pool, models, server, clock, user, companion)
        finally:
            await models.aclose()
            await pool.aclose()


def dog(value: str, *refs: str) -> dict[str, Any]:
    return {"category": "PET", "key": "dog_name", "value": value,
            "source_message_ids": list(refs)}


def answer(*items: dict[str, Any]) -> dict[str, Any]:
    return {"json": {"memories": list(items)}}


TOLD_THEN_FORGOT = [
    ("user", "My dog is called Rex."),                 # m1, START + 1 min
    ("assistant", "Rex is a great name!"),
    ("user", "Actually, please forget my dog's name."),  # m3, START + 3 min
    ("assistant", "Done, I've forgotten it."),
]


async def test_a_key_forgotten_before_it_was_ever_saved_is_not_saved_by_a_later_consolidation(
    world: World,
) -> None:
    session = await world.session(TOLD_THEN_FORGOT)
    world.clock.now = START + timedelta(minutes=3, seconds=30)
    done = await world.stack.memory.forget(world.user, world.companion, key="Dog Name")
    assert (done.versions, done.deferred) == (0, False)
    world.server.chat_script = [answer(
        dog("Rex", "m1"),
        {"category": "FACT", "key": "has_dog", "value": "has a dog", "source_message_ids": ["m1"]},
    )]

    result, stats = await world.consolidate_later_elsewhere(session)

    assert await world.dog_names() == []
    assert (result.saved, result.forgotten) == (1, 1)
    assert stats["forgotten"] == 1
    kept = await world.stack.memory.current(world.user, world.companion)
    assert [m.key for m in kept] == ["has_dog"]


async def test_a_key_saved_then_forgotten_by_id_is_not_saved_again_from_the_earlier_words(
    world: World,
) -> None:
    session = await world.session(TOLD_THEN_FORGOT)
    world.clock.now = START + timedelta(minutes=1, seconds=30)
    rex = await world.stack.memory.remember(world.user, world.companion, "PET", "dog_name", "Rex")
    world.clock.now = START + timedelta(minutes=3, seconds=30)
    assert (await world.stack.memory.forget(world.user, world.companion, memory_id=rex.id)
            ).versions == 1
    world.server.chat_script = [answer(dog("Rex", "m1"))]

    result, _ = await world.consolidate_later_elsewhere(session)

    assert await world.dog_names() == []
    assert (result.saved, result.forgotten) == (0, 1)


async def test_words_said_after_the_forget_set_a_new_value(world: World) -> None:
    session = await world.session([
        *TOLD_THEN_FORGOT,
        ("user", "We adopted a puppy today, his name is Max."),  # m5, START + 5 min
    ])
    world.clock.now = START + timedelta(minutes=1, seconds=30)
    await world.stack.memory.remember(world.user, world.companion, "PET", "dog_name", "Rex")
    world.clock.now = START + timedelta(minutes=3, seconds=30)
    assert (await world.stack.memory.forget(world.user, world.companion, key="dog_name")
            ).versions == 1
    # Sourced to words from before the forget and after it: the value may carry the forgotten
    # one, so it is not saved either.
    world.server.chat_script = [answer(dog("Rex", "m1"), dog("Rex or Max", "m1", "m5"),
                                       dog("Max", "m5"))]

    result, _ = await world.consolidate_later_elsewhere(session)

    assert await world.dog_names() == ["Max"]
    assert (result.saved, result.forgotten) == (1, 2)


async def test_a_forget_holds_only_in_its_own_scope(world: World) -> None:
    other = await create_companion(world.pool, world.user, "Orion")
    session = await world.session(TOLD_THEN_FORGOT)
    world.clock.now = START + timedelta(minutes=3, seconds=30)
    await world.stack.memory.forget(world.user, other, key="dog_name")
    await world.stack.memory.forget(world.user, None, key="dog_name")
    world.server.chat_script = [answer(dog("Rex", "m1"))]

    result, _ = await world.consolidate_later_elsewhere(session)

    assert await world.dog_names() == ["Rex"]
    assert (result.saved, result.forgotten) == (1, 0)


async def test_a_forget_still_waiting_in_the_spool_holds_for_this_processs_consolidation(
    world: World, postgres: PostgresProcess
) -> None:
    session = await world.session(TOLD_THEN_FORGOT)
    world.clock.now = START + timedelta(minutes=3, seconds=30)
    postgres.stop()
    try:
        assert (await world.stack.memory.forget(world.user, world.companion, key="dog_name")
                ).deferred
    finally:
        postgres.start()
    # Postgres is back, the spool not replayed yet: only this process's note knows the forget.
    assert await world.pool.fetchval(
        "select count(*) from public.forgotten_keys where user_id = $1", world.user
    ) == 0
    world.server.chat_script = [answer(dog("Rex", "m1"))]
    here = ConsolidationService(
        pool=world.pool, models=world.models, memory=world.stack.memory,
        settings=world.stack.settings, clock=world.clock,
    )
    try:
        result = await here.consolidate_session(session)
    finally:
        await here.aclose()

    assert await world.dog_names() == []
    assert (result.saved, result.forgotten) == (0, 1)
