"""A point in time some work must be over by, handed down so every wait can be bounded by it.

The job's shutdown is the case that matters: LiveKit kills a job process a fixed time after
asking it to stop, and whatever the job still holds in memory then is gone. `end_job` makes one
`Deadline` and passes it down; each step bounds its own waits by what is left of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Deadline:
    """A moment on the monotonic clock (`time.monotonic`, which asyncio's loop clock is too).

    Attributes:
        at: the moment, in `time.monotonic()` seconds.
    """

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline `seconds` from now."""
        return cls(time.monotonic() + max(0.0, seconds))

    def remaining(self) -> float:
        """Seconds left, never below 0."""
        return max(0.0, self.at - time.monotonic())

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def earlier(self, seconds: float) -> Deadline:
        """The deadline `seconds` before this one (to keep time for what must come after)."""
        return Deadline(self.at - max(0.0, seconds))

    def bound(self, seconds: float | None) -> float:
        """`seconds` (None: no bound of its own), cut down to the time left."""
        left = self.remaining()
        return left if seconds is None else min(seconds, left)

    def loop_time(self) -> float:
        """The deadline on the running loop's clock, for `asyncio.timeout_at`."""
        loop = asyncio.get_running_loop()
        return loop.time() + (self.at - time.monotonic())


def sooner(first: Deadline | None, second: Deadline | None) -> Deadline | None:
    """The earlier of two optional deadlines."""
    if first is None:
        return second
    if second is None:
        return first
    return first if first.at <= second.at else second


@asynccontextmanager
async def within(deadline: Deadline | None) -> AsyncIterator[None]:
    """Run the block until `deadline` (no bound for None); past it, TimeoutError is raised.

    The block is cancelled at the deadline, so whatever it awaits must be safe to cancel (the
    connection pool drops a connection it was cancelled on rather than wait for it).
    """
    if deadline is None:
        yield
        return
    async with asyncio.timeout_at(deadline.loop_time()):
        yield


async def wait_until(deadline: Deadline | None, tasks: Iterable[asyncio.Future[Any]]) -> bool:
    """Wait for `tasks` until `deadline` (no bound for None); True when all of them ended."""
    pending = set(tasks)
    if not pending:
        return True
    timeout = None if deadline is None else deadline.remaining()
    _done, left = await asyncio.wait(pending, timeout=timeout)
    return not left
