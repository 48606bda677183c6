"""Turns one user turn into one compact memory block for the LLM, within a hard time budget.

The block carries a profile line, the few memories that matter for this turn, and open
follow-ups. Retrieval is on the critical path of voice latency, so it runs under
`settings.rag_budget_ms`: when that passes (a slow embedding server, a busy database) or
anything fails, the turn goes on without memory and the miss is counted, never raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from core.config import Settings
from core.latency import LatencyWindow
from core.tasks import BackgroundTasks, log_failure
from rag_system.engine import RetrievalEngine
from rag_system.query import is_small_talk
from rag_system.scoring import ScoredMemory

if TYPE_CHECKING:
    from infrastructure.cache import Cache
    from services.memory.memory_service import MemoryService

logger = logging.getLogger(__name__)

MAX_MEMORY_CHARS = 220
MAX_FOLLOW_UPS = 3
MAX_BLOCK_CHARS = 1_600
# A repeated identical turn (a retry, an interruption) within this window reuses its block.
BLOCK_CACHE_TTL_S = 30


def when_label(occurred_at: datetime, now: datetime) -> str:
    """A short relative time for a memory: "today", "yesterday", "3 weeks ago", "May 2023"."""
    days = (now.date() - occurred_at.astimezone(UTC).date()).days
    if days <= 0:
        return "today"
    if days == 1:
        return "yesterday"
    if days < 7:
        return f"{days} days ago"
    if days < 31:
        weeks = days // 7
        return "1 week ago" if weeks == 1 else f"{weeks} weeks ago"
    if days < 365:
        months = max(1, days // 30)
        return "1 month ago" if months == 1 else f"{months} months ago"
    return occurred_at.strftime("%B %Y")


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def format_block(
    memories: Sequence[ScoredMemory],
    *,
    now: datetime,
    profile_line: str | None,
    follow_ups: Sequence[str],
) -> str | None:
    """The context block: one line per item, the companion's own words marked as such."""
    lines: list[str] = []
    if profile_line:
        lines.append(f"About them: {_clip(profile_line, 300)}")
    if memories:
        lines.append("What you remember that may matter now:")
        for item in memories:
            memory = item.memory
            who = "you said" if memory.speaker == "assistant" else "they said"
            if memory.kind == "explicit":
                who = "fact"
            when = when_label(memory.occurred_at, now)
            lines.append(f"- ({when}, {who}) {_clip(memory.content, MAX_MEMORY_CHARS)}")
    open_items = [f for f in follow_ups if f.strip()][:MAX_FOLLOW_UPS]
    if open_items:
        lines.append("Open follow-ups: " + "; ".join(_clip(f, 120) for f in open_items))
    if not lines:
        return None
    block = "\n".join(lines)
    return block if len(block) <= MAX_BLOCK_CHARS else block[: MAX_BLOCK_CHARS - 1] + "…"


