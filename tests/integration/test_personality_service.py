from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.redis_cache import RedisCache
from services.people.companion_service import Companion, CompanionService
from services.persona.pad import PAD, BigFive, temperament
from services.persona.personality_service import PersonalityService
from services.persona.personality_state import MoodState
from tests.support.clocks import HandClock

pytestmark = pytest.mark.integration


async def new_user(pool: ConnectionPool) -> uuid.UUID:
    """A users row, as UserService.ensure would make it on first contact."""
    user = uuid.uuid4()
    await pool.execute("insert into users (id) values ($1)", user)
    return user

async def mood_of(
    service: PersonalityService, user: uuid.UUID, companion: Companion
) -> MoodState:
    return (await service.snapshot(user, companion)).mood


HALF_LIFE_S = 1800.0
QUIRK_HALF_LIFE_S = 14 * 86_400.0


def close_to(a: PAD, b: PAD, tol: float = 1e-6) -> bool:
    """Postgres keeps PAD as `real`: equal up to float32 rounding."""
    return all(abs(x - y) <= tol for x, y in zip(a.as_tuple(), b.as_tuple(), strict=True))


@pytest.fixture
def settings(make_settings):
    return make_settings(mood_half_life_s=HALF_LIFE_S, mood_drift_rate=0.25,
                         mood_drift_max_step=0.05, quirk_min_repeats=3)


@pytest.fixture
async def batcher(pool: ConnectionPool, settings) -> AsyncIterator[DatabaseBatcher]:
    batcher = DatabaseBatcher(pool=pool, settings=settings)
    await batcher.start()
    yield batcher
    await batcher.aclose()


@pytest.fixture
def clock() -> HandClock:
    return HandClock(datetime(2026, 11, 21, 9, 0, tzinfo=UTC))


async def fresh_cache(settings) -> RedisCache:
    return await RedisCache.create(settings)


@pytest.fixture
async def cache(settings) -> AsyncIterator[RedisCache]:
    cache = await fresh_cache(settings)
    yield cache
    await cache.aclose()


@pytest.fixture
def personality(pool, cache, batcher, settings, clock) -> PersonalityService:
    return PersonalityService(pool=pool, cache=cache, batcher=batcher, settings=settings,
                              clock=clock)


@pytest.fixture
async def companion(pool, cache, settings) -> Companion:
    service = CompanionService(pool=pool, cache=cache, settings=settings)
    return await service.resolve(await new_user(pool))


async def test_a_new_pair_starts_at_the_companions_temperament(
    personality: PersonalityService, companion: Companion
) -> None:
    state = await mood_of(personality, companion.user_id, companion)
    assert state.mood == state.baseline == temperament(companion.traits)
    assert state.emotion == "content"


async def test_a_sad_turn_lowers_pleasure_and_a_happy_one_raises_it(
    personality: PersonalityService, companion: Companion
) -> None:
    user = companion.user_id
    start = await mood_of(personality, user, companion)
    sad = await personality.on_user_turn(user, companion, "I failed my exam and I feel awful")
    assert sad.mood.pleasure < start.mood.pleasure
    happy = await personality.on_user_turn(user, companion, "Great news, I'm so happy!")
    assert happy.mood.pleasure > sad.mood.pleasure
    assert (await mood_of(personality, user, companion)).mood == happy.mood


async def test_mood_and_history_survive_a_new_service_over_the_same_database(
    pool, batcher, settings, clock, companion: Companion, personality: PersonalityService
) -> None:
    user = companion.user_id
    for text in ("I'm worried about tomorrow", "I'm really scared", "thanks for listening"):
        await personality.on_user_turn(user, companion, text)
        clock.advance(seconds=1)
    personality.observe_reply(user, companion, "Oh dear, that sounds hard. What happened?")
    ended = await personality.end_session(user, companion)
    await batcher.flush()

    cache = await fresh_cache(settings)  # a new worker: nothing cached
    other_batcher = DatabaseBatcher(pool=pool, settings=settings)
    again = PersonalityService(pool=pool, cache=cache, batcher=other_batcher, settings=settings,
                               clock=clock)
    state = await mood_of(again, user, companion)
    assert close_to(state.mood, ended.mood)
    assert close_to(state.baseline, ended.baseline)
    assert again.stats()["db_loads"] == 1
    reasons = [r["reason"] for r in await pool.fetch(
        "select reason from personality_history where user_id = $1 and companion_id = $2 "
        "order by created_at", user, companion.id)]
    assert reasons == ["user_turn", "user_turn", "user_turn", "session_end"]
    needs = await pool.fetchval(
        "select count(*) from needs where user_id = $1 and companion_id = $2", user, companion.id)
    assert needs == 4
    await cache.aclose()
    await other_batcher.aclose()


