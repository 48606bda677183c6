"""Each user turn's memory note: looked up early, kept while the model answers the turn, and
dropped the moment something is forgotten.

A spoken turn's lookup starts on its final transcript (`prefetch`), while the framework still
waits for the end of the turn; the LLM call then picks up the finished note. The turn's budget
(RAG_BUDGET_MS) is what the LLM call may wait for it, counted from when the call needs it, not
from the transcript: a lookup slowed by a busy machine still makes the turn when the end-of-turn
wait covered it, and the call never waits longer than the budget. After a tool the
LLM is called again for the same turn and gets the same note without a second lookup. Every
kept note and prefetch carries the version of the process's forgotten-memory notes it was
made under (`core.forgotten`): once that changes (the person just said "forget ..."), none of
them is used again, and the turn's note is looked up afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from livekit.agents import llm

from core.latency import LatencyWindow
from livekit_layer.chat_context import (
    MEMORY_ITEM_PREFIX,
    has_memory_message,
    latest_user_message,
    memory_note,
    recent_texts,
    turn_key,
    with_memory_message,
)

logger = logging.getLogger(__name__)

RECENT_TURNS = 6
MAX_PREFETCHES = 4
# How long a lookup started on a transcript may run: the framework's longest end-of-turn wait
# (3 s) plus the budget is as late as a turn's LLM call can need it; past that nothing will.
PREFETCH_LIMIT_MS = 3_500

# (text, recent turns, budget in ms or None for the turn's own): one block or None.
Lookup = Callable[[str, Sequence[str], float | None], Awaitable[str | None]]


@dataclass(frozen=True)
class _Kept:
    message_id: str
    note: str | None
    version: int


class TurnMemory:
    """The memory notes of one session's turns.

    Args:
        lookup: the memories, profile and follow-ups for a turn's text and recent turns, as
            one block (None: nothing, or retrieval failed within its budget).
        mood: the companion's mood line after hearing a turn (None: unavailable).
        version: the current version of the process's forgotten-memory notes of this person.
        turn_ms: where each turn's whole lookup time is recorded.
        budget_ms: the longest the LLM call waits for a lookup started early (RAG_BUDGET_MS).
    """

    def __init__(
        self,
        *,
        lookup: Lookup,
        mood: Callable[[str], Awaitable[str | None]],
        version: Callable[[], int],
        turn_ms: LatencyWindow,
        budget_ms: float,
    ) -> None:
        self._lookup = lookup
        self._mood = mood
        self._version = version
        self._turn_ms = turn_ms
        self._budget_s = budget_ms / 1000
        self._kept: _Kept | None = None
        self._prefetched: dict[str, tuple[asyncio.Task[str | None], int]] = {}
        self.prefetch_hits = 0
        # Early lookups still running when the LLM call had waited its budget for them.
        self.late_prefetches = 0

    async def with_note(
        self, chat_ctx: llm.ChatContext, on_new_turn: Callable[[], None]
    ) -> llm.ChatContext:
        """`chat_ctx` plus the latest user message's note, right before it (see
        `CompanionSession.with_turn_context`); `on_new_turn` runs when a turn is seen first."""
        latest = latest_user_message(chat_ctx)
        if latest is None:
            return chat_ctx
        index, message = latest
        version = self._version()
        kept = self._kept
        fresh = kept is not None and kept.message_id == message.id and kept.version == version
        if has_memory_message(chat_ctx, message):
            if fresh:
                return chat_ctx
            # The note was made before something was forgotten: replace it.
            chat_ctx = chat_ctx.copy()
            note_id = MEMORY_ITEM_PREFIX + message.id
            chat_ctx.items[:] = [item for item in chat_ctx.items if item.id != note_id]
            index = next(i for i, item in enumerate(chat_ctx.items) if item.id == message.id)
        if fresh:
            assert kept is not None
            note = kept.note
        else:
            if kept is None or kept.message_id != message.id:
                on_new_turn()
            recent = recent_texts(chat_ctx, message.id, limit=RECENT_TURNS)
            note = await self.note_for(message.text_content or "", recent)
            self._kept = _Kept(message.id, note, version)
        if not note:
            return chat_ctx
        return with_memory_message(chat_ctx, index, message, note)

    def prefetching(self, text: str) -> bool:
        return turn_key(text) in self._prefetched

    def prefetch(self, text: str, recent: Sequence[str]) -> None:
        """Start the lookup of a turn still being said."""
        while len(self._prefetched) >= MAX_PREFETCHES:
            self._prefetched.pop(next(iter(self._prefetched)))[0].cancel()
        task = asyncio.ensure_future(self._lookup(text, recent, PREFETCH_LIMIT_MS))
        self._prefetched[turn_key(text)] = (task, self._version())

    async def note_for(self, text: str, recent: Sequence[str]) -> str | None:
        """Memories, profile and mood for one user turn, as one compact note (or None): what
        is remembered is quoted, never instructions (`chat_context.memory_note`)."""
        started = time.perf_counter()
        prefetched = self._prefetched.pop(turn_key(text), None)
        if prefetched is not None and prefetched[1] != self._version():
            prefetched[0].cancel()  # looked up before something was forgotten
            prefetched = None
        if prefetched is not None:
            self.prefetch_hits += 1
        remembered, mood = await asyncio.gather(
            self._picked_up(prefetched[0]) if prefetched is not None
            else self._lookup(text, recent, None),
            self._mood(text),
        )
        self.cancel()
        self._turn_ms.add((time.perf_counter() - started) * 1000)
        return memory_note(remembered, mood)

    async def _picked_up(self, task: asyncio.Task[str | None]) -> str | None:
        """The early lookup's block, waited for at most the budget from now."""
        done, _ = await asyncio.wait([task], timeout=self._budget_s)
        if not done:
            task.cancel()
            self.late_prefetches += 1
            logger.warning("memory lookup not ready within its budget; turn goes on without it")
            return None
        return task.result()

    def cancel(self) -> None:
        """Drop every prefetch under way."""
        for task, _ in self._prefetched.values():
            task.cancel()
        self._prefetched.clear()

