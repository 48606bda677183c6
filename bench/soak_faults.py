"""The fault schedule of bench/soak.py, and the clock that names the phase a turn falls in.

Each fault holds for a fixed share of the run and is undone at its window's end, or when the
schedule is cancelled (a frozen Postgres is always thawed: SIGCONT on every process).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench.soak_stub import CHAT, EMBEDDINGS, StubProcess
from tests.support.servers import PostgresProcess, RedisProcess

# (name, start, end) as shares of the run; outside every window the phase is "steady".
FAULTS = (
    ("redis_down", 0.08, 0.17),
    ("postgres_down", 0.24, 0.34),
    # Every Postgres process SIGSTOPped: connections stay open and nothing answers, as with a
    # saturated server or a dead network path; only the pool's own bounds end a wait.
    ("postgres_frozen", 0.42, 0.54),
    ("embeddings_500", 0.62, 0.72),
    ("llm_429", 0.80, 0.89),
)
# Faults during which the database does not answer.
DATABASE_AWAY = frozenset({"postgres_down", "postgres_frozen"})
# Turns this soon after a fault ends (or the run starts) are reported as their own phase.
RECOVERY_S = 5.0

Action = Callable[[], Coroutine[Any, Any, None]]


class Clock:
    """Phases of the run, for tagging each turn with the fault active when it started, or the
    one that ended moments ago (recovery), or the warm-up."""

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.seconds = seconds
        self.active: set[str] = set()
        self.ended: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def phase(self) -> str:
        if self.active:
            return "+".join(sorted(self.active))
        now = self.elapsed()
        recent = [name for name, at in self.ended.items() if now - at < RECOVERY_S]
        if recent:
            return "after_" + "+".join(sorted(recent))
        return "warm_up" if now < RECOVERY_S else "steady"

    def database_away(self) -> bool:
        return bool(self.active & DATABASE_AWAY)

    def over(self) -> bool:
        return self.elapsed() >= self.seconds


def fault_actions(
    pg: PostgresProcess, redis: RedisProcess, stub: StubProcess
) -> dict[str, tuple[Action, Action]]:
    """Each fault's (begin, undo)."""
    return {
        "redis_down": (lambda: asyncio.to_thread(redis.kill),
                       lambda: asyncio.to_thread(redis.start)),
        "postgres_down": (lambda: asyncio.to_thread(pg.stop),
                          lambda: asyncio.to_thread(pg.start)),
        "postgres_frozen": (lambda: asyncio.to_thread(pg.freeze),
                            lambda: asyncio.to_thread(pg.thaw)),
        "embeddings_500": (
            lambda: stub.control("fail", n=10**9, status=500, path_prefix=EMBEDDINGS),
            lambda: stub.control("reset"),
        ),
        "llm_429": (
            lambda: stub.control("fail", n=10**9, status=429, path_prefix=CHAT, retry_after=0.2),
            lambda: stub.control("reset"),
        ),
    }


async def run_faults(
    clock: Clock, record: list[dict[str, Any]], actions: dict[str, tuple[Action, Action]]
) -> None:
    """Apply the schedule; every fault is undone by its window's end (or on cancel). Each
    window, as it ended, goes to `record`."""

    async def at(share: float) -> None:
        await asyncio.sleep(max(0.0, share * clock.seconds - clock.elapsed()))

    for name, start, end in FAULTS:
        await at(start)
        begin, undo = actions[name]
        began = clock.elapsed()
        try:
            await begin()
            clock.active.add(name)
            await at(end)
        finally:
            # Shielded: a cancel during the undo must not leave Postgres frozen or down.
            await asyncio.shield(undo())
            clock.active.discard(name)
            clock.ended[name] = clock.elapsed()
            record.append({"fault": name, "from_s": round(began, 1),
                           "to_s": round(clock.elapsed(), 1)})
            print(f"  fault {name}: {began:.1f}-{clock.elapsed():.1f} s", flush=True)
