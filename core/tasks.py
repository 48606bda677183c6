"""Background work a service starts and must not lose: tracked, drained, failures logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from core.deadline import Deadline, wait_until

logger = logging.getLogger(__name__)


class BackgroundTasks:
    """The fire-and-forget tasks of one owner (a service), so shutdown can wait for them.

    A task that fails is logged (the error's type only: messages may carry user text) instead
    of surfacing as "Task exception was never retrieved".

    Args:
        owner: names the owner in log lines ("memory", "conversation", ...).
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, work: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run `work` in the background and track it until it ends."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        log_failure(task, self.owner)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, deadline: Deadline | None = None) -> bool:
        """Wait until every tracked task has ended, including tasks they started meanwhile;
        with `deadline`, at most until then. True when none is left."""
        while self._tasks:
            if not await wait_until(deadline, list(self._tasks)):
                return False
        return True

    def cancel(self) -> int:
        """Cancel every tracked task (past a deadline); returns how many were running."""
        running = [t for t in self._tasks if not t.done()]
        for task in running:
            task.cancel()
        if running:
            logger.warning("cancelled %s background %s tasks", len(running), self.owner)
        return len(running)


def log_failure(task: asyncio.Future[Any], owner: str) -> None:
    """Done-callback body: log a background task's error rather than lose it."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning(
            "background %s work failed (%s)", owner, type(task.exception()).__name__
        )
