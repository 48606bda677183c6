"""Follow-ups over real Postgres: stored from a session's summary, due by one rule for the
greeting and the nudges, raised once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.model_clients import ModelClients
from infrastructure.redis_cache import RedisCache
from services.people.companion_service import Companion, CompanionService
from services.people.conversation_service import SUMMARY_OP, ConversationService
from services.people.follow_up_service import FollowUpService, NewFollowUp
from tests.support.clocks import HandClock

pytestmark = pytest.mark.integration

FRIDAY = date(2026, 11, 27)


@dataclass
class World:
    pool: ConnectionPool
    batcher: DatabaseBatcher
    companions: CompanionService
    follow_ups: FollowUpService
    conversations: ConversationService
    clock: HandClock

    async def person(self) -> Companion:
        """A new user and their default companion."""
        user = uuid.uuid4()
        await self.pool.execute("insert into users (id) values ($1)", user)
        return await self.companions.resolve(user)

    async def session_leaves(
        self, companion: Companion, *follow_ups: NewFollowUp, tz: str = "UTC",
        session_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """A session of this pair that ended now, leaving these follow-ups."""
        if session_id is None:
            session_id = await self.pool.fetchval(
                "insert into sessions (user_id, companion_id, started_at, last_activity_at) "
                "values ($1, $2, $3, $3) returning id",
                companion.user_id, companion.id, self.clock.now,
            )
        # Stored as a session's end stores them: with its summary, in one write.
        topics, details, due = self.follow_ups.columns(follow_ups, ZoneInfo(tz))
        self.batcher.enqueue(SUMMARY_OP, (
            session_id, "They talked.", companion.user_id, self.clock.now, companion.id,
            topics, details, due,
        ))
        await self.batcher.flush()
        return session_id

    async def due_now(self, companion: Companion) -> list[str]:
        """The topics due for a session beginning now."""
        due = await self.follow_ups.due(
            companion.user_id, companion.id, session_started_at=self.clock.now
        )
        return [f.topic for f in due]


@pytest.fixture
async def world(pool: ConnectionPool, models: ModelClients, make_settings) -> AsyncIterator[World]:
    settings = make_settings()
    clock = HandClock(datetime(2026, 11, 25, 18, 0, tzinfo=UTC))  # a Wednesday
    cache = await RedisCache.create(settings)
    batcher = DatabaseBatcher(pool=pool, settings=settings)
    await batcher.start()
    follow_ups = FollowUpService(pool=pool, batcher=batcher, clock=clock)
    conversations = ConversationService(
        pool=pool, models=models, cache=cache, batcher=batcher, follow_ups=follow_ups,
        settings=settings, clock=clock,
    )
    companions = CompanionService(pool=pool, cache=cache, settings=settings)
    yield World(pool, batcher, companions, follow_ups, conversations, clock)
    await conversations.aclose()
    await batcher.aclose()
    await cache.aclose()


async def test_a_dated_follow_up_is_due_from_the_day_after_its_day_and_raised_only_once(
    world: World,
) -> None:
    veda = await world.person()
    await world.session_leaves(veda, NewFollowUp("the interview", "", FRIDAY))
    world.clock.advance(days=1)  # Thursday
    assert await world.due_now(veda) == []
    world.clock.advance(days=1, hours=4)  # Friday evening is still the day itself
    assert await world.due_now(veda) == []
    world.clock.advance(hours=12)  # Saturday morning
    due = await world.follow_ups.due(veda.user_id, veda.id, session_started_at=world.clock.now)
    assert [f.topic for f in due] == ["the interview"]

    world.follow_ups.mark_raised(veda.user_id, [f.id for f in due])
    await world.batcher.flush()

    world.clock.advance(days=1)
    assert await world.due_now(veda) == []
    row = await world.pool.fetchrow("select status, raised_at from follow_ups")
    assert row is not None
    assert (row["status"], row["raised_at"]) == ("raised", world.clock.now - timedelta(days=1))


async def test_a_day_is_read_in_the_persons_time_zone(world: World) -> None:
    veda = await world.person()
    await world.session_leaves(veda, NewFollowUp("the exam", "", FRIDAY), tz="Asia/Karachi")
    due_at = await world.pool.fetchval("select due_at from follow_ups")
    assert due_at == datetime(2026, 11, 28, tzinfo=ZoneInfo("Asia/Karachi"))


async def test_an_undated_follow_up_waits_for_a_later_session(world: World) -> None:
    veda = await world.person()
    session_one = world.clock.now
    world.clock.advance(minutes=5)
    await world.session_leaves(veda, NewFollowUp("the new puppy", "", None))
    assert await world.follow_ups.due(
        veda.user_id, veda.id, session_started_at=session_one
    ) == []
    world.clock.advance(days=1)
    assert await world.due_now(veda) == ["the new puppy"]


async def test_follow_ups_belong_to_their_user_and_companion_unless_shared(
    world: World,
) -> None:
    veda = await world.person()
    luna = await world.companions.create(veda.user_id, name="Luna")
    stranger = await world.person()
    await world.session_leaves(luna, NewFollowUp("Luna's topic", "", None))
    await world.session_leaves(stranger, NewFollowUp("a stranger's", "", None))
    await world.pool.execute(
        "insert into follow_ups (user_id, topic, created_at) values ($1, 'shared topic', $2)",
        veda.user_id, world.clock.now,
    )
    world.clock.advance(minutes=1)

    assert await world.due_now(veda) == ["shared topic"]
    assert set(await world.due_now(luna)) == {"Luna's topic", "shared topic"}
    due = await world.follow_ups.due(luna.user_id, luna.id, session_started_at=world.clock.now)
    world.follow_ups.mark_raised(stranger.user_id, [f.id for f in due])
    await world.batcher.flush()
    assert set(await world.due_now(luna)) == {"Luna's topic", "shared topic"}


async def test_a_session_summarized_again_replaces_its_open_follow_ups_only(
    world: World,
) -> None:
    veda = await world.person()
    session = await world.session_leaves(
        veda, NewFollowUp("the cold", "", None), NewFollowUp("the move", "", None)
    )
    world.clock.advance(minutes=1)
    raised = [f for f in await world.follow_ups.due(
        veda.user_id, veda.id, session_started_at=world.clock.now) if f.topic == "the move"]
    world.follow_ups.mark_raised(veda.user_id, [f.id for f in raised])
    await world.batcher.flush()

    await world.session_leaves(veda, NewFollowUp("the cold", "better now?", None),
                               session_id=session)

    rows = await world.pool.fetch("select topic, detail, status from follow_ups order by topic")
    assert [tuple(r) for r in rows] == [
        ("the cold", "better now?", "open"), ("the move", "", "raised"),
    ]


async def test_the_greeting_brings_up_exactly_the_follow_ups_a_nudge_would(
    world: World,
) -> None:
    veda = await world.person()
    await world.session_leaves(
        veda,
        NewFollowUp("the interview", "ask how it went", FRIDAY),
        NewFollowUp("the trip", "", date(2026, 11, 20)),
        NewFollowUp("the puppy", "", None),
    )
    world.clock.advance(days=1)

    context = await world.conversations.greeting_context(veda.user_id, veda.id)

    due = await world.follow_ups.due(veda.user_id, veda.id, session_started_at=world.clock.now)
    assert context.follow_ups == tuple(due)
    assert [f.label for f in context.follow_ups] == ["the trip", "the puppy"]
