"""RedisCache against a real redis-server, including killing, pausing and restarting it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from core.errors import InvalidInput
from infrastructure.redis_cache import KEY_PREFIX, RedisCache
from tests.support.servers import RedisProcess, free_port

pytestmark = pytest.mark.integration

# Generous: these only bound how long a broken build waits before failing, not a speed claim.
WAIT_S = 20.0


async def wait_until(condition: Callable[[], bool], give_up_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + give_up_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


def unique(name: str) -> str:
    # The session's redis-server is shared by every test in the run.
    return f"{name}:{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def raw(redis_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def cache(redis_server: RedisProcess, make_settings) -> AsyncIterator[RedisCache]:
    cache = await RedisCache.create(make_settings(redis_enabled=True, redis_url=redis_server.url))
    yield cache
    await cache.aclose()


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server this test alone may kill, pause and restart."""
    server = RedisProcess()
    server.start()
    yield server
    if server.running:
        resume(server)
    server.kill()


def pid_of(server: RedisProcess) -> int:
    proc = server._proc
    assert proc is not None, "redis-server is not running"
    return proc.pid


def pause(server: RedisProcess) -> None:
    # A stopped process keeps its port open, so calls hang instead of being refused: the
    # timeout path, like a blackholed network.
    os.kill(pid_of(server), signal.SIGSTOP)


def resume(server: RedisProcess) -> None:
    os.kill(pid_of(server), signal.SIGCONT)


async def raw_get(url: str, key: str) -> str | None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        value = await client.get(key)
        assert value is None or isinstance(value, str)
        return value
    finally:
        await client.aclose()


async def test_values_round_trip_through_redis_under_the_prefix_and_lookups_are_counted(
    cache: RedisCache, raw: aioredis.Redis
) -> None:
    key = unique("profile")
    await cache.set_json(key, {"name": "Ada", "interests": ["chess"], "age": 36})

    assert await raw.get(KEY_PREFIX + key) == '{"name":"Ada","interests":["chess"],"age":36}'
    assert await cache.get_json(key) == {"name": "Ada", "interests": ["chess"], "age": 36}
    assert await cache.get_json(unique("absent")) is None

    stats = cache.stats()
    assert stats["backend"] == "redis"
    assert stats["redis_configured"] is True
    assert (stats["hits"], stats["misses"], stats["sets"]) == (1, 1, 1)
    assert (stats["errors"], stats["fallbacks"]) == (0, 0)
    # Redis is the store: nothing is kept in the process while it works.
    assert stats["local_entries"] == 0


async def test_a_value_written_by_one_process_is_read_by_another(
    cache: RedisCache, redis_server: RedisProcess, make_settings
) -> None:
    key = unique("shared")
    other = await RedisCache.create(make_settings(redis_enabled=True, redis_url=redis_server.url))
    try:
        await cache.set_json(key, [1, "two"])
        assert await other.get_json(key) == [1, "two"]
        await other.delete(key)
        assert await cache.get_json(key) is None
    finally:
        await other.aclose()


async def test_a_value_expires_in_redis_after_its_ttl(
    cache: RedisCache, raw: aioredis.Redis
) -> None:
    key = unique("short")
    await cache.set_json(key, "soon gone", ttl_s=1)

    assert 0 < await raw.pttl(KEY_PREFIX + key) <= 1000
    await asyncio.sleep(1.1)  # past the TTL; Redis checks expiry on every read
    assert await cache.get_json(key) is None


async def test_the_default_ttl_is_set_in_redis(
    redis_server: RedisProcess, make_settings, raw: aioredis.Redis
) -> None:
    cache = await RedisCache.create(
        make_settings(redis_enabled=True, redis_url=redis_server.url, cache_default_ttl_s=77)
    )
    try:
        key = unique("default")
        await cache.set_json(key, 1)
        assert 70_000 < await raw.pttl(KEY_PREFIX + key) <= 77_000
    finally:
        await cache.aclose()


async def test_incr_counts_in_a_fixed_window_on_redis(
    cache: RedisCache, raw: aioredis.Redis
) -> None:
    key = unique("rate")

    assert [await cache.incr(key, 1) for _ in range(3)] == [1, 2, 3]
    assert 0 < await raw.pttl(KEY_PREFIX + key) <= 1000
    await asyncio.sleep(1.1)  # past the window
    assert await cache.incr(key, 1) == 1
    assert await cache.get_json(key) == 1


async def test_delete_removes_several_keys_from_redis(
    cache: RedisCache, raw: aioredis.Redis
) -> None:
    keys = [unique("d") for _ in range(3)]
    for key in keys:
        await cache.set_json(key, key)

    await cache.delete(keys[0], keys[1])

    assert await raw.exists(*(KEY_PREFIX + k for k in keys)) == 1
    assert await cache.get_json(keys[2]) == keys[2]
    assert cache.stats()["deletes"] == 2


