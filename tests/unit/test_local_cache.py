"""The in-process TTL+LRU cache, and RedisCache when no Redis is configured."""

from __future__ import annotations

import math
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ConfigError, InvalidInput
from infrastructure.cache import Cache
from infrastructure.in_process_cache import InProcessCache
from infrastructure.redis_cache import RedisCache

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_cache(max_entries: int = 100, default_ttl_s: int = 60) -> tuple[InProcessCache, FakeClock]:
    clock = FakeClock()
    return InProcessCache(max_entries=max_entries, default_ttl_s=default_ttl_s, clock=clock), clock


async def test_a_stored_value_is_a_hit_and_an_unknown_key_is_a_miss() -> None:
    cache, _ = make_cache()
    await cache.set_json("profile:1", {"name": "Ada", "tags": ["a", "b"], "n": 3})

    assert await cache.get_json("profile:1") == {"name": "Ada", "tags": ["a", "b"], "n": 3}
    assert await cache.get_json("profile:2") is None

    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["sets"]) == (1, 1, 1)
    assert stats["hit_rate"] == 0.5


async def test_a_value_expires_after_its_ttl_and_the_expiry_is_counted() -> None:
    cache, clock = make_cache()
    await cache.set_json("k", "v", ttl_s=10)

    clock.advance(9.9)
    assert await cache.get_json("k") == "v"
    clock.advance(0.2)
    assert await cache.get_json("k") is None
    assert cache.stats()["expirations"] == 1
    assert len(cache) == 0


async def test_the_default_ttl_applies_when_none_is_given() -> None:
    cache, clock = make_cache(default_ttl_s=30)
    await cache.set_json("k", 1)

    clock.advance(29)
    assert await cache.get_json("k") == 1
    clock.advance(2)
    assert await cache.get_json("k") is None


async def test_the_least_recently_used_entry_is_evicted_at_capacity() -> None:
    cache, _ = make_cache(max_entries=3)
    for key in ("a", "b", "c"):
        await cache.set_json(key, key)
    # Reading "a" makes "b" the least recently used.
    assert await cache.get_json("a") == "a"

    await cache.set_json("d", "d")

    assert await cache.get_json("b") is None
    assert [await cache.get_json(k) for k in ("a", "c", "d")] == ["a", "c", "d"]
    assert cache.stats()["evictions"] == 1
    assert len(cache) == 3


async def test_overwriting_a_key_does_not_evict_anything() -> None:
    cache, _ = make_cache(max_entries=2)
    await cache.set_json("a", 1)
    await cache.set_json("b", 2)
    await cache.set_json("a", 3)

    assert await cache.get_json("a") == 3
    assert await cache.get_json("b") == 2
    assert cache.stats()["evictions"] == 0


@given(st.lists(st.sampled_from("abcdefghij"), max_size=60), st.integers(1, 5))
def test_the_cache_never_exceeds_capacity_and_keeps_the_latest_keys(
    keys: list[str], capacity: int
) -> None:
    cache = InProcessCache(max_entries=capacity, default_ttl_s=60, clock=FakeClock())
    for i, key in enumerate(keys):
        cache.set_raw(key, str(i), 60)

    assert len(cache) <= capacity
    latest: list[str] = []
    for key in reversed(keys):
        if key not in latest:
            latest.append(key)
    for key in latest[:capacity]:
        assert cache.get_raw(key) == str(max(i for i, k in enumerate(keys) if k == key))


async def test_incr_counts_within_a_fixed_window_and_restarts_after_it() -> None:
    cache, clock = make_cache()

    assert [await cache.incr("rate:u1", 60) for _ in range(3)] == [1, 2, 3]
    # Later events do not extend the window: it ends 60 s after the first one.
    clock.advance(59)
    assert await cache.incr("rate:u1", 60) == 4
    clock.advance(1.5)
    assert await cache.incr("rate:u1", 60) == 1
    assert await cache.incr("rate:u2", 60) == 1
    assert await cache.get_json("rate:u1") == 1


