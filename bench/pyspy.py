"""Where a running process spends its CPU, sampled from outside by py-spy (bench profile:
requirements-bench.txt): the functions most often on CPU (own time) and the project's own
functions most often on the stack (inclusive time), as shares of the samples."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")
PROJECT = str(Path(__file__).resolve().parents[1])
# Threads waiting, which py-spy still samples in a container: not CPU.
_IDLE = ("EpollSelector.select ", "Condition.wait ", "_worker (concurrent", "Event.wait ",
         "Thread._wait_for_tstate_lock ", "Queue.get ", "SimpleQueue.get ", "time.sleep")


def _frame(raw: str) -> str:
    """'name (path:line)' -> 'name (path)' with site-packages and the project root cut."""
    frame = _LINE.sub(")", raw)
    frame = re.sub(r"\(.*site-packages/", "(", frame)
    return frame.replace(PROJECT + "/", "")


async def record(pid: int, seconds: float, out: Path, *, top: int = 15) -> dict[str, Any]:
    """Sample `pid` for `seconds` and summarize the stacks of threads that were not waiting."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    process = await asyncio.create_subprocess_exec(
        binary, "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", "100",
        "--format", "raw", "--output", str(out), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0 or not out.exists():
        return {"error": err.decode(errors="replace")[-300:]}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        if frames[-1].startswith(_IDLE):
            continue
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    total = sum(own.values()) or 1
    mine = ("(services/", "(rag_system/", "(infrastructure/", "(livekit_layer/", "(core/",
            "(agent.py", "(uplift_tts.py")
    return {
        "busy_samples": total,
        "own": [(f, round(n / total, 3)) for f, n in own.most_common(top)],
        "inclusive_project": [
            (f, round(n / total, 3)) for f, n in inclusive.most_common()
            if any(m in f for m in mine)
        ][:top],
        "inclusive": [(f, round(n / total, 3)) for f, n in inclusive.most_common(top * 2)],
    }