class RAGService:
    """Memory context for each user turn, under a hard time budget, with counters.

    Args:
        engine: the retrieval engine (scoped hybrid search).
        memory: the memory service; used memories get their access counted through it.
        cache: short-lived cache of blocks for a repeated identical turn.
        settings: `rag_budget_ms`, `rag_top_k`.
    """

    def __init__(
        self,
        *,
        engine: RetrievalEngine,
        memory: MemoryService,
        cache: Cache,
        settings: Settings,
    ) -> None:
        self._engine = engine
        self._memory = memory
        self._cache = cache
        self._settings = settings
        # The whole lookup per turn (embedding, search, block), timeouts included.
        self.context_ms = LatencyWindow()
        self._tasks = BackgroundTasks("memory context")
        self._counters = {
            "turns": 0,
            "with_memories": 0,
            "without_memories": 0,
            "skipped_small_talk": 0,
            "timeouts": 0,
            "errors": 0,
            "cache_hits": 0,
        }

    async def context_for_turn(
        self,
        *,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        text: str,
        recent_turns: Sequence[str] = (),
        profile_line: str | None = None,
        follow_ups: Sequence[str] = (),
    ) -> str | None:
        """One compact block for this turn, or None (nothing relevant, timeout or error).

        Never raises for retrieval trouble: a timeout or failure is counted in `stats()`.
        """
        self._counters["turns"] += 1
        started = time.perf_counter()
        budget_s = self._settings.rag_budget_ms / 1000
        try:
            block = await asyncio.wait_for(
                self._build(user_id, companion_id, text, recent_turns, profile_line, follow_ups),
                timeout=budget_s,
            )
        except TimeoutError:
            self._counters["timeouts"] += 1
            logger.warning("memory retrieval over its %s ms budget; turn goes on without it",
                           self._settings.rag_budget_ms)
            return None
        except Exception as exc:
            self._counters["errors"] += 1
            logger.warning("memory retrieval failed (%s); turn goes on without it",
                           type(exc).__name__)
            return None
        finally:
            self.context_ms.add((time.perf_counter() - started) * 1000)
        return block

    async def _build(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        text: str,
        recent_turns: Sequence[str],
        profile_line: str | None,
        follow_ups: Sequence[str],
    ) -> str | None:
        now = datetime.now(UTC)
        if is_small_talk(text):
            # "ok", "thanks": nothing to look up, and no reason to spend the budget.
            self._counters["skipped_small_talk"] += 1
            return format_block([], now=now, profile_line=profile_line, follow_ups=follow_ups)
        recent = [t for t in recent_turns if t and t.strip()][-3:]
        key = self._cache_key(user_id, companion_id, [text, *recent, profile_line or "",
                                                      *follow_ups])
        # The search starts at once and the cache is asked meanwhile: a repeated turn is rare,
        # and waiting for the cache first would put its round trip on every turn.
        search = asyncio.ensure_future(self._engine.search(
            user_id, companion_id, text, k=self._settings.rag_top_k, recent_turns=recent
        ))
        awaited = False
        try:
            cached = await self._cache.get_json(key)
            if isinstance(cached, str):
                self._counters["cache_hits"] += 1
                return cached or None
            awaited = True
            memories = await search
        finally:
            if not awaited:
                # Not needed after all (a cached block, or the turn gave up): its outcome is
                # still collected so an error is logged, not lost.
                search.cancel()
                search.add_done_callback(partial(log_failure, owner="memory search"))
        self._counters["with_memories" if memories else "without_memories"] += 1
        if memories:
            self._memory.record_access([m.memory.id for m in memories])
        block = format_block(
            memories, now=now, profile_line=profile_line, follow_ups=follow_ups
        )
        self._tasks.spawn(self._cache.set_json(key, block or "", BLOCK_CACHE_TTL_S))
        return block

    def warm(self, user_id: uuid.UUID) -> None:
        """Get this user's memories ready for fast turns; call when a session starts.

        Returns at once: the engine loads the user's in-process index (all of the user's
        companions) in the background; the first turns use SQL until it is ready.
        """
        self._tasks.spawn(self._warm(user_id))

    async def _warm(self, user_id: uuid.UUID) -> None:
        try:
            await self._engine.warm(user_id)
        except Exception as exc:  # background: searches fall back to SQL
            logger.warning("memory index warm-up failed (%s)", type(exc).__name__)

    @staticmethod
    def _cache_key(
        user_id: uuid.UUID, companion_id: uuid.UUID | None, parts: Sequence[str]
    ) -> str:
        digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:24]
        return f"rag:block:{user_id}:{companion_id or 'shared'}:{digest}"

    async def memory_stats(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None
    ) -> dict[str, Any]:
        """For the memory-stats tool: counts per category, store size, latency, timeouts."""
        scope = await self._engine.scope_stats(user_id, companion_id)
        return {**scope, "retrieval": self.stats(), "engine": self._engine.stats()}

    def stats(self) -> dict[str, Any]:
        return {
            **self._counters,
            "budget_ms": self._settings.rag_budget_ms,
            "context_ms": self.context_ms.summary(),
        }

    async def drain(self) -> None:
        """Wait for this service's background work (block cache writes, warm-ups)."""
        await self._tasks.drain()

    async def aclose(self) -> None:
        """Finish background work: cache writes, warm-ups, then the engine's own."""
        await self.drain()
        await self._engine.aclose()
