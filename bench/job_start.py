"""Job start, from the entrypoint's start to the greeting being ready: migrations in every job
(before) against migrations once per worker and one ledger read per job (now).

    python bench/job_start.py [--jobs 10] [--before-ref 9fccf94] [--json out.json] [--write]

Each job is a fresh process, as LiveKit runs one job per process. Untimed first, as happens
before a job arrives: the imports of LiveKit's forkserver preload (agent.PRELOADED_MODULES
where the tree has them) and the tree's own `prewarm` on a real JobProcess. Then it times what
the tree's entrypoint does after the participant joined: `build_services` (database, pool, model
clients, Redis, embedder check, batcher, services) and `open_session` for a returning user
(profile, companion, last summary, follow-ups, mood) up to `greeting_instructions()`, the text
`on_enter` greets with. The session and services are closed afterwards, untimed.

"before" runs the project's files at --before-ref (git archive), where `build_services`
applied the migrations itself (a no-op run: 13 transactions, each taking the advisory lock,
plus the ledger DDL); "now" runs this checkout, where the worker applied them at its start and
a job reads the ledger once. Both use the same databases' schema, Redis (redis-server) and a
loopback OpenAI-compatible server for the embeddings check, and run interleaved.

Databases: "external" is a Postgres on loopback TCP given as DATABASE_URL (as Supabase would
be, minus the network); "embedded" leaves DATABASE_URL unset. For embedded, "before" jobs start
the server themselves unless another process keeps it up ("before, server kept up" has a
process holding it, as overlapping jobs would); "now" has the worker's handle holding it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    PROJECT_ROOT,
    _cpu_model,
    _git_commit,
    checkout,
    percentiles,
    write_section,
)
from tests.support.openai_server import OpenAIStubServer  # noqa: E402
from tests.support.servers import PostgresProcess, RedisProcess  # noqa: E402

# main just before migrations moved out of the job (build_services migrated).
BEFORE_REF = "9fccf94"
LOADS: list[float] = []  # the 1-minute load average after each job: the machine is shared
FOREIGN = ("OPENAI_", "LIVEKIT_", "UPLIFTAI_", "DATABASE_", "REDIS_", "SUPABASE_", "LOG_LEVEL",
           "EMBEDDED_", "EMBEDDING_", "BATCH_")

# One job, run with the tree under test as its working directory and first on sys.path, its
# settings in the environment. Untimed first, as the worker does before a job arrives: the
# forkserver's imports (agent.PRELOADED_MODULES where the tree has them) and the tree's own
# prewarm on a real JobProcess. Then, timed, what the tree's entrypoint does with them.
JOB = textwrap.dedent("""
    import asyncio, importlib, inspect, json, logging, sys, time, uuid
    import agent
    for name in getattr(agent, "PRELOADED_MODULES", []):
        importlib.import_module(name)
    from livekit.agents import JobExecutorType, JobProcess
    from livekit_layer.session_open import open_session
    from services.composition import build_services

    proc = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None,
                      http_proxy=None)
    agent.prewarm(proc)
    shared = {"local_embedder": proc.userdata.get("embedder")}
    if "tls" in inspect.signature(build_services).parameters:
        shared["tls"] = proc.userdata["tls"]
    marks = {}

    class Marks(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("database pool open"):
                marks.setdefault("pool_open", time.perf_counter())

    logging.getLogger().addHandler(Marks())
    logging.getLogger().setLevel(logging.INFO)

    async def main():
        settings = proc.userdata["settings"]
        user = uuid.UUID(sys.argv[1])
        started = time.perf_counter()
        services = await build_services(settings, **shared)
        built = time.perf_counter()
        companion = await open_session(services, user_id=user, room="bench")
        companion.greeting_instructions()
        ready = time.perf_counter()
        await companion.close(wait=True)
        await services.aclose()
        ms = lambda t: round((t - started) * 1000, 2)
        print(json.dumps({"ready_ms": ms(ready), "services_ms": ms(built),
                          "pool_open_ms": ms(marks.get("pool_open", started)),
                          "open_session_ms": round((ready - built) * 1000, 2)}))

    asyncio.run(main())
""")

# What the worker does at its start in the current tree: open the database, migrate, hold it.
HOLDER = textwrap.dedent("""
    import asyncio, json, sys
    from core.config import Settings
    from infrastructure.database import open_migrated

    async def main():
        database, _ = await open_migrated(Settings(_env_file=None, **json.loads(sys.argv[1])))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)
        await database.aclose()

    asyncio.run(main())
""")

# The same, for the before tree: keep the embedded server up (its own migrations ran in jobs).
BEFORE_HOLDER = textwrap.dedent("""
    import asyncio, json, sys
    from core.config import Settings
    from infrastructure.embedded_postgres import EmbeddedPostgres

    async def main():
        settings = Settings(_env_file=None, **json.loads(sys.argv[1]))
        server = await EmbeddedPostgres.start(settings.embedded_pg_dir)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)
        await server.aclose()

    asyncio.run(main())
""")


def clean_env(tree: Path, settings: dict[str, Any] | None = None) -> dict[str, str]:
    """The environment without the developer's settings, plus `settings` as variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env["PYTHONPATH"] = str(tree)
    env.update({k.upper(): str(v) for k, v in (settings or {}).items()})
    return env


async def run_job(tree: Path, settings: dict[str, Any], user: uuid.UUID) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", JOB, str(user), cwd=tree, env=clean_env(tree, settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    LOADS.append(os.getloadavg()[0])
    if proc.returncode != 0:
        raise RuntimeError(f"job in {tree} failed: {err.decode()[-2000:]}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


class Holder:
    """A process that keeps the embedded server up while jobs come and go."""

    def __init__(self, tree: Path, script: str, settings: dict[str, Any]) -> None:
        self.tree, self.script, self.settings = tree, script, settings
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Holder:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", self.script, json.dumps(self.settings), cwd=self.tree,
            env=clean_env(self.tree), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"holder in {self.tree} did not start")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