async def test_time_pulls_the_mood_back_toward_its_baseline(
    personality: PersonalityService, companion: Companion, clock: HandClock
) -> None:
    user = companion.user_id
    moved = await personality.on_user_turn(user, companion, "I'm furious, I HATE this!!!")
    gap = moved.mood.distance(moved.baseline)
    assert gap > 0.1
    clock.advance(seconds=HALF_LIFE_S)
    half = await mood_of(personality, user, companion)
    assert half.mood.distance(half.baseline) == pytest.approx(gap / 2, rel=1e-3)
    clock.advance(seconds=20 * HALF_LIFE_S)
    rested = await mood_of(personality, user, companion)
    assert rested.mood.distance(rested.baseline) < 1e-3
    assert rested.emotion == "content"


async def test_session_end_drifts_the_baseline_a_bounded_step_toward_the_sessions_mood(
    personality: PersonalityService, companion: Companion, batcher, pool
) -> None:
    user = companion.user_id
    before = (await mood_of(personality, user, companion)).baseline
    for _ in range(4):
        await personality.on_user_turn(user, companion, "I feel so sad and lonely, I cried")
    after = (await personality.end_session(user, companion)).baseline
    assert after.pleasure < before.pleasure
    for b, a in zip(before.as_tuple(), after.as_tuple(), strict=True):
        assert abs(a - b) <= 0.05 + 1e-9
    await batcher.flush()
    stored = await pool.fetchval(
        "select baseline_pleasure from personality_state where user_id = $1 "
        "and companion_id = $2", user, companion.id)
    assert stored == pytest.approx(after.pleasure, abs=1e-6)


async def test_a_session_without_turns_leaves_the_baseline_where_it_was(
    personality: PersonalityService, companion: Companion
) -> None:
    before = await mood_of(personality, companion.user_id, companion)
    after = await personality.end_session(companion.user_id, companion)
    assert after.baseline == before.baseline


async def test_fitting_talk_satisfies_needs_and_time_alone_lets_them_fade(
    personality: PersonalityService, companion: Companion, clock: HandClock
) -> None:
    user = companion.user_id
    start = (await personality.snapshot(user, companion)).needs
    await personality.on_user_turn(user, companion, "Why do you think history repeats? "
                                   "I've been reading a book about it")
    fed = (await personality.snapshot(user, companion)).needs
    assert fed.intellectual > start.intellectual
    assert fed.social > start.social
    assert fed.rest < start.rest
    clock.advance(seconds=3 * 86_400)
    later = (await personality.snapshot(user, companion)).needs
    assert later.social < fed.social and later.intellectual < fed.intellectual
    assert later.rest > fed.rest


async def test_companions_of_one_user_keep_separate_moods(
    pool, cache, settings, personality: PersonalityService, companion: Companion
) -> None:
    other = await CompanionService(pool=pool, cache=cache, settings=settings).create(
        companion.user_id, name="Luna", traits=BigFive(neuroticism=0.9))
    await personality.on_user_turn(companion.user_id, companion, "This is the worst day ever")
    untouched = await mood_of(personality, companion.user_id, other)
    assert untouched.mood == temperament(other.traits)


