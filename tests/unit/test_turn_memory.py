"""A lookup started on a spoken turn's transcript gets the turn's budget from when the LLM call
needs it: a slow one the end-of-turn wait covered still makes the turn, and the call never
waits longer than the budget for one that is not ready."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from core.latency import LatencyWindow
from livekit_layer.turn_memory import PREFETCH_LIMIT_MS, TurnMemory

pytestmark = pytest.mark.unit

BUDGET_MS = 50.0
# Only a guard against a hang: the product's own budget ends every wait below.
GIVE_UP_S = 30.0


class HeldLookup:
    """A memory lookup that answers once the test lets it (as a slow embedding would)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.budgets: list[float | None] = []

    async def __call__(self, text: str, recent: Sequence[str], budget_ms: float | None) -> str:
        self.budgets.append(budget_ms)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return f"dog: Rex ({text})"


async def no_mood(text: str) -> str | None:
    return None


def turn_memory(lookup: HeldLookup) -> TurnMemory:
    return TurnMemory(
        lookup=lookup, mood=no_mood, version=lambda: 0, turn_ms=LatencyWindow(),
        budget_ms=BUDGET_MS,
    )


async def test_an_early_lookup_slower_than_the_budget_still_makes_the_turn() -> None:
    lookup = HeldLookup()
    memory = turn_memory(lookup)
    memory.prefetch("how is my dog", [])
    lookup.release.set()

    async with asyncio.timeout(GIVE_UP_S):
        note = await memory.note_for("how is my dog", [])

    assert note is not None and "Rex" in note
    # Not cut at the turn's budget from its start: it may run through the end-of-turn wait.
    assert lookup.budgets == [PREFETCH_LIMIT_MS]
    assert (memory.prefetch_hits, memory.late_prefetches) == (1, 0)


async def test_the_llm_call_waits_at_most_the_budget_for_an_early_lookup() -> None:
    lookup = HeldLookup()
    memory = turn_memory(lookup)
    memory.prefetch("how is my dog", [])

    async with asyncio.timeout(GIVE_UP_S):
        note = await memory.note_for("how is my dog", [])

    assert note is None
    assert memory.late_prefetches == 1
    async with asyncio.timeout(GIVE_UP_S):
        await lookup.cancelled.wait()  # the lookup no one waits for is stopped


async def test_a_turn_looked_up_by_the_llm_call_itself_gets_the_default_budget() -> None:
    lookup = HeldLookup()
    lookup.release.set()
    memory = turn_memory(lookup)

    note = await memory.note_for("how is my dog", [])

    assert note is not None and "Rex" in note
    assert lookup.budgets == [None]
    assert memory.prefetch_hits == 0
