"""Helpers shared by the benchmarks: an embedded Postgres, percentiles, machine description."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    # Run as `python bench/<name>.py` from a fresh clone: the project is not installed.
    sys.path.insert(0, str(PROJECT_ROOT))


@contextmanager
def embedded_postgres(database: str = "bench") -> Iterator[str]:
    """A throwaway Postgres 16 + pgvector (pgserver's binaries) in a temp dir; yields a DSN."""
    from tests.support.servers import PostgresProcess

    server = PostgresProcess()
    server.start()
    try:
        server.psql(f"create database {database}")
        yield server.dsn_for(database)
    finally:
        server.destroy()


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 and mean of milliseconds, rounded for reports."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0, "count": 0}
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=float), [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(np.mean(values)), 3),
        "count": len(values),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    """The checked-out commit, marked when the work tree has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
            text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            # The results file itself changes with every --write: not a code change.
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":!bench/RESULTS.md"], cwd=PROJECT_ROOT,
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+changes" if dirty else head


async def machine_info(conn: Any) -> dict[str, Any]:
    """Where the figures were measured: CPU, cores, Python, Postgres and pgvector versions."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgres": await conn.fetchval("show server_version"),
        "pgvector": await conn.fetchval(
            "select extversion from pg_extension where extname = 'vector'"
        ),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        # Shared machine: other work running at the same time shows up in the tail latencies.
        "load_average_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
    }


RESULTS = PROJECT_ROOT / "bench" / "RESULTS.md"


def write_section(name: str, markdown: str) -> None:
    """Replace this benchmark's section of bench/RESULTS.md (between its markers), or add it."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text)


def save_report(
    name: str, report: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
    args: argparse.Namespace,
) -> None:
    """What `--json FILE` and `--write` ask for: the whole report as JSON, and this benchmark's
    section of bench/RESULTS.md."""
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    if args.write:
        write_section(name, markdown(report))
        print("updated bench/RESULTS.md")


def fmt_ms(summary: dict[str, float], keys: Sequence[str] = ("p50", "p95", "p99")) -> str:
    return " / ".join(f"{summary[k]:.2f}" for k in keys)


def machine_line(machine: dict[str, Any]) -> str:
    load = machine.get("load_average_1m_5m_15m")
    after = machine.get("load_average_after")
    load_text = f"; load average {load[0]}" if load else ""
    if after:
        load_text += f" at start, {after[0]} at end"
    return (
        f"Run {machine['date']} on {machine['cpu']}, {machine['cores']} cores shared with other "
        f"work{load_text}; Python {machine['python']}, Postgres {machine['postgres']} + "
        f"pgvector {machine['pgvector']} (embedded, loopback TCP)"
        + (f"; commit {machine['commit']}." if machine.get("commit") else ".")
    )


def checkout(ref: str, into: Path) -> Path:
    """The project's files at `ref` (git archive) in `into`, to run a benchmark's "before"."""
    archive = subprocess.run(["git", "archive", ref], cwd=PROJECT_ROOT, capture_output=True,
                             check=True)
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into
