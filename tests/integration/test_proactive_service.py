from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.redis_cache import RedisCache
from services.people.companion_service import Companion, CompanionService
from services.people.follow_up_service import FollowUpService
from services.persona.pad import BigFive
from services.persona.personality_service import PersonalityService
from services.persona.proactive_decisions import NudgeLedger
from services.persona.proactive_service import ProactiveService
from tests.support.clocks import HandClock

pytestmark = pytest.mark.integration


async def new_user(pool: ConnectionPool) -> uuid.UUID:
    """A users row, as UserService.ensure would make it on first contact."""
    user = uuid.uuid4()
    await pool.execute("insert into users (id) values ($1)", user)
    return user


async def follow_up(
    pool: ConnectionPool, companion: Companion, topic: str, *, due_at: datetime
) -> uuid.UUID:
    """An open follow-up of this pair, as a session's summary leaves one."""
    return await pool.fetchval(
        "insert into follow_ups (user_id, companion_id, topic, due_at, created_at) "
        "values ($1, $2, $3, $4, $4::timestamptz - interval '1 day') returning id",
        companion.user_id, companion.id, topic, due_at,
    )


WAIT_S = 10.0  # generous bound for an awaited event, never a timing assertion


@pytest.fixture
def clock() -> HandClock:
    return HandClock(datetime(2026, 11, 25, 18, 0, tzinfo=UTC))  # a Wednesday


@pytest.fixture
def settings(make_settings):
    return make_settings(silence_nudge_after_s=0.02, max_nudges_per_session=2,
                         proactive_threshold=0.3)


@pytest.fixture
async def parts(pool: ConnectionPool, settings, clock) -> AsyncIterator[dict]:
    cache = await RedisCache.create(settings)
    batcher = DatabaseBatcher(pool=pool, settings=settings)
    await batcher.start()
    companions = CompanionService(pool=pool, cache=cache, settings=settings)
    personality = PersonalityService(pool=pool, cache=cache, batcher=batcher, settings=settings,
                                     clock=clock)
    follow_ups = FollowUpService(pool=pool, batcher=batcher, clock=clock)
    proactive = ProactiveService(follow_ups=follow_ups, personality=personality,
                                 settings=settings, clock=clock)
    yield {"companions": companions, "personality": personality, "proactive": proactive,
           "batcher": batcher}
    await batcher.aclose()
    await cache.aclose()


@pytest.fixture
async def companion(parts, pool) -> Companion:
    return await parts["companions"].resolve(await new_user(pool))


# --- nudges ---------------------------------------------------------------------------------


async def test_nudges_are_bounded_per_session_and_never_repeated_word_for_word(
    parts, companion: Companion, clock: HandClock, pool
) -> None:
    proactive: ProactiveService = parts["proactive"]
    await follow_up(pool, companion, "the interview", due_at=clock.now - timedelta(hours=1))
    ledger = NudgeLedger(max_nudges=2)
    said = []
    for _ in range(5):
        nudge = await proactive.plan_nudge(companion.user_id, companion, silence_s=60,
                                           engagement=0.5, ledger=ledger)
        if nudge is not None:
            ledger.record(nudge)
            said.append(nudge.instructions)
    assert len(said) == 2 == len(set(said))
    assert "the interview" in said[0] and "the interview" not in said[1]
    # A new session gets a fresh allowance.
    assert await proactive.plan_nudge(companion.user_id, companion, silence_s=60,
                                      engagement=0.0, ledger=NudgeLedger(max_nudges=2)) is not None


async def test_no_nudge_while_the_proactive_score_is_below_the_threshold(
    pool, make_settings, clock, companion: Companion
) -> None:
    strict = make_settings(proactive_threshold=0.99)
    cache = await RedisCache.create(strict)
    batcher = DatabaseBatcher(pool=pool, settings=strict)
    personality = PersonalityService(pool=pool, cache=cache, batcher=batcher, settings=strict,
                                     clock=clock)
    proactive = ProactiveService(
        follow_ups=FollowUpService(pool=pool, batcher=batcher, clock=clock),
        personality=personality, settings=strict, clock=clock,
    )
    assert await proactive.plan_nudge(companion.user_id, companion, silence_s=5,
                                      engagement=0.0, ledger=NudgeLedger(max_nudges=2)) is None
    await batcher.aclose()
    await cache.aclose()


async def test_a_reserved_companion_waits_longer_than_an_outgoing_one(
    parts, clock: HandClock, pool
) -> None:
    proactive: ProactiveService = parts["proactive"]
    companions: CompanionService = parts["companions"]
    user = await new_user(pool)
    shy = await companions.create(user, name="Shy", traits=BigFive(extraversion=0.0))
    bold = await companions.create(user, name="Bold", traits=BigFive(extraversion=1.0))
    shy_nudge, bold_nudge = [
        await proactive.plan_nudge(user, companion, silence_s=0.0, engagement=0.0,
                                   ledger=NudgeLedger(max_nudges=2))
        for companion in (shy, bold)
    ]
    assert shy_nudge is None  # 0.25 * 0.5 need + 0 < 0.3
    assert bold_nudge is not None


async def test_the_watcher_nudges_after_silence_with_a_due_follow_up_and_marks_it_raised(
    parts, companion: Companion, clock: HandClock, pool
) -> None:
    proactive: ProactiveService = parts["proactive"]
    item = await follow_up(pool, companion, "the dentist", due_at=clock.now - timedelta(days=1))
    said: asyncio.Queue[str] = asyncio.Queue()
    watcher = proactive.watcher(companion.user_id, companion, on_nudge=said.put_nowait)
    watcher.agent_state("listening")
    first = await asyncio.wait_for(said.get(), WAIT_S)
    second = await asyncio.wait_for(said.get(), WAIT_S)
    assert "the dentist" in first and first != second
    # max_nudges_per_session=2: nothing more is even scheduled.
    assert watcher.nudges == 2 and watcher._timer is None
    await watcher.aclose()
    await parts["batcher"].flush()
    assert await pool.fetchval("select status from follow_ups where id = $1", item) == "raised"


async def test_the_watcher_stays_quiet_while_the_user_speaks(
    parts, companion: Companion
) -> None:
    said: asyncio.Queue[str] = asyncio.Queue()
    watcher = parts["proactive"].watcher(companion.user_id, companion, on_nudge=said.put_nowait)
    watcher.agent_state("listening")
    watcher.user_state("speaking")
    await asyncio.sleep(0.2)  # ten silence periods
    assert said.empty()
    watcher.user_state("listening")
    assert await asyncio.wait_for(said.get(), WAIT_S)
    await watcher.aclose()
