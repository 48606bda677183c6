"""Per-user rate limits, on real Redis and on the in-process fallback."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from core.config import Settings
from core.errors import LimitExceeded
from infrastructure.redis_cache import RedisCache
from services.safety.rate_limiter import RateLimiter, RateLimitExceeded
from tests.support.servers import RedisProcess

pytestmark = pytest.mark.integration

# Ten seconds into a minute, so the next window opens in 50 s.
T0 = 1_790_000_000.0 - (1_790_000_000.0 % 60) + 10


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limits(make_settings, backend: str, redis_server: RedisProcess | None) -> Settings:
    extra: dict[str, object] = {}
    if backend == "redis":
        assert redis_server is not None
        extra = {"redis_enabled": True, "redis_url": redis_server.url}
    return make_settings(
        tool_calls_per_minute=3, memory_writes_per_minute=2, **extra
    )


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings(make_settings, backend: str, request: pytest.FixtureRequest) -> Settings:
    server = request.getfixturevalue("redis_server") if backend == "redis" else None
    return limits(make_settings, backend, server)


@pytest.fixture
async def cache(settings: Settings, backend: str) -> AsyncIterator[RedisCache]:
    cache = await RedisCache.create(settings)
    assert cache.backend == backend
    yield cache
    await cache.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(cache: RedisCache, settings: Settings, clock: Clock) -> RateLimiter:
    return RateLimiter(cache=cache, settings=settings, clock=clock)


async def test_tool_calls_over_the_limit_are_refused_with_when_to_retry(
    limiter: RateLimiter,
) -> None:
    user = uuid.uuid4()
    for _ in range(3):
        await limiter.check_tool_call(user, "remember")
    with pytest.raises(RateLimitExceeded) as refused:
        await limiter.check_tool_call(user, "remember")
    error = refused.value
    assert isinstance(error, LimitExceeded) and error.retryable
    assert error.kind == "tool_calls" and error.limit == 3 and error.retry_after_s == 50
    assert str(error) == (
        "too many tool calls: the limit is 3 per minute (wait 50 seconds and try again)"
    )
    assert limiter.stats()["tool_calls_allowed"] == 3
    assert limiter.stats()["tool_calls_refused"] == 1


async def test_the_next_minute_opens_a_new_window(limiter: RateLimiter, clock: Clock) -> None:
    user = uuid.uuid4()
    for _ in range(3):
        await limiter.check_tool_call(user)
    clock.now += 49
    with pytest.raises(RateLimitExceeded) as refused:
        await limiter.check_tool_call(user)
    assert refused.value.retry_after_s == 1
    assert "wait 1 second and" in str(refused.value)
    clock.now += 1
    for _ in range(3):
        await limiter.check_tool_call(user)


async def test_each_user_has_their_own_limits(limiter: RateLimiter) -> None:
    greedy, other = uuid.uuid4(), uuid.uuid4()
    for _ in range(3):
        await limiter.check_tool_call(greedy)
    with pytest.raises(RateLimitExceeded):
        await limiter.check_tool_call(greedy)
    for _ in range(3):
        await limiter.check_tool_call(other)


async def test_memory_writes_are_limited_separately_from_tool_calls(
    limiter: RateLimiter,
) -> None:
    user = uuid.uuid4()
    await limiter.check_memory_write(user)
    await limiter.check_memory_write(user)
    with pytest.raises(RateLimitExceeded) as refused:
        await limiter.check_memory_write(user)
    assert refused.value.kind == "memory_writes" and refused.value.limit == 2
    assert "too many memory changes" in str(refused.value)
    for _ in range(3):
        await limiter.check_tool_call(user)


async def test_workers_sharing_redis_share_one_count(
    make_settings, redis_server: RedisProcess, clock: Clock
) -> None:
    settings = limits(make_settings, "redis", redis_server)
    first, second = await RedisCache.create(settings), await RedisCache.create(settings)
    try:
        worker_a = RateLimiter(cache=first, settings=settings, clock=clock)
        worker_b = RateLimiter(cache=second, settings=settings, clock=clock)
        user = uuid.uuid4()
        await worker_a.check_tool_call(user)
        await worker_b.check_tool_call(user)
        await worker_a.check_tool_call(user)
        with pytest.raises(RateLimitExceeded):
            await worker_b.check_tool_call(user)
    finally:
        await first.aclose()
        await second.aclose()


async def test_limits_keep_working_when_redis_dies_mid_window(
    make_settings, redis_server: RedisProcess, clock: Clock
) -> None:
    settings = limits(make_settings, "redis", redis_server)
    cache = await RedisCache.create(settings)
    try:
        limiter = RateLimiter(cache=cache, settings=settings, clock=clock)
        user = uuid.uuid4()
        await limiter.check_tool_call(user)
        redis_server.kill()
        # The fallback counts per process from zero: looser for one window, never an error.
        for _ in range(3):
            await limiter.check_tool_call(user)
        assert cache.backend == "memory"
        with pytest.raises(RateLimitExceeded):
            await limiter.check_tool_call(user)
    finally:
        if not redis_server.running:
            redis_server.start()
        await cache.aclose()
