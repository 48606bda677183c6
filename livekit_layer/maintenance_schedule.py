"""Memory maintenance once per worker: the worker's main process runs
`python manage.py maintenance` in a child process shortly after it starts
(MAINTENANCE_FIRST_DELAY_S) and then every MAINTENANCE_INTERVAL_S.

A child process, not a task on the worker's event loop: that loop talks to LiveKit and hands
out jobs, and the pass's CPU work (comparing a scope's memories) never runs on it; a pass
that hangs is killed at MAINTENANCE_TIMEOUT_S without touching the worker; the pass's memory
(services, the embedder) is given back when it exits. With several workers each starts its
child; the lease in the database lets one of them do the pass, the others print "skipped".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from core.config import PROJECT_ROOT, Settings

logger = logging.getLogger(__name__)

COMMAND = (sys.executable, str(PROJECT_ROOT / "manage.py"), "maintenance", "--json")


class MaintenanceSchedule:
    """Runs the maintenance command on a schedule until `aclose`.

    Args:
        first_delay_s: wait before the first pass.
        interval_s: wait between the end of one pass and the start of the next.
        timeout_s: a pass running longer is killed (the next one resumes its work).
        command: the command line (default: this checkout's `manage.py maintenance --json`).
        cwd: where it runs.
    """

    def __init__(
        self,
        *,
        first_delay_s: float,
        interval_s: float,
        timeout_s: float,
        command: Sequence[str] = COMMAND,
        cwd: Path = PROJECT_ROOT,
    ) -> None:
        self._first_delay_s = first_delay_s
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._command = tuple(command)
        self._cwd = cwd
        self._task: asyncio.Task[None] | None = None
        self._finished: asyncio.Future[int | None] | None = None
        self.passes = 0
        self.failures = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> MaintenanceSchedule | None:
        """The worker's schedule; None with MAINTENANCE_IN_WORKER=false."""
        if not settings.maintenance_in_worker:
            logger.info("maintenance: not run by this worker (MAINTENANCE_IN_WORKER=false)")
            return None
        return cls(
            first_delay_s=settings.maintenance_first_delay_s,
            interval_s=settings.maintenance_interval_s,
            timeout_s=settings.maintenance_timeout_s,
        )

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="memory-maintenance")

    async def aclose(self) -> None:
        """Stop the schedule; a pass under way is killed (the next worker's resumes it)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    async def next_pass(self) -> int | None:
        """Wait until the schedule's next pass ends; its exit code (None: killed)."""
        if self._finished is None or self._finished.done():
            self._finished = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._finished)

    async def _loop(self) -> None:
        await asyncio.sleep(self._first_delay_s)
        while True:
            code = await self.run_once()
            if self._finished is not None and not self._finished.done():
                self._finished.set_result(code)
            await asyncio.sleep(self._interval_s)

    async def run_once(self) -> int | None:
        """One pass in a child process; its exit code (None: killed past the timeout)."""
        proc = await asyncio.create_subprocess_exec(
            *self._command, cwd=self._cwd, stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self._timeout_s)
        except TimeoutError:
            logger.warning("maintenance pass killed after %.0f s", self._timeout_s)
            self.failures += 1
            return None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self.passes += 1
        if proc.returncode != 0:
            self.failures += 1
            logger.warning("maintenance pass failed (exit code %s)", proc.returncode)
            return proc.returncode
        try:
            report = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            report = {}
        logger.info("maintenance pass done", extra={"maintenance": report})
        return proc.returncode
