"""A TTL + LRU cache of JSON payloads inside this process: Redis's stand-in and fallback."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from core.config import Settings
from core.errors import ConfigError
from infrastructure.cache import check_key, check_ttl, encode_json, not_a_counter


class InProcessCache:
    """A TTL + LRU cache of JSON payloads inside this process.

    Values are stored encoded, so callers get a fresh copy on every read (as they do from
    Redis) and cannot change the cache by mutating what they got. Expired entries are dropped
    when touched; at capacity the least recently used entry is evicted.

    Args:
        max_entries: how many keys to keep before evicting.
        default_ttl_s: TTL used when `set_json` gets `ttl_s=None`.
        clock: monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        default_ttl_s: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ConfigError(
                "in-process cache needs room for at least one entry",
                suggestion="set CACHE_LOCAL_MAX_ENTRIES to 16 or more",
            )
        self.max_entries = max_entries
        self.default_ttl_s = default_ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._sets = 0
        self._deletes = 0
        self._incrs = 0
        self._evictions = 0
        self._expirations = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> InProcessCache:
        return cls(
            max_entries=settings.cache_local_max_entries,
            default_ttl_s=settings.cache_default_ttl_s,
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def evictions(self) -> int:
        return self._evictions

    # Raw payload methods: RedisCache uses these so a value is encoded only once.

    def get_raw(self, key: str) -> str | None:
        entry = self._live_entry(key)
        if entry is None:
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return entry[1]

    def set_raw(self, key: str, payload: str, ttl_s: float) -> None:
        self._sets += 1
        self._store(key, payload, self._clock() + ttl_s)

    def delete_raw(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._deletes += 1
            self._entries.pop(key, None)

    def incr_sync(self, key: str, ttl_s: float) -> int:
        self._incrs += 1
        entry = self._live_entry(key)
        if entry is None:
            # A new window starts with the first event and ends ttl_s later, like Redis.
            self._store(key, "1", self._clock() + ttl_s)
            return 1
        expires_at, payload = entry
        try:
            count = int(payload) + 1
        except ValueError:
            raise not_a_counter() from None
        self._store(key, str(count), expires_at)
        return count

    def clear(self) -> None:
        self._entries.clear()

    # The Cache protocol.

    async def get_json(self, key: str) -> Any | None:
        check_key(key)
        payload = self.get_raw(key)
        return None if payload is None else json.loads(payload)

    async def set_json(self, key: str, value: Any, ttl_s: int | None = None) -> None:
        check_key(key)
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        check_ttl(ttl)
        self.set_raw(key, encode_json(value), ttl)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            check_key(key)
        self.delete_raw(keys)

    async def incr(self, key: str, ttl_s: int) -> int:
        check_key(key)
        check_ttl(ttl_s)
        return self.incr_sync(key, ttl_s)

    def stats(self) -> dict[str, Any]:
        lookups = self._hits + self._misses
        return {
            "backend": "memory",
            "entries": len(self._entries),
            "max_entries": self.max_entries,
            "hits": self._hits,
            "misses": self._misses,
            "hit_rate": round(self._hits / lookups, 4) if lookups else 0.0,
            "sets": self._sets,
            "deletes": self._deletes,
            "incrs": self._incrs,
            "evictions": self._evictions,
            "expirations": self._expirations,
        }

    async def aclose(self) -> None:
        self.clear()

    def _live_entry(self, key: str) -> tuple[float, str] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            self._expirations += 1
            return None
        return entry

    def _store(self, key: str, payload: str, expires_at: float) -> None:
        self._entries[key] = (expires_at, payload)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self._evictions += 1
