"""The memory upkeep's merge and contradiction passes over one person's scope of 1k, 5k and
10k memories: before (the code at --before-ref, from a git archive) and now, in one run.

    python bench/maintenance.py [--sizes 1000 5000 10000] [--repeats 3] [--before-ref REF]
                                [--json out.json] [--write]

Data (deterministic): one person's explicit memories in one scope, shaped like what
consolidation saves: snake_case keys of 1-3 everyday words, short values, six categories;
2% repeat an earlier memory (same value, a key spelled differently: merged), 1% say an earlier
key again with another value under a variant spelling (contradictions); of the 50 added for
the next pass, a tenth say something said before. Vectors: the tests'
hashed bag of words of the content, 384 dimensions, stored in the rows.

Each run is a child process (bench/maintenance_runner.py) on a fresh copy of the database:
`merge_duplicates(user)`, then `flag_contradictions(user)`. Measured per call: the child's CPU
time (all threads), wall time, and its event loop's longest stall. Variants:
- before: every pair compared with difflib on the event loop, at most 1,000 memories per
  scope (the rest were never looked at: at 5k and 10k it does a 1k scope's work);
- now, first pass: every pair that can qualify (candidate pairs; exactly those all pairs
  find), every memory of the scope, in a thread;
- now, next pass: 50 memories added since the previous pass over the scope; only pairs with
  one of them are looked at (what every pass after the first does).
At 1k the merges and contradictions found before and now are compared (they must be equal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    PROJECT_ROOT,
    checkout,
    machine_info,
    machine_line,
    write_section,
)
from core.memory_records import content_hash, explicit_content  # noqa: E402
from infrastructure import migrations  # noqa: E402
from infrastructure.vector_codec import register_vector_codec  # noqa: E402
from tests.support.openai_text import hashed_bag_of_words  # noqa: E402
from tests.support.servers import PostgresProcess  # noqa: E402

# main just before the maintenance pass moved out of the job (all-pairs difflib on the loop).
BEFORE_REF = "fb08531"
RUNNER = PROJECT_ROOT / "bench" / "maintenance_runner.py"
NEW_ON_NEXT_PASS = 50
START = datetime(2025, 11, 21, tzinfo=UTC)
CATEGORIES = [("FACT", 30), ("PREFERENCE", 25), ("PERSON", 20), ("EVENT", 10), ("GOAL", 8),
              ("BOUNDARY", 7)]
WORDS = """favorite food color movie book song band artist singer sport team game show series
podcast drink coffee tea breakfast lunch dinner dessert snack cuisine restaurant recipe dish
fruit vegetable brother sister mother father mom dad son daughter wife husband partner friend
best cousin uncle aunt grandmother grandfather niece nephew boss colleague coworker neighbor
roommate teacher doctor therapist dentist coach mentor pet dog cat puppy kitten bird fish
rabbit horse name age birthday anniversary wedding graduation holiday vacation trip travel
flight hotel city town country home house apartment street neighborhood hometown school
university college degree major job work career title company office employer salary project
deadline meeting interview promotion shift schedule hobby painting drawing reading writing
cooking baking gardening hiking running cycling swimming yoga gym workout climbing fishing
camping photography music guitar piano violin drums singing dancing knitting chess language
spanish french german japanese course class lesson exam goal plan dream wish fear worry allergy
diet medication health condition injury sleep bedtime morning routine weekend evening habit car
bike bus train commute phone laptop computer app website gift party concert festival museum
theater park beach mountain lake river garden plant flower tree season winter summer spring
autumn weather first last next previous current new old childhood memory story event visit
appointment surgery checkup reminder topic style size shoe shirt jacket hat glasses""".split()
SPELLINGS = {"favorite": "favourite", "color": "colour", "neighbor": "neighbour",
             "theater": "theatre", "mom": "mum", "gray": "grey"}


def variant(key: str, rng: random.Random) -> str:
    """The key spelled another way: a British spelling, or one letter changed."""
    for us, uk in SPELLINGS.items():
        if us in key:
            return key.replace(us, uk, 1)
    i = rng.randrange(len(key))
    return key[:i] + rng.choice("aeiouy") + key[i + 1:]


def synthesize(
    n: int, seed: int, *, after: list[tuple[str, str, str]] | None = None, again: float = 0.03
) -> list[tuple[str, str, str]]:
    """(category, key, value) of n current memories, unique per (category, key); a share
    `again` say an earlier one again (2 in 3 the same value: merged; else another value: a
    contradiction), earlier in this list or in `after`."""
    rng = random.Random(seed)
    categories = [c for c, weight in CATEGORIES for _ in range(weight)]
    earlier = list(after or [])
    rows: list[tuple[str, str, str]] = []
    taken = {(c, k) for c, k, _ in earlier}
    while len(rows) < n:
        roll = rng.random()
        if earlier and roll < again:
            category, key, value = earlier[rng.randrange(len(earlier))]
            key = variant(key, rng)
            if roll < again * 2 / 3:
                value = value.upper() if rng.random() < 0.5 else value + "!"
            else:
                value = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
        else:
            category = rng.choice(categories)
            key = "_".join(rng.choice(WORDS) for _ in range(rng.choice((1, 2, 2, 2, 3, 3))))
            value = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
        if (category, key) not in taken:
            taken.add((category, key))
            rows.append((category, key, value))
            earlier.append((category, key, value))
    return rows


async def load(dsn: str, user: uuid.UUID, rows: list[tuple[str, str, str]], first: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await register_vector_codec(conn)
        await conn.execute(
            "insert into public.users (id) values ($1) on conflict do nothing", user
        )
        records = []
        for n, (category, key, value) in enumerate(rows, start=first):
            at = START + timedelta(minutes=30 * n)
            content = explicit_content(key, value)
            records.append((
                uuid.uuid4(), user, category, key, value, content, content_hash(content),
                0.5, at, at, at, np.asarray(hashed_bag_of_words(content, 384), np.float32),
            ))
        await conn.executemany(
            "insert into public.memories (id, user_id, kind, category, key, value, content, "
            "content_hash, importance, occurred_at, created_at, updated_at, embedding) "
            "values ($1, $2, 'explicit', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            records,
        )
    finally:
        await conn.close()


def child(tree: Path, dsn: str, user: uuid.UUID, work: Path, since: str | None) -> dict[str, Any]:
    args = [sys.executable, str(RUNNER), "--dsn", dsn, "--user", str(user), "--work", str(work)]
    if since:
        args += ["--since", since]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, check=False,
                          timeout=3_600)
    if done.returncode != 0:
        raise RuntimeError(f"runner failed in {tree}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    before_tree = checkout(args.before_ref, work / "before")
    server = PostgresProcess()
    server.start()
    results: dict[str, Any] = {}
    try:
        server.psql("create database template_base")
        conn = await asyncpg.connect(server.dsn_for("template_base"))
        try:
            await migrations.apply_pending(conn)
            machine = await machine_info(conn)
        finally:
            await conn.close()
        user = uuid.uuid4()
        runs = 0
        for size in args.sizes:
            rows = synthesize(size, seed=size)
            # A tenth of the new ones say something said before (the same share as in the
            # first pass would find a merge or two in 50 only by luck).
            new = synthesize(NEW_ON_NEXT_PASS, seed=size + 1, after=rows, again=0.1)
            full, extra = f"scope_{size}", f"scope_{size}_next"
            server.psql(f"create database {full} template template_base")
            await load(server.dsn_for(full), user, rows, first=0)
            # The next pass: the scope as the first pass left it, then 50 new memories.
            server.psql(f"create database {extra} template {full}")
            child(PROJECT_ROOT, server.dsn_for(extra), user, work, None)
            await load(server.dsn_for(extra), user, new, first=size + 100)
            since = (START + timedelta(minutes=30 * (size + 100))).isoformat()
            variants = [("before", before_tree, full, None), ("now, first pass", PROJECT_ROOT,
                        full, None), ("now, next pass", PROJECT_ROOT, extra, since)]
            per_size: dict[str, list[dict[str, Any]]] = {}
            for repeat in range(args.repeats):
                for name, tree, template, since_arg in variants:
                    runs += 1
                    copy = f"run_{runs}"
                    server.psql(f"create database {copy} template {template}")
                    try:
                        per_size.setdefault(name, []).append(
                            child(tree, server.dsn_for(copy), user, work, since_arg)
                        )
                    finally:
                        server.psql(f"drop database {copy}")
                print(f"{size}: round {repeat + 1}/{args.repeats} done", file=sys.stderr,
                      flush=True)
            results[str(size)] = per_size
        machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        server.destroy()
    return {"machine": machine, "before_ref": args.before_ref, "repeats": args.repeats,
            "new_on_next_pass": NEW_ON_NEXT_PASS, "results": results}


def stat(runs: list[dict[str, Any]], call: str, field: str) -> tuple[float, float]:
    values = np.asarray([r[call][field] for r in runs], dtype=float)
    return float(np.median(values)), float(np.percentile(values, 95))


def same_outcome(runs: dict[str, list[dict[str, Any]]]) -> bool:
    before, now = runs["before"][0], runs["now, first pass"][0]
    def flags(run: dict[str, Any]) -> dict[str, set[str]]:
        return {k: set(v) for k, v in run["flagged"].items()}
    return before["superseded"] == now["superseded"] and flags(before) == flags(now)


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        "## Memory maintenance: merges and contradictions in one scope",
        "",
        machine_line(report["machine"]),
        "",
        "`python bench/maintenance.py --write` (" + str(report["repeats"]) + " runs per row, each "
        "a fresh child process on a fresh copy of the database; before = "
        f"`{report['before_ref']}`). Seconds, median / p95 over the runs. CPU is the Python "
        "process's (all threads), not Postgres's. Loop stall: the longest time its event loop "
        "could not run anything else.",
        "",
        "| memories | variant | rows looked at | merge CPU | merge wall | contradictions CPU "
        "| contradictions wall | longest loop stall | merged | flagged |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, runs in report["results"].items():
        for name, rows in runs.items():
            first = rows[0]
            examined = min(int(first["rows"]), 1_000) if name == "before" else first["rows"]
            if name == "now, next pass":
                examined = f"{first['rows']} ({report['new_on_next_pass']} new)"
            cells = []
            for call in ("merge", "contradictions"):
                for field in ("cpu_s", "wall_s"):
                    median, p95 = stat(rows, call, field)
                    cells.append(f"{median:.3f} / {p95:.3f}")
            stall = max(max(r["merge"]["loop_stall_s"], r["contradictions"]["loop_stall_s"])
                        for r in rows)
            lines.append(
                f"| {int(size):,} | {name} | {examined} | " + " | ".join(cells)
                + f" | {stall:.3f} | {first['merge']['count']} | "
                f"{first['contradictions']['count']} |"
            )
    if "1000" in report["results"]:
        verdict = "the same" if same_outcome(report["results"]["1000"]) else "DIFFERENT"
        lines += ["", f"At 1,000 memories before and now merge and flag {verdict} memories."]
    lines += [
        "",
        "Before, every pair went through difflib on the event loop, and a scope past 1,000 "
        "memories was cut to its oldest 1,000 (at 5k and 10k it did a 1k scope's work and never "
        "looked at the rest). Now candidate pairs come from a bigram index (pairs that cannot "
        "reach the threshold are never compared; the pairs found are the same), in a thread, "
        "over the whole scope; and a pass after the first looks only at pairs with a memory "
        "added since the previous one.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 5_000, 10_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before-ref", default=BEFORE_REF)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-maintenance-") as tmp:
        report = asyncio.run(measure(args, Path(tmp)))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    markdown = report_markdown(report)
    print(markdown)
    if args.write:
        write_section("maintenance", markdown)


if __name__ == "__main__":
    main()
