"""Row-level security policy cost: `user_id = auth.uid()` against `(select auth.uid())`.

A scan of 100,000 messages as Supabase's `authenticated` role (the JWT claims set the way
PostgREST sets them), with the owner policy on public.messages written in each form. Both forms
run in the same process on the same table, alternating scan by scan, so load on the shared
machine falls on both alike. Migration 20261203170100 moved the project to the second form:
the function then runs once per statement (an InitPlan) instead of once per row.

    .venv/bin/python bench/rls_policy.py                       # 100,000 rows, 40 scans per form
    .venv/bin/python bench/rls_policy.py --rows 100000 --scans 60 --write

It starts its own Postgres (pgserver's binaries) in a temporary directory and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from bench.common import (  # noqa: E402
    embedded_postgres,
    machine_info,
    machine_line,
    percentiles,
    write_section,
)
from infrastructure import migrations  # noqa: E402

FORMS = {
    "per row: user_id = auth.uid()": "auth.uid()",
    "once: user_id = (select auth.uid())": "(select auth.uid())",
}
WARM_UP_SCANS = 3


def policy_sql(uid_expression: str) -> str:
    return (
        "drop policy if exists messages_owner_all on public.messages; "
        "create policy messages_owner_all on public.messages for all to authenticated "
        f"using (user_id = {uid_expression}) with check (user_id = {uid_expression})"
    )


async def seed(conn: asyncpg.Connection, rows: int) -> uuid.UUID:
    """One person with one session holding `rows` messages."""
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    await conn.execute("insert into public.users (id) values ($1)", user_id)
    await conn.execute(
        "insert into public.sessions (id, user_id) values ($1, $2)", session_id, user_id
    )
    await conn.execute(
        "insert into public.messages (session_id, user_id, role, content, created_at) "
        "select $1, $2, case when i % 2 = 0 then 'user' else 'assistant' end, "
        "  'message number ' || i, now() - make_interval(secs => $3 - i) "
        "from generate_series(1, $3) i",
        session_id, user_id, rows,
    )
    await conn.execute("vacuum analyze public.messages")
    return user_id


async def scan_as(conn: asyncpg.Connection, user_id: uuid.UUID) -> tuple[float, int]:
    """One full scan as the person's Supabase client: (milliseconds, rows counted)."""
    claims = json.dumps({"sub": str(user_id), "role": "authenticated"})
    async with conn.transaction():
        await conn.execute("set local role authenticated")
        await conn.execute("select set_config('request.jwt.claims', $1, true)", claims)
        started = time.perf_counter()
        counted = await conn.fetchval("select count(*) from public.messages")
        elapsed = (time.perf_counter() - started) * 1000
    return elapsed, int(counted)


async def plan_of(conn: asyncpg.Connection, user_id: uuid.UUID) -> str:
    claims = json.dumps({"sub": str(user_id), "role": "authenticated"})
    async with conn.transaction():
        await conn.execute("set local role authenticated")
        await conn.execute("select set_config('request.jwt.claims', $1, true)", claims)
        rows = await conn.fetch("explain select count(*) from public.messages")
    return "\n".join(r[0] for r in rows)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with embedded_postgres("rls_bench") as dsn:
        # No statement cache: each policy change must not meet a plan prepared for the other.
        conn = await asyncpg.connect(dsn, statement_cache_size=0)
        try:
            await migrations.apply_pending(conn)
            user_id = await seed(conn, args.rows)
            machine = await machine_info(conn)
            timings: dict[str, list[float]] = {form: [] for form in FORMS}
            plans: dict[str, str] = {}
            for form, expression in FORMS.items():
                await conn.execute(policy_sql(expression))
                plans[form] = await plan_of(conn, user_id)
                for _ in range(WARM_UP_SCANS):
                    await scan_as(conn, user_id)
            for i in range(args.scans):
                # Alternate which form goes first, so neither always follows the other.
                order = list(FORMS.items()) if i % 2 == 0 else list(reversed(FORMS.items()))
                for form, expression in order:
                    await conn.execute(policy_sql(expression))
                    elapsed, counted = await scan_as(conn, user_id)
                    if counted != args.rows:
                        raise SystemExit(f"{form}: the scan saw {counted} rows, not {args.rows}")
                    timings[form].append(elapsed)
        finally:
            await conn.close()
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "rows": args.rows,
        "scans": args.scans,
        "machine": machine,
        "forms": {form: percentiles(values) for form, values in timings.items()},
        "initplan": {form: "InitPlan" in plan for form, plan in plans.items()},
    }


def markdown(report: dict[str, Any]) -> str:
    per_row, once = (report["forms"][form] for form in FORMS)
    lines = [
        "## Row-level security policy form (bench/rls_policy.py)",
        "",
        f"Command: `.venv/bin/python bench/rls_policy.py --rows {report['rows']} "
        f"--scans {report['scans']} --write`",
        "",
        machine_line(report["machine"])
        + f" `select count(*) from public.messages` as `authenticated` (JWT sub set per "
        f"transaction) over {report['rows']:,} rows of that person, {report['scans']} scans per "
        "form after 3 warm-up scans, the two forms alternating on the same table.",
        "",
        "| policy | InitPlan | median ms | p95 ms |",
        "|---|---|---:|---:|",
    ]
    for form in FORMS:
        summary = report["forms"][form]
        initplan = "yes" if report["initplan"][form] else "no"
        lines.append(f"| `{form}` | {initplan} | {summary['p50']:.2f} | {summary['p95']:.2f} |")
    lines += [
        "",
        f"The per-row form takes {per_row['p50'] / once['p50']:.1f}x the time at the median "
        "(migration 20261203170100 uses the once-per-statement form).",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="messages of the one person")
    parser.add_argument("--scans", type=int, default=40, help="measured scans per form")
    parser.add_argument("--json", help="write the report to this file")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    report = asyncio.run(run(args))
    text = markdown(report)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.write:
        write_section("rls_policy", text)


if __name__ == "__main__":
    main()