def migrate(settings: dict[str, Any]) -> None:
    """Apply the migrations with this checkout's operator command, as a deployment would."""
    subprocess.run([sys.executable, str(PROJECT_ROOT / "manage.py"), "migrate"],
                   env=clean_env(PROJECT_ROOT, settings), cwd=PROJECT_ROOT, check=True,
                   capture_output=True, timeout=300)


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    load_at_start = round(os.getloadavg()[0], 2)
    before_tree = checkout(args.before_ref, work / "before")
    postgres, redis = PostgresProcess(), RedisProcess()
    postgres.start()
    redis.start()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        async with OpenAIStubServer() as stub:
            common = {
                "redis_url": redis.url, "openai_base_url": stub.base_url,
                "openai_api_key": "bench", "embedding_provider": "openai",
                "embedding_model": "text-embedding-3-small", "embedding_dimensions": 384,
            }

            def settings(name: str, *, embedded: bool) -> dict[str, Any]:
                values = {**common, "batch_spool_dir": str(work / f"spool-{name}")}
                if embedded:
                    values["embedded_pg_dir"] = str(work / f"pg-{name}")
                else:
                    postgres.psql(f"create database {name}")
                    values["database_url"] = postgres.dsn_for(name)
                    values["embedded_pg_dir"] = str(work / "unused")
                return values

            variants: list[tuple[str, str, Path, dict[str, Any], str | None]] = [
                ("external", "before", before_tree, settings("ext_before", embedded=False), None),
                ("external", "now", PROJECT_ROOT, settings("ext_now", embedded=False), None),
                ("embedded", "before", before_tree, settings("emb_before", embedded=True), None),
                ("embedded", "before, server kept up", before_tree,
                 settings("emb_before_held", embedded=True), BEFORE_HOLDER),
                ("embedded", "now", PROJECT_ROOT, settings("emb_now", embedded=True), HOLDER),
            ]
            for _, _, _, values, _ in variants:
                if "database_url" in values:
                    migrate(values)  # the embedded ones: by the first job, or the worker
            # One user per row: the rows share one Redis, whose cache must not cross databases.
            users = {(database, variant): uuid.uuid4() for database, variant, *_ in variants}
            async with contextlib.AsyncExitStack() as holders:
                for database, variant, tree, values, holder in variants:
                    results.setdefault(database, {})[variant] = []
                    if holder is not None:
                        await holders.enter_async_context(Holder(tree, holder, values))
                    # The first job creates the user and companion (embedded before: migrates).
                    await run_job(tree, values, users[database, variant])
                for round_ in range(args.jobs):
                    for database, variant, tree, values, _ in variants:
                        results[database][variant].append(
                            await run_job(tree, values, users[database, variant])
                        )
                    print(f"round {round_ + 1}/{args.jobs} done", file=sys.stderr, flush=True)
    finally:
        redis.kill()
        postgres.destroy()
    return {
        "machine": {
            "cpu": _cpu_model(), "cores": os.cpu_count(), "commit": _git_commit(),
            "before_ref": args.before_ref, "load_average_1m_at_start": load_at_start,
            "load_average_1m_during": {"median": round(statistics.median(LOADS), 2),
                                       "max": round(max(LOADS), 2)},
        },
        "jobs": args.jobs,
        "results": {
            database: {
                variant: {key: summary([r[key] for r in runs]) for key in runs[0]}
                for variant, runs in by_variant.items()
            }
            for database, by_variant in results.items()
        },
    }


def summary(values: list[float]) -> dict[str, float]:
    return {**percentiles(values), "max": round(max(values), 2)}


def markdown(report: dict[str, Any], command: str) -> str:
    m = report["machine"]
    lines = [
        "## Job start: entrypoint to greeting ready (bench/job_start.py)",
        "",
        f"Command: `{command}`",
        "",
        f"{m['cpu']}, {m['cores']} cores shared with other work (1-minute load average "
        f"{m['load_average_1m_at_start']} at the start; after each job median "
        f"{m['load_average_1m_during']['median']}, max {m['load_average_1m_during']['max']})"
        f"; now = commit {m['commit']}, before = "
        f"{m['before_ref']} (migrations in every job). {report['jobs']} jobs per row, each a "
        "fresh process (forkserver imports and prewarm untimed), a returning user; Redis and "
        "the loopback embeddings server as in the tests. Timed: `build_services` + "
        "`open_session` + `greeting_instructions()`; ms from the entrypoint's start.",
        "",
        "| database | jobs run | greeting ready p50 / p95 / max ms | pool open p50 ms | "
        "services built p50 ms | open_session p50 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for database, by_variant in report["results"].items():
        for variant, s in by_variant.items():
            ready = s["ready_ms"]
            lines.append(
                f"| {database} | {variant} | {ready['p50']:.0f} / {ready['p95']:.0f} / "
                f"{ready['max']:.0f} | {s['pool_open_ms']['p50']:.0f} | "
                f"{s['services_ms']['p50']:.0f} | {s['open_session_ms']['p50']:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10, help="measured jobs per row")
    parser.add_argument("--before-ref", default=BEFORE_REF)
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-job-start-"))
    work.chmod(0o755)  # the unprivileged user pgserver runs Postgres as must enter it
    try:
        report = asyncio.run(measure(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python bench/job_start.py " + " ".join(sys.argv[1:])
    text = markdown(report, command.strip())
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.write:
        write_section("job_start", text)


if __name__ == "__main__":
    main()