async def test_incr_on_a_key_holding_a_non_integer_raises_invalid_input() -> None:
    cache, _ = make_cache()
    await cache.set_json("profile", {"a": 1})

    with pytest.raises(InvalidInput) as info:
        await cache.incr("profile", 60)
    assert info.value.suggestion


async def test_returned_values_are_copies_that_cannot_change_the_cache() -> None:
    cache, _ = make_cache()
    await cache.set_json("k", {"items": [1, 2]})

    got = await cache.get_json("k")
    assert got is not None
    got["items"].append(3)

    assert await cache.get_json("k") == {"items": [1, 2]}


async def test_delete_removes_every_given_key() -> None:
    cache, _ = make_cache()
    for key in ("a", "b", "c"):
        await cache.set_json(key, key)

    await cache.delete("a", "b", "missing")

    assert [await cache.get_json(k) for k in ("a", "b", "c")] == [None, None, "c"]
    assert cache.stats()["deletes"] == 3


@pytest.mark.parametrize(
    "value",
    [{1, 2}, object(), uuid.uuid4(), {"when": b"bytes"}, math.nan],
    ids=["set", "object", "uuid", "bytes", "nan"],
)
async def test_a_value_that_is_not_json_raises_invalid_input_with_a_suggestion(
    value: object,
) -> None:
    cache, _ = make_cache()

    with pytest.raises(InvalidInput) as info:
        await cache.set_json("k", value)

    assert "JSON" in info.value.message
    assert info.value.suggestion
    assert len(cache) == 0


@pytest.mark.parametrize("key", ["", None, 42])
async def test_a_key_that_is_not_a_non_empty_string_is_rejected(key: object) -> None:
    cache, _ = make_cache()

    with pytest.raises(InvalidInput):
        await cache.set_json(key, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await cache.get_json(key)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [0, -5, True])
async def test_a_ttl_that_is_not_positive_is_rejected(ttl: int) -> None:
    cache, _ = make_cache()

    with pytest.raises(InvalidInput):
        await cache.set_json("k", 1, ttl_s=ttl)
    with pytest.raises(InvalidInput):
        await cache.incr("k", ttl)


@pytest.mark.parametrize(
    "overrides",
    [{"redis_enabled": False, "redis_url": "redis://127.0.0.1:1/0"},
     {"redis_enabled": True, "redis_url": None}],
    ids=["disabled", "no-url"],
)
async def test_without_redis_configured_the_in_process_cache_serves(
    make_settings, overrides: dict[str, object]
) -> None:
    cache = await RedisCache.create(make_settings(cache_local_max_entries=16, **overrides))
    try:
        assert isinstance(cache, Cache)
        await cache.set_json("k", {"v": 1})
        assert await cache.get_json("k") == {"v": 1}
        assert await cache.get_json("nope") is None
        assert await cache.incr("rate", 60) == 1
        assert await cache.incr("rate", 60) == 2
        await cache.delete("k")
        assert await cache.get_json("k") is None

        stats = cache.stats()
        assert stats["backend"] == "memory"
        assert stats["redis_configured"] is False
        assert (stats["hits"], stats["misses"], stats["sets"], stats["deletes"]) == (1, 2, 1, 1)
        # Not having Redis is a choice, not a failure.
        assert (stats["fallbacks"], stats["errors"], stats["probes"]) == (0, 0, 0)
    finally:
        await cache.aclose()


async def test_the_in_process_fallback_of_redis_cache_evicts_at_its_configured_capacity(
    make_settings,
) -> None:
    cache = await RedisCache.create(make_settings(cache_local_max_entries=16))
    try:
        for i in range(20):
            await cache.set_json(f"k{i}", i)

        stats = cache.stats()
        assert stats["local_entries"] == 16
        assert stats["local_evictions"] == 4
        assert await cache.get_json("k0") is None
        assert await cache.get_json("k19") == 19
    finally:
        await cache.aclose()


async def test_a_redis_url_with_another_scheme_is_a_config_error(make_settings) -> None:
    settings = make_settings(redis_enabled=True, redis_url="http://127.0.0.1:6379")

    with pytest.raises(ConfigError) as info:
        await RedisCache.create(settings)
    assert "redis://" in info.value.suggestion