async def test_bad_values_and_counters_raise_invalid_input_and_redis_stays_in_use(
    cache: RedisCache, raw: aioredis.Redis
) -> None:
    key = unique("bad")
    with pytest.raises(InvalidInput) as info:
        await cache.set_json(key, {"ids": {uuid.uuid4()}})
    assert info.value.suggestion
    assert await raw.exists(KEY_PREFIX + key) == 0

    await cache.set_json(key, {"not": "a counter"})
    with pytest.raises(InvalidInput):
        await cache.incr(key, 60)

    stats = cache.stats()
    assert stats["backend"] == "redis"
    assert (stats["errors"], stats["fallbacks"]) == (0, 0)


async def test_an_unreachable_redis_at_start_falls_back_without_raising(make_settings) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    cache = await RedisCache.create(
        make_settings(redis_enabled=True, redis_url=url, redis_retry_interval_s=3600)
    )
    try:
        await cache.set_json("k", {"v": 1})
        assert await cache.get_json("k") == {"v": 1}
        assert await cache.incr("rate", 60) == 1

        stats = cache.stats()
        assert stats["backend"] == "memory"
        assert (stats["fallbacks"], stats["errors"]) == (1, 1)
        assert stats["last_error"] == "ConnectionError"
    finally:
        await cache.aclose()


async def test_redis_killed_mid_run_falls_back_and_returns_when_restarted_on_the_same_port(
    own_redis: RedisProcess, make_settings
) -> None:
    cache = await RedisCache.create(
        make_settings(redis_enabled=True, redis_url=own_redis.url, redis_retry_interval_s=0.2)
    )
    try:
        await cache.set_json("before", 1)
        assert await raw_get(own_redis.url, KEY_PREFIX + "before") == "1"

        own_redis.kill()

        # The fallback starts empty; no Redis error reaches the caller.
        assert await cache.get_json("before") is None
        await cache.set_json("during", {"x": 1})
        assert await cache.get_json("during") == {"x": 1}
        assert [await cache.incr("rate:u1", 60) for _ in range(2)] == [1, 2]
        await cache.delete("during")
        assert await cache.get_json("during") is None

        stats = cache.stats()
        assert stats["backend"] == "memory"
        assert stats["fallbacks"] == 1
        assert stats["errors"] == 1
        assert stats["reconnects"] == 0

        own_redis.start()
        assert await wait_until(lambda: cache.stats()["backend"] == "redis")

        await cache.set_json("after", [1, 2])
        assert await raw_get(own_redis.url, KEY_PREFIX + "after") == "[1,2]"
        assert await cache.get_json("after") == [1, 2]
        stats = cache.stats()
        assert (stats["fallbacks"], stats["reconnects"]) == (1, 1)
        assert stats["probes"] >= 1
        assert stats["local_entries"] == 0
    finally:
        await cache.aclose()


async def test_a_dead_redis_is_not_tried_again_before_the_probe_interval(
    own_redis: RedisProcess, make_settings
) -> None:
    cache = await RedisCache.create(
        make_settings(redis_enabled=True, redis_url=own_redis.url, redis_retry_interval_s=3600)
    )
    try:
        own_redis.kill()
        assert await cache.get_json("k") is None
        own_redis.start()

        for i in range(20):
            await cache.set_json(f"k{i}", i)
            assert await cache.get_json(f"k{i}") == i

        stats = cache.stats()
        assert stats["backend"] == "memory"
        assert (stats["probes"], stats["errors"], stats["fallbacks"]) == (0, 1, 1)
        assert await raw_get(own_redis.url, KEY_PREFIX + "k0") is None
    finally:
        await cache.aclose()


async def test_a_hung_redis_times_out_once_and_keys_changed_meanwhile_are_invalidated_on_return(
    own_redis: RedisProcess, make_settings
) -> None:
    cache = await RedisCache.create(
        make_settings(redis_enabled=True, redis_url=own_redis.url, redis_retry_interval_s=0.3)
    )
    try:
        await cache.set_json("profile", {"v": 1})
        await cache.set_json("untouched", {"v": 1})

        pause(own_redis)
        await cache.set_json("profile", {"v": 2})
        assert await cache.get_json("profile") == {"v": 2}
        await cache.delete("untouched")
        stats = cache.stats()
        assert stats["backend"] == "memory"
        assert (stats["fallbacks"], stats["errors"]) == (1, 1)
        assert stats["last_error"] == "TimeoutError"
        assert stats["pending_invalidations"] == 2

        resume(own_redis)
        assert await wait_until(lambda: cache.stats()["backend"] == "redis")

        # Redis may still hold copies from before the outage; they must not be served.
        assert await raw_get(own_redis.url, KEY_PREFIX + "profile") is None
        assert await raw_get(own_redis.url, KEY_PREFIX + "untouched") is None
        assert await cache.get_json("profile") is None
        assert cache.stats()["pending_invalidations"] == 0
    finally:
        await cache.aclose()
