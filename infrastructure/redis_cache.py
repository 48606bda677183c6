"""The shared JSON cache: Redis when it is configured and alive, the in-process one otherwise.

Redis sits on a voice turn's critical path, so a dead Redis must cost one short timeout and no
more: the first failed call switches to the in-process cache, and a background task probes
Redis at most every `settings.redis_retry_interval_s` and switches back once it answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from core.config import Settings
from core.errors import ConfigError
from infrastructure.cache import check_key, check_ttl, encode_json, not_a_counter
from infrastructure.in_process_cache import InProcessCache

logger = logging.getLogger(__name__)

KEY_PREFIX = "companion:"
DEFAULT_CONNECT_TIMEOUT_S = 0.25
DEFAULT_OP_TIMEOUT_S = 0.25
# Keys written during an outage are deleted from Redis in chunks of this size on its return.
_INVALIDATE_CHUNK = 500

# OSError covers refused connections and (on 3.11+) asyncio's TimeoutError.
BACKEND_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError)

T = TypeVar("T")


def _ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


class RedisCache:
    """Redis (keys prefixed `companion:`) with an automatic in-process fallback.

    Uses Redis when `settings.redis_enabled` and `settings.redis_url` are set, else only the
    in-process cache. When a Redis call fails it is counted, the cache switches to the
    in-process one (which starts empty, so reads miss and callers go to Postgres) and a
    background probe tries Redis again every `settings.redis_retry_interval_s`. On its return,
    keys written or deleted during the outage are deleted from Redis (their Redis copies may
    be stale) and the in-process entries are dropped. Callers never see a Redis error.

    Build it with `await RedisCache.create(settings)`.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        client: aioredis.Redis | None,
        local: InProcessCache,
        op_timeout_s: float = DEFAULT_OP_TIMEOUT_S,
    ) -> None:
        self._client = client
        self._local = local
        # Bounds every Redis call, including DNS and the connection handshake.
        self._deadline_s = 2 * op_timeout_s
        self._retry_interval_s = settings.redis_retry_interval_s
        self._default_ttl_s = settings.cache_default_ttl_s
        self._healthy = client is not None
        self._probe_task: asyncio.Task[None] | None = None
        self._dirty: set[str] = set()
        self._dirty_overflow = False
        self._closed = False
        self._hits = 0
        self._misses = 0
        self._sets = 0
        self._deletes = 0
        self._incrs = 0
        self._errors = 0
        self._fallbacks = 0
        self._reconnects = 0
        self._probes = 0
        self._last_error: str | None = None

    @classmethod
    async def create(
        cls,
        settings: Settings,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        op_timeout_s: float = DEFAULT_OP_TIMEOUT_S,
    ) -> RedisCache:
        """Connect to Redis if configured; an unreachable Redis starts in fallback mode."""
        local = InProcessCache.from_settings(settings)
        if not settings.redis_enabled or not settings.redis_url:
            reason = "disabled" if not settings.redis_enabled else "REDIS_URL unset"
            logger.info("redis %s; using the in-process cache", reason)
            return cls(settings=settings, client=None, local=local, op_timeout_s=op_timeout_s)
        try:
            client = aioredis.Redis.from_url(
                settings.redis_url.get_secret_value(),
                decode_responses=True,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=op_timeout_s,
                # One attempt per call: the fallback, not a retry loop, absorbs failures.
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError:
            raise ConfigError(
                "REDIS_URL is not a Redis URL",
                suggestion="use redis://host:port/0 or rediss://..., or unset REDIS_URL",
            ) from None
        cache = cls(settings=settings, client=client, local=local, op_timeout_s=op_timeout_s)
        try:
            await cache._redis(client.ping())
        except BACKEND_FAILURES as exc:
            cache._on_failure(exc)
        else:
            logger.info("redis connected; using it as the shared cache")
        return cache

    @property
    def backend(self) -> str:
        return "redis" if self._healthy else "memory"

    async def get_json(self, key: str) -> Any | None:
        check_key(key)
        # str: the client decodes responses (its annotation also allows bytes).
        payload: str | bytes | None
        if self._healthy:
            try:
                payload = await self._redis(self._client_or_fail().get(KEY_PREFIX + key))
            except BACKEND_FAILURES as exc:
                self._on_failure(exc)
                payload = self._local.get_raw(key)
        else:
            payload = self._local.get_raw(key)
        if payload is None:
            self._misses += 1
            return None
        try:
            value = json.loads(payload)
        except ValueError:
            # Something other than this class wrote the key; treat it as absent.
            logger.warning("cache key holds a value that is not JSON; ignoring it")
            self._errors += 1
            self._misses += 1
            return None
        self._hits += 1
        return value

    async def set_json(self, key: str, value: Any, ttl_s: int | None = None) -> None:
        check_key(key)
        ttl = self._default_ttl_s if ttl_s is None else ttl_s
        check_ttl(ttl)
        payload = encode_json(value)
        self._sets += 1
        if self._healthy:
            try:
                await self._redis(
                    self._client_or_fail().set(KEY_PREFIX + key, payload, px=_ms(ttl))
                )
                return
            except BACKEND_FAILURES as exc:
                self._on_failure(exc)
        self._mark_dirty(key)
        self._local.set_raw(key, payload, ttl)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            check_key(key)
        if not keys:
            return
        self._deletes += len(keys)
        if self._healthy:
            try:
                await self._redis(
                    self._client_or_fail().delete(*(KEY_PREFIX + k for k in keys))
                )
                return
            except BACKEND_FAILURES as exc:
                self._on_failure(exc)
        for key in keys:
            self._mark_dirty(key)
        self._local.delete_raw(keys)

    async def incr(self, key: str, ttl_s: int) -> int:
        """Count one event in the window that started with the first event for `key`."""
        check_key(key)
        check_ttl(ttl_s)
        self._incrs += 1
        if self._healthy:
            try:
                return await self._redis(self._redis_incr(KEY_PREFIX + key, ttl_s))
            except ResponseError as exc:
                if "not an integer" in str(exc):
                    raise not_a_counter() from None
                self._on_failure(exc)
            except BACKEND_FAILURES as exc:
                self._on_failure(exc)
        # Per-process only while Redis is away: limits are looser, never stricter.
        return self._local.incr_sync(key, ttl_s)

    def stats(self) -> dict[str, Any]:
        lookups = self._hits + self._misses
        return {
            "backend": self.backend,
            "redis_configured": self._client is not None,
            "hits": self._hits,
            "misses": self._misses,
            "hit_rate": round(self._hits / lookups, 4) if lookups else 0.0,
            "sets": self._sets,
            "deletes": self._deletes,
            "incrs": self._incrs,
            "errors": self._errors,
            "fallbacks": self._fallbacks,
            "reconnects": self._reconnects,
            "probes": self._probes,
            "last_error": self._last_error,
            "local_entries": len(self._local),
            "local_evictions": self._local.evictions,
            "pending_invalidations": len(self._dirty),
        }

    async def aclose(self) -> None:
        """Stop probing, close the Redis client and drop the in-process entries."""
        self._closed = True
        self._healthy = False
        task, self._probe_task = self._probe_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except BACKEND_FAILURES:
                logger.debug("redis client did not close cleanly", exc_info=True)
        self._local.clear()

    async def _redis(self, call: Awaitable[T]) -> T:
        async with asyncio.timeout(self._deadline_s):
            return await call

    def _client_or_fail(self) -> aioredis.Redis:
        if self._client is None:
            raise RedisError("redis client is closed")
        return self._client

    async def _redis_incr(self, key: str, ttl_s: float) -> int:
        # SET NX starts the window with its TTL; INCR alone would leave a key without one if
        # the process died between INCR and EXPIRE. MULTI makes the pair one round trip.
        async with self._client_or_fail().pipeline(transaction=True) as pipe:
            pipe.set(key, 0, px=_ms(ttl_s), nx=True)
            pipe.incr(key)
            _, count = await pipe.execute()
        return int(count)

    def _on_failure(self, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = type(exc).__name__
        if self._closed or self._client is None:
            return
        if self._healthy:
            self._healthy = False
            self._fallbacks += 1
            # The type only: Redis error texts can carry the URL and its password.
            logger.warning(
                "redis unavailable (%s); serving from the in-process cache", self._last_error
            )
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.create_task(self._probe_until_back())

    def _mark_dirty(self, key: str) -> None:
        if self._client is None:
            return
        if len(self._dirty) < self._local.max_entries:
            self._dirty.add(key)
        elif key not in self._dirty and not self._dirty_overflow:
            self._dirty_overflow = True
            logger.warning("too many keys changed during the redis outage to invalidate all")

    async def _probe_until_back(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._retry_interval_s)
            if await self._try_reconnect():
                return

    async def _try_reconnect(self) -> bool:
        client = self._client
        if client is None:
            return False
        self._probes += 1
        try:
            # Sockets to the old server are dead; start the pool afresh.
            await self._redis(client.connection_pool.disconnect())
            await self._redis(client.ping())
            await self._invalidate_changed_during_outage(client)
        except BACKEND_FAILURES as exc:
            logger.debug("redis still unavailable (%s)", type(exc).__name__)
            return False
        self._local.clear()
        self._dirty_overflow = False
        self._healthy = True
        self._reconnects += 1
        logger.info("redis is back; using it as the shared cache again")
        return True

    async def _invalidate_changed_during_outage(self, client: aioredis.Redis) -> None:
        # Loop because calls keep landing in the fallback (and dirtying keys) until we flip.
        while self._dirty:
            batch = [self._dirty.pop() for _ in range(min(_INVALIDATE_CHUNK, len(self._dirty)))]
            try:
                await self._redis(client.delete(*(KEY_PREFIX + k for k in batch)))
            except BaseException:
                self._dirty.update(batch)
                raise
