"""A test's child process (a job, a model server) that reports what it does as JSON lines on
stdout, and can be stopped the way LiveKit stops a job: SIGTERM, then SIGKILL past a deadline.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Only bounds a test that would otherwise hang; nothing is timed.
GIVE_UP_S = 600.0
# LiveKit kills a job process this long after asking it to stop (shutdown_process_timeout).
LIVEKIT_KILLS_AFTER_S = 10.0


class Child:
    """A child process, read line by line; its stderr goes to `log`."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.events: list[dict[str, Any]] = []

    async def wait_for(self, name: str, **fields: Any) -> dict[str, Any]:
        """The next event called `name` (with these `fields`, if given); the events before it
        are kept in `events`."""
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), GIVE_UP_S)
            if not line:
                raise AssertionError(
                    f"{self.log.stem} exited before {name!r} after {self.events}: "
                    f"{self.log.read_text(errors='replace')[-2000:]}"
                )
            if line.startswith(b"{"):
                event = json.loads(line)
                self.events.append(event)
                if event["event"] == name and all(event.get(k) == v for k, v in fields.items()):
                    return event

    async def finish(self) -> tuple[int, dict[str, Any]]:
        done = await self.wait_for("done")
        code = await asyncio.wait_for(self.proc.wait(), GIVE_UP_S)
        return code, done

    async def exit_or_kill(self, after_s: float) -> int | None:
        """Wait for the process to exit on its own; past `after_s`, kill it as LiveKit does and
        return None."""
        try:
            return await asyncio.wait_for(self.proc.wait(), max(0.0, after_s))
        except TimeoutError:
            await self.kill()
            return None

    async def kill(self) -> int:
        """What LiveKit does to a job process still running past its shutdown deadline."""
        self.proc.kill()
        return await self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


async def start_child(module: str, args: list[str], log: Path) -> Child:
    """`python -m module args...` from the project's root, its stderr into `log`."""
    # Its log goes to a file: a pipe nobody reads until the end could fill and stall it.
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr
        )
    return Child(proc, log)
