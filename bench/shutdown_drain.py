"""How long a job's shutdown takes after SIGTERM mid-stream, against LiveKit's 10 s budget.

    python bench/shutdown_drain.py [--runs 5] [--signal-after 3000] [--outage | --frozen] [--write]

Each run starts tests/support/heavy_writer.py (the real services over an embedded Postgres,
embeddings and the summary LLM from a loopback OpenAI stub in the writer's process), sends
SIGTERM once it has logged `--signal-after` messages, and reads how long the product's
`end_job` took (summary, consolidation hand-off, batcher drain, closing). With `--outage`
the database is stopped first and the writer signalled after its first failed flush, so the
drain ends by spooling. With `--frozen` the database is frozen instead (SIGSTOP on its
processes: connections stay open, nothing answers, as a saturated server or a dead network
path) and the writer signalled after a statement on it has timed out; the drain must spool by
the job's own deadline. Also timed: SIGTERM to the process's exit. The tests check that nothing
is lost; this measures the time it takes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PROJECT_ROOT, machine_info, machine_line, write_section  # noqa: E402
from infrastructure import migrations  # noqa: E402
from tests.support.servers import PostgresProcess  # noqa: E402

# LiveKit's shutdown_process_timeout: a job process still running after it is killed.
LIVEKIT_BUDGET_S = 10.0


async def next_event(proc: asyncio.subprocess.Process, name: str) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the writer exited before {name!r}")
        if line.startswith(b"{") and (event := json.loads(line))["event"] == name:
            return dict(event)


async def one_run(
    server: PostgresProcess, dsn: str, spool: Path, *, signal_after: int, fault: str
) -> dict[str, Any]:
    with (spool.parent / "writer.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.heavy_writer", "--dsn", dsn, "--spool",
            str(spool), "--user-id", str(uuid.uuid4()), "--signal-after", str(signal_after),
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=log,
        )
    try:
        await next_event(proc, "writing")
        if fault == "outage":
            await asyncio.to_thread(server.stop)
            await next_event(proc, "flush_failed")
        elif fault == "frozen":
            server.freeze()
            await next_event(proc, "flush_failed")
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # LiveKit kills a job process this long after asking it to stop.
        try:
            done = await asyncio.wait_for(next_event(proc, "done"), LIVEKIT_BUDGET_S)
            await asyncio.wait_for(proc.wait(), LIVEKIT_BUDGET_S - (time.monotonic() - signalled))
        except TimeoutError:
            return {"drain_s": None, "exit_s": None, "messages": None, "spooled": None,
                    "lost": None, "killed": True}
        exit_s = time.monotonic() - signalled
    finally:
        if fault == "outage":
            await asyncio.to_thread(server.start)
        elif fault == "frozen":
            server.thaw()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    batcher = done["batcher"]
    return {"drain_s": done["drain_s"], "exit_s": round(exit_s, 3), "messages": done["messages"],
            "spooled": batcher["spooled"], "lost": batcher["lost"], "killed": False}


FAULTS = {
    "": ("", "Postgres up"),
    "outage": ("_outage", "Postgres stopped before the signal (the drain spools)"),
    "frozen": ("_frozen", "Postgres frozen (SIGSTOP) before the signal, after a statement on it "
                          "timed out (the drain spools by the job's deadline)"),
}


async def main(args: argparse.Namespace) -> None:
    fault = "outage" if args.outage else "frozen" if args.frozen else ""
    server = PostgresProcess()
    server.start()
    try:
        server.psql("create database bench")
        dsn = server.dsn_for("bench")
        conn = await asyncpg.connect(dsn)
        try:
            await migrations.apply_pending(conn)
            machine = await machine_info(conn)
        finally:
            await conn.close()
        runs = []
        with TemporaryDirectory() as tmp:
            for i in range(args.runs):
                spool = Path(tmp) / f"spool-{i}"
                runs.append(await one_run(server, dsn, spool, signal_after=args.signal_after,
                                          fault=fault))
                print(json.dumps(runs[-1]), flush=True)
    finally:
        server.destroy()
    finished = [r for r in runs if not r["killed"]]
    drains = sorted(r["drain_s"] for r in finished)
    exits = sorted(r["exit_s"] for r in finished)
    print(json.dumps({"runs": runs, "machine": machine}, indent=2))
    if args.write:
        suffix, what = FAULTS[fault]
        flag = f" --{fault}" if fault else ""
        rows = "\n".join(
            f"| {i + 1} | killed at {LIVEKIT_BUDGET_S:.0f} s | | | | |" if r["killed"] else
            f"| {i + 1} | {r['messages']:,} | {r['drain_s']:.2f} | {r['exit_s']:.2f} "
            f"| {r['spooled']} | {r['lost']} |"
            for i, r in enumerate(runs)
        )
        figures = (
            f"median {drains[len(drains) // 2]:.2f} s, max {drains[-1]:.2f} s; SIGTERM to exit "
            f"median {exits[len(exits) // 2]:.2f} s, max {exits[-1]:.2f} s"
            if finished else "no run finished"
        )
        write_section(f"shutdown_drain{suffix}", f"""\
## Shutdown drain after SIGTERM (bench/shutdown_drain.py{flag})

Command: `python bench/shutdown_drain.py --runs {args.runs} --signal-after {args.signal_after}\
{flag} --write`. {what}.

{machine_line(machine)} SIGTERM after {args.signal_after:,} logged messages (plus the burst in
flight); `end_job` time, against LiveKit's {LIVEKIT_BUDGET_S:.0f} s `shutdown_process_timeout`:
{figures}; {len(runs) - len(finished)} of {len(runs)} killed.

| run | messages | drain s | exit s | spooled | lost |
|---:|---:|---:|---:|---:|---:|
{rows}
""")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--signal-after", type=int, default=3_000)
    faults = parser.add_mutually_exclusive_group()
    faults.add_argument("--outage", action="store_true", help="Postgres stopped")
    faults.add_argument("--frozen", action="store_true", help="Postgres frozen (SIGSTOP)")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    asyncio.run(main(parser.parse_args()))