async def test_a_pattern_repeated_in_sessions_becomes_a_quirk_and_fades_without_use(
    personality: PersonalityService, companion: Companion, clock: HandClock, batcher, pool
) -> None:
    user = companion.user_id
    strengths = []
    for _ in range(2):
        for reply in ("Oh wow, tell me more!", "Oh wow, really?", "Oh wow, that's big."):
            personality.observe_reply(user, companion, reply)
        personality.observe_reply(user, companion, "Lovely weather.")  # a one-off opener
        await personality.end_session(user, companion)
        quirks = {q.name: q for q in (await personality.snapshot(user, companion)).quirks}
        assert "opener:lovely weather" not in quirks
        strengths.append(quirks["opener:oh wow"].strength)
    assert strengths[1] > strengths[0] > 0
    snapshot = await personality.snapshot(user, companion)
    text = personality.describe(companion, snapshot.mood, snapshot.quirks, snapshot.needs)
    assert "Oh wow" in text
    clock.advance(seconds=10 * QUIRK_HALF_LIFE_S)
    faded = {q.name: q for q in (await personality.snapshot(user, companion)).quirks}
    assert faded["opener:oh wow"].strength < strengths[1] / 100
    assert not faded["opener:oh wow"].active
    await batcher.flush()
    row = await pool.fetchrow(
        "select uses, strength from quirks where user_id = $1 and companion_id = $2 "
        "and name = 'opener:oh wow'", user, companion.id)
    assert row["uses"] == 6
    assert row["strength"] == pytest.approx(strengths[1], abs=1e-6)


async def test_describe_gives_one_compact_line_with_character_mood_and_needs(
    personality: PersonalityService, pool, cache, settings
) -> None:
    companion = await CompanionService(pool=pool, cache=cache, settings=settings).create(
        await new_user(pool), name="Iris", character="mentor",
        traits=BigFive(openness=0.9, extraversion=0.2))
    state = await personality.on_user_turn(companion.user_id, companion, "I'm so excited!!")
    snapshot = await personality.snapshot(companion.user_id, companion)
    text = personality.describe(companion, state, snapshot.quirks, snapshot.needs)
    assert text.startswith("You are Iris, the user's mentor.")
    assert "curious" in text and "reserved" in text
    assert f"Current mood: {state.emotion}" in text
    assert "\n" not in text and len(text) < 600


async def test_workers_sharing_redis_see_each_others_mood_before_it_is_flushed(
    pool, settings, make_settings, redis_server, clock, companion: Companion
) -> None:
    shared = make_settings(redis_enabled=True, redis_url=redis_server.url)
    caches = [await RedisCache.create(shared) for _ in range(2)]
    batchers = [DatabaseBatcher(pool=pool, settings=settings) for _ in range(2)]
    one, two = (PersonalityService(pool=pool, cache=c, batcher=b, settings=settings, clock=clock)
                for c, b in zip(caches, batchers, strict=True))
    state = await one.on_user_turn(companion.user_id, companion, "I'm thrilled, I won!")
    await one.drain()  # the turn's state is cached behind it, off the turn's path
    assert (await mood_of(two, companion.user_id, companion)).mood == state.mood
    for c in caches:
        await c.delete(f"personality:{companion.user_id}:{companion.id}")
        await c.aclose()
    for b in batchers:
        await b.aclose()


async def test_a_sessions_later_turns_read_nothing_and_its_state_is_cached_behind_in_order(
    pool, settings, make_settings, redis_server, clock, companion: Companion
) -> None:
    shared = make_settings(redis_enabled=True, redis_url=redis_server.url)
    cache, elsewhere = await RedisCache.create(shared), await RedisCache.create(shared)
    batcher = DatabaseBatcher(pool=pool, settings=settings)
    service = PersonalityService(pool=pool, cache=cache, batcher=batcher, settings=settings,
                                 clock=clock)
    other_worker = PersonalityService(pool=pool, cache=elsewhere, batcher=batcher,
                                      settings=settings, clock=clock)
    user = companion.user_id
    await service.on_user_turn(user, companion, "Hello there")  # the session's one load
    lookups = cache.stats()["hits"] + cache.stats()["misses"]
    states = []
    for text in ("I'm thrilled, I won!", "Now I'm worried", "I'm furious!!!", "Thanks, calmer"):
        clock.advance(seconds=1)
        states.append(await service.on_user_turn(user, companion, text))
        await asyncio.sleep(0)  # lets the write behind start while the next turn comes
    assert cache.stats()["hits"] + cache.stats()["misses"] == lookups
    await service.drain()
    assert (await mood_of(other_worker, user, companion)).mood == states[-1].mood
    ended = await service.end_session(user, companion)  # no drain: the end waits for its write
    assert (await mood_of(other_worker, user, companion)).baseline == ended.baseline
    for c in (cache, elsewhere):
        await c.delete(f"personality:{user}:{companion.id}")
        await c.aclose()
    await batcher.aclose()
