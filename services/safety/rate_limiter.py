"""Per-user rate limits: tool calls and memory writes.

Limits count in fixed one-minute windows aligned to the clock, through the cache's `incr`, so
every worker process shares one count while Redis is up; during a Redis outage each process
counts on its own in-process fallback (looser, never stricter). Aligned windows let the
refusal say exactly when the next window opens.

The memory quota is not here: it is checked inside each save's own transaction
(`services.memory.explicit_memories`), the one place where it can be exact.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.config import Settings
from core.errors import LimitExceeded

if TYPE_CHECKING:
    from infrastructure.cache import Cache

logger = logging.getLogger(__name__)

WINDOW_S = 60
# Keys outlive their window a little so a slow clock on one worker still sees the count.
_KEY_TTL_S = WINDOW_S + 5


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


class RateLimiter:
    """Checks, and counts, one user's tool calls and memory writes.

    Each `check_*` call counts one event and raises when that event is over the limit, so call
    it once per attempt, before doing the work.

    Args:
        cache: the shared cache (`incr` for windows).
        settings: `tool_calls_per_minute`, `memory_writes_per_minute`.
        clock: wall-clock seconds (windows are aligned to it across processes).
    """

    def __init__(
        self,
        *,
        cache: Cache,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._settings = settings
        self._clock = clock
        self._counters: dict[str, int] = {
            "tool_calls_allowed": 0,
            "tool_calls_refused": 0,
            "memory_writes_allowed": 0,
            "memory_writes_refused": 0,
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
