from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest

from core.errors import InvalidInput
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.redis_cache import RedisCache
from services.people.companion_service import Companion, CompanionService
from services.persona.pad import BigFive
from services.persona.personality_service import PersonalityService
from services.persona.proactive_service import ProactiveService

pytestmark = pytest.mark.integration


async def new_user(pool: ConnectionPool) -> uuid.UUID:
    """A users row, as UserService.ensure would make it on first contact."""
    user = uuid.uuid4()
    await pool.execute("insert into users (id) values ($1)", user)
    return user

WAIT_S = 10.0  # generous bound for an awaited event, never a timing assertion
FRIDAY = date(2026, 11, 27)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)  # a Wednesday

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


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
    proactive = ProactiveService(pool=pool, personality=personality, settings=settings,
                                 clock=clock)
    yield {"companions": companions, "personality": personality, "proactive": proactive}
    await batcher.aclose()
    await cache.aclose()


@pytest.fixture
async def companion(parts, pool) -> Companion:
    return await parts["companions"].resolve(await new_user(pool))


# --- follow-ups -----------------------------------------------------------------------------


async def test_a_dated_follow_up_is_raised_in_the_first_session_after_its_date_and_only_once(
    parts, companion: Companion, clock: Clock
) -> None:
    proactive: ProactiveService = parts["proactive"]
    user = companion.user_id
    item = await proactive.add_follow_up(user, companion.id, "the interview", due=FRIDAY)
    # Session on Thursday: not yet.
    clock.advance(days=1)
    thursday = await proactive.opening(user, companion, last_seen_at=clock.now - timedelta(days=1))
    assert thursday.follow_ups == ()
    assert "interview" not in thursday.instructions
    # Friday evening is still the day itself; Saturday is the first session after it.
    clock.advance(days=1, hours=4)
    assert await proactive.due_follow_ups(user, companion.id) == []
    clock.advance(hours=12)
    saturday = await proactive.opening(user, companion, last_seen_at=clock.now - timedelta(days=2))
    assert [f.id for f in saturday.follow_ups] == [item.id]
    assert "the interview" in saturday.instructions
    # Raised now, so the next session does not ask again.
    clock.advance(days=1)
    sunday = await proactive.opening(user, companion, last_seen_at=clock.now - timedelta(days=1))
    assert sunday.follow_ups == ()


async def test_an_undated_follow_up_waits_for_the_next_session(
    parts, companion: Companion, clock: Clock
) -> None:
    proactive: ProactiveService = parts["proactive"]
    session_one = clock.now
    clock.advance(minutes=5)
    await proactive.add_follow_up(companion.user_id, companion.id, "the new puppy")
    assert await proactive.due_follow_ups(
        companion.user_id, companion.id, session_started_at=session_one) == []
    clock.advance(days=1)
    due = await proactive.due_follow_ups(companion.user_id, companion.id,
                                         session_started_at=clock.now)
    assert [f.topic for f in due] == ["the new puppy"]


async def test_follow_ups_belong_to_their_user_and_companion_unless_shared(
    parts, companion: Companion, clock: Clock, pool
) -> None:
    proactive: ProactiveService = parts["proactive"]
    companions: CompanionService = parts["companions"]
    user = companion.user_id
    luna = await companions.create(user, name="Luna")
    stranger = await companions.resolve(await new_user(pool))
    await proactive.add_follow_up(user, luna.id, "Luna's topic", due=clock.now)
    await proactive.add_follow_up(user, None, "shared topic", due=clock.now)
    await proactive.add_follow_up(stranger.user_id, stranger.id, "a stranger's", due=clock.now)
    clock.advance(minutes=1)
    mine = {f.topic for f in await proactive.due_follow_ups(user, companion.id)}
    lunas = {f.topic for f in await proactive.due_follow_ups(user, luna.id)}
    assert mine == {"shared topic"}
    assert lunas == {"Luna's topic", "shared topic"}
    assert await proactive.mark_raised(stranger.user_id, [
        f.id for f in await proactive.due_follow_ups(user, luna.id)]) == 0


async def test_a_closed_follow_up_is_never_raised(parts, companion: Companion, clock) -> None:
    proactive: ProactiveService = parts["proactive"]
    item = await proactive.add_follow_up(companion.user_id, companion.id, "the exam",
                                         due=clock.now)
    assert await proactive.close_follow_up(companion.user_id, item.id)
    assert not await proactive.close_follow_up(uuid.uuid4(), item.id)
    clock.advance(days=1)
    assert await proactive.due_follow_ups(companion.user_id, companion.id) == []
    with pytest.raises(InvalidInput):
        await proactive.close_follow_up(companion.user_id, item.id, status="maybe")


async def test_follow_ups_need_a_topic_and_an_aware_due_time(parts, companion) -> None:
    proactive: ProactiveService = parts["proactive"]
    with pytest.raises(InvalidInput):
        await proactive.add_follow_up(companion.user_id, companion.id, "  ")
    with pytest.raises(InvalidInput):
        await proactive.add_follow_up(companion.user_id, companion.id, "x",
                                      due=datetime(2026, 1, 1))


