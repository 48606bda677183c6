"""Turns one user turn into one compact memory block for the LLM, within a hard time budget.

The block carries a profile line, the few memories that matter for this turn, and open
follow-ups. Retrieval is on the critical path of voice latency, so it runs under
`settings.rag_budget_ms`: when that passes (a slow embedding server, a busy database) or
anything fails, the turn goes on without memory and the miss is counted, never raised.

Blocks are not cached across turns: a block is only as current as the search that built it,
and a memory forgotten since must never come back in a stored copy of one. (The session keeps
a turn's block while the model answers that turn, and drops it when something is forgotten.)
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.config import Settings
from core.latency import LatencyWindow
from core.tasks import BackgroundTasks
from rag_system.engine import RetrievalEngine
from rag_system.query import is_small_talk
from rag_system.scoring import ScoredMemory

if TYPE_CHECKING:
    from services.memory.memory_service import MemoryService

logger = logging.getLogger(__name__)

MAX_MEMORY_CHARS = 220
MAX_FOLLOW_UPS = 3
MAX_BLOCK_CHARS = 1_600


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
        settings: `rag_budget_ms`, `rag_top_k`.
    """

    def __init__(
        self,
        *,
        engine: RetrievalEngine,
        memory: MemoryService,
        settings: Settings,
    ) -> None:
        self._engine = engine
        self._memory = memory
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
        budget_ms: float | None = None,
    ) -> str | None:
        """One compact block for this turn, or None (nothing relevant, timeout or error).

        `budget_ms` (default RAG_BUDGET_MS) bounds the lookup; a caller that starts it before
        the LLM call needs it gives it longer and bounds its own wait. Never raises for
        retrieval trouble: a timeout or failure is counted in `stats()`.
        """
        self._counters["turns"] += 1
        started = time.perf_counter()
        budget_s = (budget_ms if budget_ms is not None else self._settings.rag_budget_ms) / 1000
        try:
            block = await asyncio.wait_for(
                self._build(user_id, companion_id, text, recent_turns, profile_line, follow_ups),
                timeout=budget_s,
            )
        except TimeoutError:
            self._counters["timeouts"] += 1
            logger.warning("memory retrieval over its %s ms budget; turn goes on without it",
                           round(budget_s * 1000))
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
        memories = await self._engine.search(
            user_id, companion_id, text, k=self._settings.rag_top_k, recent_turns=recent
        )
        self._counters["with_memories" if memories else "without_memories"] += 1
        if memories:
            self._memory.record_access([m.memory.id for m in memories])
        return format_block(memories, now=now, profile_line=profile_line, follow_ups=follow_ups)

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
        """Wait for this service's background work (warm-ups)."""
        await self._tasks.drain()

    async def aclose(self) -> None:
        """Finish background work: warm-ups, then the engine's own."""
        await self.drain()
        await self._engine.aclose()
