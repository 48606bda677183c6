"""What the retrieval tests share: a fixed clock and vocabulary, turns to import, engines on a
chosen search path, and a crowd of users around the one searched.

Each engine a test builds with `engine_for` is kept on its `RetrievalStack`, so the `stack`
fixture (tests/integration/conftest.py) can close it and check it answered every search on
the path it was built for.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from core.memory_records import Episode
from rag_system.engine import RetrievalEngine
from rag_system.tuning import RetrievalTuning
from tests.support.memory_stack import MemoryStack

# A Saturday; "last week" is Monday 9 to Monday 16 November 2026.
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
WORDS = (
    "river garden violin kitchen ladder pepper winter tunnel orange canvas harbor pillow "
    "rocket meadow silver bakery compass lantern marble thunder velvet puzzle island candle "
    "forest mirror saddle pencil glacier trumpet walnut cactus anchor basket dragon feather"
).split()
PATHS = ("sql", "in_process")


@dataclass
class RetrievalStack(MemoryStack):
    """A MemoryStack and the engines built on it, each with the path it was built for."""

    engines: list[tuple[RetrievalEngine, str]] = field(default_factory=list)

    @classmethod
    def over(cls, built: MemoryStack) -> RetrievalStack:
        return cls(**{f.name: getattr(built, f.name) for f in fields(MemoryStack)})


def engine_for(
    stack: RetrievalStack,
    tuning: RetrievalTuning | None = None,
    *,
    path: str = "sql",
    **settings: Any,
):
    merged = stack.settings.model_copy(update=settings) if settings else stack.settings
    tuning = tuning or RetrievalTuning()
    if path == "sql":
        tuning = replace(tuning, local_index_max_rows=0)
    else:
        tuning = replace(tuning, local_index_cold="inline")
    engine = RetrievalEngine(
        pool=stack.pool, embedder=stack.embedder, settings=merged, tuning=tuning
    )
    stack.engines.append((engine, path))
    return engine


def turn(text: str, at: datetime, speaker: str = "user", **source: Any) -> Episode:
    return Episode(speaker=speaker, text=text, occurred_at=at, source=source)


def contents(results) -> list[str]:
    return [r.memory.content for r in results]


async def crowd(stack: MemoryStack, target: uuid.UUID, *, mine: int, others: int, each: int):
    rng = random.Random(7)

    def episodes(n: int, salt: str) -> list[Episode]:
        return [
            turn(f"{salt} " + " ".join(rng.sample(WORDS, 5)), NOW - timedelta(hours=i))
            for i in range(n)
        ]

    await stack.memory.import_episodes(target, None, episodes(mine, "mine"))
    for i in range(others):
        await stack.memory.import_episodes(uuid.uuid4(), None, episodes(each, f"o{i}"))
    await stack.pool.execute("analyze public.memories")