# --- opening --------------------------------------------------------------------------------


async def test_the_companion_greets_first_introducing_itself_to_a_new_user(
    parts, companion: Companion
) -> None:
    opening = await parts["proactive"].opening(companion.user_id, companion, last_seen_at=None)
    assert opening.reason == "first meeting"
    assert "Speak first" in opening.instructions and companion.name in opening.instructions


async def test_a_long_absence_makes_the_greeting_say_it_has_been_a_while(
    parts, companion: Companion, clock: Clock
) -> None:
    proactive: ProactiveService = parts["proactive"]
    back = await proactive.opening(companion.user_id, companion,
                                   last_seen_at=clock.now - timedelta(days=9), user_name="Sam")
    assert back.reason == "returning after a gap"
    assert "9 days" in back.instructions and "Sam" in back.instructions
    soon = await proactive.opening(companion.user_id, companion,
                                   last_seen_at=clock.now - timedelta(hours=2))
    assert soon.reason == "returning user"
    assert back.score > soon.score


# --- nudges ---------------------------------------------------------------------------------


async def test_nudges_are_bounded_per_session_and_never_repeated_word_for_word(
    parts, companion: Companion, clock: Clock
) -> None:
    proactive: ProactiveService = parts["proactive"]
    await proactive.add_follow_up(companion.user_id, companion.id, "the interview",
                                  due=clock.now - timedelta(hours=1))
    ledger = proactive.new_ledger()
    said = []
    for _ in range(5):
        text = await proactive.nudge_for_silence(companion.user_id, companion, silence_s=60,
                                                 ledger=ledger, engagement=0.5)
        if text is not None:
            said.append(text)
    assert len(said) == 2 == len(set(said))
    assert "the interview" in said[0] and "the interview" not in said[1]
    # The follow-up raised by the nudge is done for good.
    assert await proactive.due_follow_ups(companion.user_id, companion.id) == []
    # A new session gets a fresh allowance.
    assert await proactive.nudge_for_silence(companion.user_id, companion, silence_s=60,
                                             ledger=proactive.new_ledger()) is not None


async def test_no_nudge_while_the_proactive_score_is_below_the_threshold(
    pool, make_settings, clock, companion: Companion
) -> None:
    strict = make_settings(proactive_threshold=0.99)
    cache = await RedisCache.create(strict)
    batcher = DatabaseBatcher(pool=pool, settings=strict)
    personality = PersonalityService(pool=pool, cache=cache, batcher=batcher, settings=strict,
                                     clock=clock)
    proactive = ProactiveService(pool=pool, personality=personality, settings=strict, clock=clock)
    ledger = proactive.new_ledger()
    assert await proactive.nudge_for_silence(companion.user_id, companion, silence_s=5,
                                             ledger=ledger) is None
    assert ledger.count == 0
    await batcher.aclose()
    await cache.aclose()


async def test_a_reserved_companion_waits_longer_than_an_outgoing_one(
    parts, clock: Clock, pool
) -> None:
    proactive: ProactiveService = parts["proactive"]
    companions: CompanionService = parts["companions"]
    user = await new_user(pool)
    shy = await companions.create(user, name="Shy", traits=BigFive(extraversion=0.0))
    bold = await companions.create(user, name="Bold", traits=BigFive(extraversion=1.0))
    kwargs = {"silence_s": 0.0, "engagement": 0.0}
    shy_nudge = await proactive.plan_nudge(user, shy, ledger=proactive.new_ledger(), **kwargs)
    bold_nudge = await proactive.plan_nudge(user, bold, ledger=proactive.new_ledger(), **kwargs)
    assert shy_nudge is None  # 0.25 * 0.5 need + 0 < 0.3
    assert bold_nudge is not None


async def test_the_watcher_nudges_after_silence_with_a_due_follow_up_and_marks_it_raised(
    parts, companion: Companion, clock: Clock, pool
) -> None:
    proactive: ProactiveService = parts["proactive"]
    item = await proactive.add_follow_up(companion.user_id, companion.id, "the dentist",
                                         due=clock.now - timedelta(days=1))
    said: asyncio.Queue[str] = asyncio.Queue()
    watcher = proactive.watcher(companion.user_id, companion, on_nudge=said.put_nowait)
    watcher.agent_state("listening")
    first = await asyncio.wait_for(said.get(), WAIT_S)
    second = await asyncio.wait_for(said.get(), WAIT_S)
    assert "the dentist" in first and first != second
    # max_nudges_per_session=2: nothing more is even scheduled.
    assert watcher.nudges == 2 and watcher._timer is None
    await watcher.aclose()
    assert await pool.fetchval("select status from follow_ups where id = $1", item.id) == "raised"


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
