"""Per-user rate limits (tool calls, memory writes) and the per-user memory quota.

Limits count in fixed one-minute windows aligned to the clock, through the cache's `incr`, so
every worker process shares one count while Redis is up; during a Redis outage each process
counts on its own in-process fallback (looser, never stricter). Aligned windows let the
refusal say exactly when the next window opens.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.config import Settings
from core.errors import ConfigError, LimitExceeded

if TYPE_CHECKING:
    from infrastructure.cache import Cache
    from infrastructure.connection_pool import ConnectionPool

logger = logging.getLogger(__name__)

WINDOW_S = 60
# Keys outlive their window a little so a slow clock on one worker still sees the count.
_KEY_TTL_S = WINDOW_S + 5
USAGE_TTL_S = 15
_USAGE_SQL = (
    "select count(*) from public.memories where user_id = $1 "
    "and (kind = 'episodic' or superseded_at is null)"
)


class RateLimitExceeded(LimitExceeded):
    """A per-user rate limit was reached; retrying after `retry_after_s` seconds can succeed.

    Attributes:
        kind: which limit ("tool_calls" or "memory_writes").
        limit: how many events the window allows.
        retry_after_s: whole seconds until the next window opens.
    """

    def __init__(self, message: str, *, suggestion: str, kind: str, limit: int,
                 retry_after_s: int) -> None:
        super().__init__(message, suggestion=suggestion, retryable=True)
        self.kind = kind
        self.limit = limit
        self.retry_after_s = retry_after_s


class QuotaExceeded(LimitExceeded):
    """The user's memory quota is full; only forgetting memories makes room.

    Attributes:
        used: the user's current explicit plus episodic memories.
        quota: `settings.memory_quota_per_user`.
    """

    def __init__(self, message: str, *, suggestion: str, used: int, quota: int) -> None:
        super().__init__(message, suggestion=suggestion, retryable=False)
        self.used = used
        self.quota = quota


class RateLimiter:
    """Checks, and counts, one user's tool calls and memory writes; guards the memory quota.

    Each `check_*` call counts one event and raises when that event is over the limit, so call
    it once per attempt, before doing the work.

    Args:
        cache: the shared cache (`incr` for windows, JSON for the cached memory count).
        settings: `tool_calls_per_minute`, `memory_writes_per_minute`, `memory_quota_per_user`.
        pool: counts memories for the quota (the quota check needs it; the limits do not).
        clock: wall-clock seconds (windows are aligned to it across processes).
    """

    def __init__(
        self,
        *,
        cache: Cache,
        settings: Settings,
        pool: ConnectionPool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._settings = settings
        self._pool = pool
        self._clock = clock
        self._counters: dict[str, int] = {
            "tool_calls_allowed": 0,
            "tool_calls_refused": 0,
            "memory_writes_allowed": 0,
            "memory_writes_refused": 0,
            "quota_checks": 0,
            "quota_refused": 0,
        }

    async def check_tool_call(self, user_id: uuid.UUID, tool: str | None = None) -> None:
        """Count one tool call of `user_id`.

        Raises:
            RateLimitExceeded: more than `tool_calls_per_minute` calls in this minute.
        """
        await self._hit("tool_calls", user_id, self._settings.tool_calls_per_minute,
                        what="tool calls", tool=tool)

    async def check_memory_write(self, user_id: uuid.UUID) -> None:
        """Count one memory write (save, update, forget) of `user_id`.

        Raises:
            RateLimitExceeded: more than `memory_writes_per_minute` writes in this minute.
        """
        await self._hit("memory_writes", user_id, self._settings.memory_writes_per_minute,
                        what="memory changes")

    async def memory_usage(self, user_id: uuid.UUID) -> int:
        """The user's current explicit plus episodic memories (cached for `USAGE_TTL_S`)."""
        key = self._usage_key(user_id)
        cached = await self._cache.get_json(key)
        if isinstance(cached, int) and not isinstance(cached, bool):
            return cached
        if self._pool is None:
            raise ConfigError(
                "the rate limiter was built without a connection pool",
                suggestion="pass pool= to RateLimiter to use the memory quota",
            )
        used = int(await self._pool.fetchval(_USAGE_SQL, user_id))
        await self._cache.set_json(key, used, USAGE_TTL_S)
        return used

    async def check_memory_quota(self, user_id: uuid.UUID, *, adding: int = 1) -> None:
        """Refuse a write that would take the user past `memory_quota_per_user`.

        Raises:
            QuotaExceeded: the user's memories plus `adding` exceed the quota.
        """
        self._counters["quota_checks"] += 1
        quota = self._settings.memory_quota_per_user
        used = await self.memory_usage(user_id)
        if used + max(0, adding) <= quota:
            return
        self._counters["quota_refused"] += 1
        logger.info("memory quota reached (used=%s, quota=%s)", used, quota)
        raise QuotaExceeded(
            f"the memory is full: {used} of {quota} memories are in use",
            suggestion="ask me to forget things you no longer need (or to forget everything), "
            "then save this again",
            used=used,
            quota=quota,
        )

    async def forget_usage(self, user_id: uuid.UUID) -> None:
        """Drop the cached memory count, e.g. right after memories were forgotten."""
        await self._cache.delete(self._usage_key(user_id))

    def stats(self) -> dict[str, Any]:
        return dict(self._counters)

    async def _hit(
        self, kind: str, user_id: uuid.UUID, limit: int, *, what: str, tool: str | None = None
    ) -> None:
        now = self._clock()
        window = math.floor(now / WINDOW_S)
        count = await self._cache.incr(f"rate:{kind}:{user_id}:{window}", _KEY_TTL_S)
        if count <= limit:
            self._counters[f"{kind}_allowed"] += 1
            return
        self._counters[f"{kind}_refused"] += 1
        retry_after = max(1, math.ceil((window + 1) * WINDOW_S - now))
        logger.info("rate limit reached (kind=%s, tool=%s, limit=%s)", kind, tool, limit)
        raise RateLimitExceeded(
            f"too many {what}: the limit is {limit} per minute",
            suggestion=f"wait {retry_after} second{'s' if retry_after != 1 else ''} and try again",
            kind=kind,
            limit=limit,
            retry_after_s=retry_after,
        )

    @staticmethod
    def _usage_key(user_id: uuid.UUID) -> str:
        return f"quota:memories:{user_id}"
