"""Consolidation and the store's upkeep over real Postgres and Redis, with the LLM as a loopback
server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from core.errors import LLMUnavailable
from core.memory_records import Episode
from infrastructure.connection_pool import ConnectionPool
from infrastructure.model_clients import ModelClients
from services.memory.consolidation_service import ConsolidationService
from services.memory.memory_service import MemoryService
from services.memory.memory_upkeep import MemoryUpkeep
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

# A Saturday; the conversation happens in the minutes after it.
START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@dataclass
class World:
    stack: MemoryStack
    upkeep: MemoryUpkeep
    consolidation: ConsolidationService
    server: OpenAIStubServer
    pool: ConnectionPool
    clock: HandClock
    user: uuid.UUID
    companion: uuid.UUID

    async def session(
        self, turns: list[tuple[str, str]], *, start: datetime = START, ended: bool = True,
        user: uuid.UUID | None = None, companion: uuid.UUID | None = None,
    ) -> tuple[uuid.UUID, list[uuid.UUID]]:
        """A stored session with one message per (role, text), a minute apart."""
        user = user or self.user
        companion = companion or self.companion
        session_id = uuid.uuid4()
        last = start + timedelta(minutes=len(turns))
        await self.pool.execute(
            "insert into public.sessions (id, user_id, companion_id, started_at, "
            "last_activity_at, ended_at) values ($1, $2, $3, $4, $5, $6)",
            session_id, user, companion, start, last, last if ended else None,
        )
        ids = []
        for i, (role, text) in enumerate(turns):
            message_id = uuid.uuid4()
            await self.pool.execute(
                "insert into public.messages (id, session_id, user_id, companion_id, role, "
                "content, created_at) values ($1, $2, $3, $4, $5, $6, $7)",
                message_id, session_id, user, companion, role, text,
                start + timedelta(minutes=i + 1),
            )
            ids.append(message_id)
        return session_id, ids

    def chat_requests(self) -> list[dict]:
        return [r.json for r in self.server.requests_to("/v1/chat/completions")]

    async def current(self) -> dict[str, str | None]:
        memories = await self.stack.memory.current(self.user, self.companion, limit=500)
        return {m.key or "": m.value for m in memories}


@pytest.fixture
async def world(
    db_dsn: str, make_settings, redis_server: RedisProcess
) -> AsyncIterator[World]:
    clock = HandClock(START + timedelta(hours=1))
    async with OpenAIStubServer() as server:
        settings = make_settings(
            redis_enabled=True, redis_url=redis_server.url, openai_base_url=server.base_url,
            openai_max_retries=0, llm_model="memory-model", consolidation_max_messages=4,
            consolidation_every_turns=4,
        )
        pool = await ConnectionPool.create(settings, dsn=db_dsn)
        models = ModelClients.create(settings)
        try:
            async with memory_stack(
                pool=pool, settings=settings, server=server, clock=clock
            ) as stack:
                upkeep = MemoryUpkeep(
                    pool=pool, memory=stack.memory, settings=settings, clock=clock
                )
                consolidation = ConsolidationService(
                    pool=pool, models=models, memory=stack.memory, settings=settings,
                    clock=clock,
                )
                user = await create_user(pool, timezone="Europe/Lisbon")
                companion = await create_companion(pool, user, "Veda")
                yield World(stack, upkeep, consolidation, server, pool, clock, user, companion)
                await consolidation.aclose()
        finally:
            await models.aclose()
            await pool.aclose()


FIRST_CONVERSATION = [
    ("user", "Hi, I'm Ana. I work as a nurse in Porto."),
    ("assistant", "Nice to meet you, Ana! You must love cooking after long shifts."),
    ("user", "Ha, no. My favorite food is sushi though, and my brother Leo visits next Friday."),
    ("assistant", "Sushi with Leo sounds like a plan!"),
]


def first_answer(ids: list[uuid.UUID]) -> dict:
    del ids  # the model cites the transcript's refs, not database ids
    return {"json": {"memories": [
        {"category": "FACT", "key": "job", "value": "nurse in Porto", "importance": 0.6,
         "source_message_ids": ["m1"]},
        {"category": "preference", "key": "favorite_food", "value": "sushi",
         "source_message_ids": ["m3"]},
        {"category": "EVENT", "key": "brother_visit", "value": "Leo visits next Friday",
         "importance": 0.8, "source_message_ids": ["m3"]},
        # Only the companion said this: it is not a fact about Ana.
        {"category": "PREFERENCE", "key": "likes_cooking", "value": "loves cooking",
         "source_message_ids": ["m2"]},
        {"category": "FACT", "key": "pet", "value": "", "source_message_ids": ["m1"]},
        "not an object",
    ]}}


async def test_a_scripted_conversation_becomes_memories_sourced_to_the_users_turns(
    world: World,
) -> None:
    other_user = await create_user(world.pool)
    others = await world.stack.memory.remember(other_user, None, "PREFERENCE", "favorite_food",
                                               "pizza")
    session, ids = await world.session(FIRST_CONVERSATION)
    world.server.chat_script = [first_answer(ids)]

    result = await world.consolidation.consolidate_session(session)

    assert (result.messages, result.saved, result.rejected) == (4, 3, 3)
    current = await world.current()
    assert current == {
        "job": "nurse in Porto",
        "favorite_food": "sushi",
        # Resolved against the time it was said (Saturday 2026-11-21), not the time of the run.
        "brother_visit": "Leo visits on Friday 2026-11-27",
    }
    memories = {m.key: m for m in await world.stack.memory.current(world.user, world.companion)}
    assert memories["brother_visit"].event_date == date(2026, 11, 27)
    assert memories["brother_visit"].importance == pytest.approx(0.8)
    assert memories["job"].source == {
        "origin": "consolidation", "session_id": str(session), "message_ids": [str(ids[0])],
    }
    assert memories["job"].occurred_at == START + timedelta(minutes=1)
    watermark = await world.pool.fetchval(
        "select consolidated_through from public.sessions where id = $1", session
    )
    assert watermark == START + timedelta(minutes=4)
    (request,) = world.chat_requests()
    assert request["model"] == "memory-model"
    assert request["response_format"] == {"type": "json_object"}
    transcript = request["messages"][-1]["content"]
    assert "[m3] user" in transcript and "[m2] assistant" in transcript
    # Other people's memories are untouched.
    assert [m.id for m in await world.stack.memory.current(other_user, None)] == [others.id]


async def test_without_a_model_server_consolidation_names_the_setting_and_marks_nothing_done(
    world: World, models: ModelClients,
) -> None:
    session, _ = await world.session(FIRST_CONVERSATION)
    unconfigured = ConsolidationService(
        pool=world.pool, models=models, memory=world.stack.memory,
        settings=world.stack.settings, clock=world.clock,
    )
    try:
        with pytest.raises(LLMUnavailable) as caught:
            await unconfigured.consolidate_session(session)
    finally:
        await unconfigured.aclose()
    assert caught.value.retryable is False
    assert "OPENAI_API_KEY" in caught.value.suggestion
    assert "OPENAI_BASE_URL" in caught.value.suggestion
    assert await world.pool.fetchval(
        "select consolidated_through from public.sessions where id = $1", session
    ) is None
    assert await world.current() == {}


async def test_a_later_session_supersedes_what_changed_and_keeps_what_did_not(
    world: World,
) -> None:
    first, ids = await world.session(FIRST_CONVERSATION)
    world.server.chat_script = [first_answer(ids)]
    await world.consolidation.consolidate_session(first)
    second, _ = await world.session(
        [("user", "I stopped eating fish. My favorite food is ramen now; still nursing.")],
        start=START + timedelta(days=2),
    )
    world.server.chat_script = [{"json": {"memories": [
        {"category": "PREFERENCE", "key": "favorite_food", "value": "ramen",
         "source_message_ids": ["m1"]},
        {"category": "FACT", "key": "job", "value": "Nurse in Porto.",
         "source_message_ids": ["m1"]},
    ]}}]

    result = await world.consolidation.consolidate_session(second)

    assert (result.saved, result.unchanged) == (1, 1)
    assert (await world.current())["favorite_food"] == "ramen"
    history = await key_versions(
        world.stack.pool, world.user, world.companion, "PREFERENCE", "favorite_food"
    )
    assert [m.value for m in history] == ["ramen", "sushi"]
    jobs = await key_versions(world.stack.pool, world.user, world.companion, "FACT", "job")
    assert len(jobs) == 1
    # The model is told the keys in use, so it can reuse them when something changes.
    system = world.chat_requests()[-1]["messages"][0]["content"]
    assert "PREFERENCE/favorite_food: sushi" in system


async def test_a_run_cut_short_by_an_llm_failure_resumes_from_the_last_saved_batch(
    world: World,
) -> None:
    turns = FIRST_CONVERSATION + [
        ("user", "Also, please never call me Anita."),
        ("assistant", "Got it, Ana."),
    ]
    session, ids = await world.session(turns)
    world.server.chat_script = [first_answer(ids), "this is not json"]

    with pytest.raises(LLMUnavailable):
        await world.consolidation.consolidate_session(session)

    # The first batch (4 messages) is saved and marked done; the second is not marked.
    assert set(await world.current()) == {"job", "favorite_food", "brother_visit"}
    watermark = await world.pool.fetchval(
        "select consolidated_through from public.sessions where id = $1", session
    )
    assert watermark == START + timedelta(minutes=4)

    world.server.chat_script = [{"json": {"memories": [
        {"category": "BOUNDARY", "key": "name_to_avoid", "value": "never call her Anita",
         "source_message_ids": ["m1"]},
    ]}}]
    result = await world.consolidation.consolidate_session(session)

    assert (result.messages, result.saved) == (2, 1)
    resumed = world.chat_requests()[-1]["messages"][-1]["content"]
    assert "Anita" in resumed and "sushi" not in resumed
    assert (await world.current())["name_to_avoid"] == "never call her Anita"


async def test_rerunning_after_a_crash_before_the_watermark_moved_writes_nothing_twice(
    world: World,
) -> None:
    session, ids = await world.session(FIRST_CONVERSATION)
    world.server.chat_script = [first_answer(ids)]
    await world.consolidation.consolidate_session(session)
    rows_before = await world.pool.fetchval("select count(*) from public.memories")
    # The state a crash between saving and advancing the watermark leaves behind.
    await world.pool.execute(
        "update public.sessions set consolidated_through = null where id = $1", session
    )
    # Asked again, the model words some values differently.
    world.server.chat_script = [{"json": {"memories": [
        {"category": "FACT", "key": "job", "value": "works as a nurse",
         "source_message_ids": ["m1"]},
        {"category": "PREFERENCE", "key": "favorite_food", "value": "Sushi!",
         "source_message_ids": ["m3"]},
        {"category": "EVENT", "key": "brother_visit", "value": "brother Leo comes next Friday",
         "source_message_ids": ["m3"]},
    ]}}]

    result = await world.consolidation.consolidate_session(session)

    assert (result.saved, result.unchanged) == (0, 3)
    assert await world.pool.fetchval("select count(*) from public.memories") == rows_before
    assert (await world.current())["job"] == "nurse in Porto"


async def test_every_n_turns_a_live_session_is_consolidated_in_the_background(
    world: World,
) -> None:
    session, ids = await world.session(FIRST_CONVERSATION, ended=False)
    world.server.chat_script = [first_answer(ids)]

    for _ in range(3):
        world.consolidation.note_turn(session)
    await world.consolidation.drain()
    assert world.chat_requests() == []
    world.consolidation.note_turn(session)
    await world.consolidation.drain()

    assert set(await world.current()) == {"job", "favorite_food", "brother_visit"}
    assert world.consolidation.stats()["saved"] == 3


async def test_messages_of_the_last_seconds_wait_for_the_next_mid_session_run(
    world: World,
) -> None:
    session, ids = await world.session(FIRST_CONVERSATION, ended=False)
    world.clock.now = START + timedelta(minutes=4, seconds=3)
    world.server.chat_script = [first_answer(ids)]

    result = await world.consolidation.consolidate_session(session, final=False)

    assert result.messages == 3
    transcript = world.chat_requests()[-1]["messages"][-1]["content"]
    assert "Sushi with Leo" not in transcript


async def test_the_sweep_resumes_unconsolidated_sessions_and_skips_finished_ones(
    world: World,
) -> None:
    done, done_ids = await world.session(FIRST_CONVERSATION)
    world.server.chat_script = [first_answer(done_ids)]
    await world.consolidation.consolidate_session(done)
    pending, _ = await world.session(
        [("user", "My cat is called Miso.")], start=START + timedelta(minutes=10)
    )
    still_live, _ = await world.session(
        [("user", "I am learning Japanese.")], start=world.clock.now, ended=False
    )
    world.server.chat_script = [{"json": {"memories": [
        {"category": "PERSON", "key": "cat_name", "value": "Miso", "source_message_ids": ["m1"]},
    ]}}]
    calls_before = len(world.chat_requests())

    result = await world.consolidation.consolidate_pending()

    assert (result.messages, result.saved) == (1, 1)
    assert len(world.chat_requests()) == calls_before + 1
    assert (await world.current())["cat_name"] == "Miso"
    assert await world.pool.fetchval(
        "select consolidated_through from public.sessions where id = $1", still_live
    ) is None


async def test_a_failed_background_run_is_counted_and_leaves_the_session_pending(
    world: World,
) -> None:
    session, _ = await world.session(FIRST_CONVERSATION)
    world.server.fail_next(1, status=500, path_prefix="/v1/chat/completions")

    world.consolidation.schedule(session, final=True)
    await world.consolidation.drain()

    assert world.consolidation.stats()["failures"] == 1
    assert await world.pool.fetchval(
        "select consolidated_through from public.sessions where id = $1", session
    ) is None
    assert await world.current() == {}


# --- maintenance ------------------------------------------------------------------------------


async def test_near_duplicate_memories_under_different_keys_are_merged(world: World) -> None:
    memory = world.stack.memory
    older = await memory.remember(world.user, world.companion, "PREFERENCE", "favorite_food",
                                  "sushi", importance=0.9)
    world.clock.now += timedelta(minutes=1)
    newer = await memory.remember(world.user, world.companion, "PREFERENCE", "favourite_food",
                                  "Sushi")
    same_words = await memory.remember(world.user, world.companion, "FACT", "city_home",
                                       "Porto")
    world.clock.now += timedelta(minutes=1)
    reordered = await memory.remember(world.user, world.companion, "FACT", "home_city", "porto")
    distinct = await memory.remember(world.user, world.companion, "FACT", "job", "nurse")

    assert await world.upkeep.merge_duplicates() == 2
    assert await world.upkeep.merge_duplicates() == 0

    current = {m.id: m for m in await memory.current(world.user, world.companion)}
    assert set(current) == {newer.id, reordered.id, distinct.id}
    assert current[newer.id].importance == pytest.approx(0.9)
    merged_into = await world.pool.fetch(
        "select id, superseded_by from public.memories where id = any($1::uuid[])",
        [older.id, same_words.id],
    )
    assert {r["id"]: r["superseded_by"] for r in merged_into} == {
        older.id: newer.id, same_words.id: reordered.id,
    }


async def test_contradicting_memories_are_flagged_once_on_both_sides(world: World) -> None:
    memory = world.stack.memory
    blue = await memory.remember(world.user, world.companion, "PREFERENCE", "favorite_color",
                                 "blue")
    green = await memory.remember(world.user, world.companion, "PREFERENCE", "favourite_color",
                                  "green")
    unrelated = await memory.remember(world.user, world.companion, "PREFERENCE", "music",
                                      "jazz")

    assert await world.upkeep.flag_contradictions() == 2
    assert await world.upkeep.flag_contradictions() == 0

    current = {m.id: m for m in await memory.current(world.user, world.companion)}
    assert current[blue.id].source["contradicts"] == [str(green.id)]
    assert current[green.id].source["contradicts"] == [str(blue.id)]
    assert "contradicts" not in current[unrelated.id].source


async def test_decay_lowers_unused_episodes_at_most_once_a_day(world: World) -> None:
    memory = world.stack.memory
    memory.log_turn(world.user, world.companion, None, "user", "I went to the beach with Leo")
    await world.stack.settle()
    boundary = await memory.remember(world.user, world.companion, "BOUNDARY", "topic",
                                     "no talk about work")
    past_event = await memory.remember(world.user, world.companion, "EVENT", "concert",
                                       "concert tomorrow")
    episode_before = await world.pool.fetchval(
        "select importance from public.memories where kind = 'episodic'"
    )

    # Episodic rows carry the database's own now() as updated_at; go past both clocks.
    world.clock.now = max(datetime.now(UTC), world.clock.now) + timedelta(days=3)
    first = await world.upkeep.decay()
    again = await world.upkeep.decay()

    assert (first, again) == (2, 0)
    episode_after = await world.pool.fetchval(
        "select importance from public.memories where kind = 'episodic'"
    )
    assert episode_after == pytest.approx(episode_before * 0.98, rel=1e-4)
    rows = {r["id"]: r["importance"] for r in await world.pool.fetch(
        "select id, importance from public.memories where kind = 'explicit'")}
    assert rows[boundary.id] == pytest.approx(boundary.importance)
    assert rows[past_event.id] < past_event.importance


async def test_at_a_full_quota_new_keys_are_counted_out_and_the_session_is_still_marked_done(
    world: World,
) -> None:
    settings = world.stack.settings.model_copy(update={"memory_quota_per_user": 1})
    memory = MemoryService(
        pool=world.pool, cache=world.stack.cache, batcher=world.stack.batcher,
        embedder=world.stack.embedder, settings=settings, clock=world.clock,
    )
    models = ModelClients.create(settings)
    consolidation = ConsolidationService(
        pool=world.pool, models=models, memory=memory, settings=settings, clock=world.clock,
    )
    session, ids = await world.session(FIRST_CONVERSATION)
    world.server.chat_script = [first_answer(ids)]
    try:
        result = await consolidation.consolidate_session(session)
    finally:
        await consolidation.aclose()
        await memory.aclose()
        await models.aclose()
    # One key fits; the other two are over the quota, counted, and the run is done.
    assert (result.saved, result.rejected) == (1, 5)
    assert consolidation.stats()["over_quota"] == 2
    assert len(await world.current()) == 1
    assert await world.pool.fetchval(
        "select consolidated_through from public.sessions where id = $1", session
    ) == START + timedelta(minutes=4)


async def test_a_final_consolidation_lets_the_persons_old_distilled_turns_expire(
    world: World,
) -> None:
    long_ago = START - timedelta(days=400)
    await world.stack.memory.import_episodes(world.user, world.companion, [
        Episode("user", "something said long ago", long_ago),
    ])
    session, ids = await world.session(FIRST_CONVERSATION)
    world.server.chat_script = [first_answer(ids)]
    await world.consolidation.consolidate_session(session, final=True)
    assert await world.pool.fetchval(
        "select count(*) from public.memories where user_id = $1 and kind = 'episodic'",
        world.user,
    ) == 0
    assert (await world.stack.memory.stats())["episodes_expired"] == 1
