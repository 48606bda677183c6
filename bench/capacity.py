"""Capacity: how many concurrent voice sessions one machine carries, measured the way the
LiveKit worker runs them.

Each session is a job in its own process, started as LiveKit starts them on Linux: a
`forkserver` preloaded with the worker's modules forks the process, LiveKit's own ProcPool
runs the product's prewarm in it (agent.server.setup_fnc, under LiveKit's 10 s initialize
timeout) and hands it the job; the job runs agent.entrypoint's sequence (bench/capacity_job.py)
with the session's audio plugged into a microphone and a loudspeaker instead of a room. The
person speaks espeak-ng utterances at the pace they are spoken, through Silero VAD, the real
OpenAI STT plugin, the memory lookup, the real OpenAI LLM plugin and the real OpenAI TTS plugin.

Shared by every job, as in a deployment: one Postgres (embedded, tests/support PostgresProcess),
one redis-server, and one loopback OpenAI-compatible server in its own process
(bench/capacity_stub.py) that stands in for OpenAI and reports its own time per request, which
is subtracted from each turn's latency.

For N = 1, 5, 10, 25, ... until something breaks (a failed turn, memory over budget, the
memory lookup p95 over 30 ms or the reply latency over its limit) it records CPU, PSS per job
and in total, the product's memory-lookup times, end of speech -> first audio frame minus the
server's time, and failed turns.

    .venv/bin/python bench/capacity.py                          # 1, 5, 10, 25, 35, 50, ...
    .venv/bin/python bench/capacity.py --sessions 1,5 --json /tmp/capacity.json
    .venv/bin/python bench/capacity.py --write --label "before ONNX"   # RESULTS.md + PNG
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from livekit.agents import Plugin  # noqa: E402
from livekit.agents.ipc.proc_pool import ProcPool  # noqa: E402
from livekit.agents.job import JobAcceptArguments, JobExecutorType, RunningJobInfo  # noqa: E402
from livekit.protocol import agent as lk_agent  # noqa: E402
from livekit.protocol import models as lk_models  # noqa: E402

import agent  # noqa: E402
from bench import procfs, pyspy  # noqa: E402
from bench.capacity_job import entrypoint, room_input  # noqa: E402
from bench.capacity_report import Limits, markdown, plot, summarize  # noqa: E402
from bench.capacity_script import render_utterances  # noqa: E402
from bench.common import _cpu_model, _git_commit, write_section  # noqa: E402
from bench.synthetic_turns import synthetic_episodes  # noqa: E402
from core.config import Settings  # noqa: E402
from infrastructure import migrations  # noqa: E402
from livekit_layer.session_open import open_session  # noqa: E402
from livekit_layer.worker_start import livekit_environment  # noqa: E402
from services.composition import Services, build_services  # noqa: E402
from tests.support.servers import PostgresProcess, RedisProcess  # noqa: E402

DEFAULT_SESSIONS = "1,5,10,25,35,50,70,100"
# LiveKit's defaults (AgentServer / ServerOptions), which the product keeps.
INITIALIZE_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0
SESSION_END_TIMEOUT_S = 30.0
JOB_MEMORY_WARN_MB = 1000.0
SAMPLE_S = 1.0
PNG = ROOT / "bench" / "capacity.png"
log = logging.getLogger("bench.capacity")


class StubProcess:
    """bench/capacity_stub.py in a child process: the loopback OpenAI server of all jobs."""

    def __init__(self, speech_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.capacity_stub", str(speech_dir)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        self.base_url, self.control_url = ready["base_url"], ready["control_url"]

    async def take(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(f"{self.control_url}/take")
            response.raise_for_status()
            return dict(response.json())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def job_environment(pg: PostgresProcess, redis: RedisProcess, stub: StubProcess, run: Path,
                    dsn: str) -> dict[str, str]:
    """The settings every job process reads (load_settings in prewarm), as a deployment's
    environment would give them; the product's defaults otherwise (local embeddings)."""
    return {
        "DATABASE_URL": dsn, "REDIS_URL": redis.url, "REDIS_ENABLED": "true",
        "OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "bench", "LLM_MODEL": "stub-model",
        "TTS_PROVIDER": "openai", "BATCH_SPOOL_DIR": str(run / "spool"),
        "EMBEDDED_PG_DIR": str(run / "pg"), "LOG_LEVEL": "WARNING",
    }


async def seed_users(services: Services, n: int, memories: int) -> list[uuid.UUID]:
    """n new people, each with `memories` past turns (the same texts for everyone, so the
    embedder's cache makes seeding cheap) and a saved fact or two."""
    episodes = synthetic_episodes(memories, random.Random(7), datetime.now(UTC))
    users = []
    for _ in range(n):
        user_id = uuid.uuid4()
        session = await open_session(services, user_id=user_id, room="capacity-seed")
        await services.memory.import_episodes(user_id, session.companion.id, episodes)
        await services.memory.remember(
            user_id, session.companion.id, "EVENT", "job_interview", "went well, felt hopeful"
        )
        await session.close(wait=True)
        users.append(user_id)
    await services.batcher.flush()
    await services.pool.execute("analyze public.memories")
    return users


class Sampler:
    """Every second: PSS and CPU of each job process, the forkserver's PSS, machine load."""

    def __init__(self) -> None:
        self.pids: dict[int, int] = {}  # job index -> pid
        self.rows: list[dict[str, Any]] = []
        self.peak_pss: dict[int, float] = {}
        self._stop = asyncio.Event()

    async def run(self) -> None:
        forkserver = _forkserver_pid()
        while not self._stop.is_set():
            busy, total = procfs.machine_busy_s()
            row: dict[str, Any] = {"t": time.time(), "load1": os.getloadavg()[0],
                                   "busy_s": busy, "total_s": total, "cpu": {}, "pss": {}}
            for index, pid in list(self.pids.items()):
                pss, cpu = procfs.pss_mb(pid), procfs.cpu_s(pid)
                if pss is not None and cpu is not None:
                    row["pss"][index], row["cpu"][index] = pss, cpu
                    self.peak_pss[index] = max(self.peak_pss.get(index, 0.0), pss)
            row["forkserver_pss"] = procfs.pss_mb(forkserver) if forkserver else None
            self.rows.append(row)
            try:
                await asyncio.wait_for(self._stop.wait(), SAMPLE_S)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()


def _forkserver_pid() -> int | None:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)


async def run_round(n: int, args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    """N sessions at once: processes warmed first (as idle processes), then N jobs arriving
    over the ramp, each talking through the script; returns everything measured."""
    run: Path = ctx["run"] / f"n{n}"
    run.mkdir(parents=True)
    users = await seed_users(ctx["services"], n, args.memories)
    inits: dict[int, dict[str, float]] = {}
    launched: set[int] = set()
    all_ready, all_ended = asyncio.Event(), asyncio.Event()
    launching: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def stamp(what: str) -> Any:
        def record(proc: Any) -> None:
            inits.setdefault(id(proc), {})[what] = time.time()
            if sum("process_ready" in s for s in inits.values()) >= n:
                all_ready.set()
            if launching.done() and all("process_closed" in inits[i] for i in launched):
                all_ended.set()

        return record

    pool = ProcPool(
        initialize_process_fnc=agent.prewarm, job_entrypoint_fnc=entrypoint,
        session_end_fnc=None, simulation_end_fnc=None, num_idle_processes=n,
        initialize_timeout=args.initialize_timeout_s, close_timeout=SHUTDOWN_TIMEOUT_S,
        session_end_timeout=SESSION_END_TIMEOUT_S, inference_executor=None,
        job_executor_type=JobExecutorType.PROCESS, mp_ctx=ctx["mp"],
        memory_warn_mb=JOB_MEMORY_WARN_MB, memory_limit_mb=0, http_proxy=None,
        loop=asyncio.get_running_loop(),
    )
    for event in ("process_created", "process_ready", "process_closed"):
        pool.on(event, stamp(event))
    warm_started = time.time()
    await pool.start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_ready.wait(), 60 + 12 * n)
    warmed_s = time.time() - warm_started
    await ctx["stub"].take()  # forget the warm-up's requests
    sampler = Sampler()
    sampling = asyncio.create_task(sampler.run())
    infra_cpu0 = {k: procfs.tree_cpu_s(pid) for k, pid in ctx["infra_pids"].items()}
    load_before, started = os.getloadavg(), time.time()
    plans = []
    for index, user_id in enumerate(users):
        await asyncio.sleep(max(0.0, started + index * args.ramp_s / n - time.time()))
        plan = {"index": index, "user_id": str(user_id), "key": f"r{n}-j{index}",
                "out": str(run / f"job-{index}.json"), "speech_dir": str(ctx["speech"])}
        job = lk_agent.Job(
            id=f"capacity-{n}-{index}", type=lk_agent.JobType.JT_ROOM, metadata=json.dumps(plan),
            room=lk_models.Room(sid=f"RM_capacity_{n}_{index}", name=f"capacity-{n}-{index}"),
        )
        try:
            await pool.launch_job(RunningJobInfo(
                accept_arguments=JobAcceptArguments(
                    name="", identity=f"agent-{index}", metadata=""
                ),
                job=job, url="", token="", worker_id="capacity-bench", fake_job=True,
            ))
        except RuntimeError as exc:  # no process could be initialized for it
            log.warning("job %s not started: %s", index, exc)
            continue
        executor = pool.get_by_job_id(job.id)
        if executor is not None:
            launched.add(id(executor))
            # A process executor (the kind ProcPool starts) knows its pid.
            sampler.pids[index] = getattr(executor, "pid", None) or 0
        plans.append({**plan, "launched_at": time.time()})
    pool.set_target_idle_processes(0)  # no new processes once these jobs end
    launching.set_result(None)
    if all("process_closed" in inits[i] for i in launched):
        all_ended.set()
    last_launch = time.time()
    profiling = None
    if n == args.profile:
        profiling = asyncio.gather(*(
            pyspy.record(pid, args.profile_s, run / f"profile-{i}.txt")
            for i, pid in list(sampler.pids.items())[:2]
        ))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_ended.wait(), args.session_timeout_s)
    ended = time.time()
    sampler.stop()
    await sampling
    infra_cpu = {k: procfs.tree_cpu_s(pid) - infra_cpu0[k] for k, pid in ctx["infra_pids"].items()}
    infra_pss = {k: procfs.tree_pss_mb(pid) for k, pid in ctx["infra_pids"].items()}
    await pool.aclose()
    profiles = await profiling if profiling is not None else None
    stub_side = await ctx["stub"].take()
    jobs = []
    for plan in plans:
        out = Path(str(plan["out"]))
        result = json.loads(out.read_text()) if out.exists() else None
        end = Path(f"{plan['out']}.end")
        jobs.append({"plan": plan, "result": result,
                     "end": json.loads(end.read_text()) if end.exists() else None})
    return {
        "n": n, "started": started, "last_launch": last_launch, "ended": ended,
        "warmed_s": warmed_s, "load_before": load_before, "load_after": os.getloadavg(),
        "inits": list(inits.values()), "jobs": jobs, "samples": sampler.rows,
        "peak_pss": sampler.peak_pss, "infra_cpu_s": infra_cpu, "infra_pss_mb": infra_pss,
        "server": stub_side, "log_counts": dict(ctx["log_counter"].take()),
        "profiles": profiles,
    }


class LogCounter(logging.Handler):
    """Counts the warnings and errors the jobs log (they come back through LiveKit's log
    queue), by logger and message, per round."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.levelname} {record.name}: {record.getMessage()[:120]}"
        self.counts[key] = self.counts.get(key, 0) + 1

    def take(self) -> dict[str, int]:
        counts, self.counts = self.counts, {}
        return counts


def fits(previous: dict[str, Any], n: int) -> bool:
    """Whether N jobs as heavy as the last round's would fit in what the machine has free
    (other work shares it; a round that would push it into the OOM killer is not run)."""
    per_job = previous["pss_per_job_mb"][1] or 0.0
    return n * per_job < 0.85 * procfs.available_mb()


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": sys.version.split()[0], "commit": _git_commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


async def sweep(args: argparse.Namespace) -> dict[str, Any]:
    run = Path(tempfile.mkdtemp(prefix="capacity-"))
    counter = LogCounter()
    logging.basicConfig(level=logging.WARNING, filename=run / "jobs.log")
    logging.getLogger().addHandler(counter)
    speech = run / "speech"
    await render_utterances(speech, sample_rate=room_input().sample_rate)
    pg, redis = PostgresProcess(), RedisProcess()
    pg.start()
    redis.start()
    stub = StubProcess(speech)
    rounds: list[dict[str, Any]] = []
    limits = Limits(latency_ms=args.latency_limit_ms, memory_gb=args.memory_budget_gb)
    try:
        pg.psql("create database capacity")
        dsn = pg.dsn_for("capacity")
        os.environ.update(job_environment(pg, redis, stub, run, dsn))
        settings = Settings(_env_file=None)
        # What the worker's start (prepare_cli) puts in the environment the jobs inherit.
        for name, value in livekit_environment(settings).items():
            os.environ.setdefault(name, value)
        await migrations.migrate(dsn, settings)  # once, before any job
        services = await build_services(settings)
        context = mp.get_context("forkserver")
        # What AgentServer preloads in the forkserver on Linux, in its order: the plugins,
        # the product's own list (with this bench's job module, which stands in for the
        # entrypoint in `agent`), then LiveKit's warm-up.
        context.set_forkserver_preload(
            list(dict.fromkeys(
                [p.package for p in Plugin.registered_plugins] + agent.PRELOADED_MODULES
                # LiveKit's fake-job room is a unittest.mock object; a real room is not.
                + ["bench.capacity_job", "unittest.mock"]
            ))
            + ["livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze"]
        )
        pg_pid = int((pg.pgdata / "postmaster.pid").read_text().split()[0])
        ctx = {"run": run, "speech": speech, "services": services, "stub": stub, "mp": context,
               "log_counter": counter,
               "infra_pids": {"postgres": pg_pid, "redis": redis.pid or 0,
                              "openai_stub": stub.proc.pid}}
        for n in [int(x) for x in args.sessions.split(",")]:
            previous = rounds[-1]["summary"] if rounds else None
            if previous and previous["verdict"]["breaks"] and (
                not args.keep_going or previous["verdict"]["hard"]
            ):
                break
            if previous and not fits(previous, n):
                print(f"N={n}: not run, the machine does not have the memory free", flush=True)
                break
            log.warning("round N=%s", n)
            print(f"N={n}: running", flush=True)
            raw = await run_round(n, args, ctx)
            summary = summarize(raw, limits)
            rounds.append({"raw": raw, "summary": summary})
            save(args, report(args, run, limits, rounds))  # an interrupted sweep keeps these
            print(json.dumps(summary["headline"]), flush=True)
            if raw["profiles"]:
                print(json.dumps(raw["profiles"], indent=1)[:6000], flush=True)
        await services.aclose()
    finally:
        stub.stop()
        redis.kill()
        pg.destroy()
    return report(args, run, limits, rounds)


def report(args: argparse.Namespace, run: Path, limits: Limits,
           rounds: list[dict[str, Any]]) -> dict[str, Any]:
    heard = room_input()
    return {"machine": machine(), "label": args.label, "limits": limits.__dict__,
            "audio_in": {"sample_rate": heard.sample_rate, "frame_ms": heard.frame_size_ms},
            "ramp_s": args.ramp_s, "memories": args.memories, "run_dir": str(run),
            "command": "python " + shlex.join(sys.argv), "rounds": rounds}


def save(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(report, default=str))
    if args.write and report["rounds"]:
        plot(report, PNG)
        write_section("capacity", markdown(report))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default=DEFAULT_SESSIONS,
                        help="concurrent sessions per round, comma-separated")
    parser.add_argument("--memories", type=int, default=300, help="past turns per person")
    parser.add_argument("--ramp-s", type=float, default=10.0,
                        help="the sessions of a round start spread over this many seconds")
    parser.add_argument("--session-timeout-s", type=float, default=240.0,
                        help="give up on a round's jobs this long after the last started")
    parser.add_argument("--latency-limit-ms", type=float, default=3500.0,
                        help="p95 end of speech -> first audio, minus the server's time (the "
                        "framework may wait up to 3 s for the end of a turn, plus 0.5 s)")
    parser.add_argument("--memory-budget-gb", type=float, default=8.0)
    parser.add_argument("--initialize-timeout-s", type=float, default=INITIALIZE_TIMEOUT_S,
                        help="LiveKit's initialize_process_timeout (its default: 10 s)")
    parser.add_argument("--keep-going", action="store_true",
                        help="go on past a latency or lookup limit; stop only at a failed "
                        "turn or memory over budget")
    parser.add_argument("--profile", type=int, default=0,
                        help="at this N, sample two job processes with py-spy")
    parser.add_argument("--profile-s", type=float, default=30.0)
    parser.add_argument("--label", default="", help="what this run is, e.g. 'before ONNX'")
    parser.add_argument("--json", type=Path, help="write everything measured here")
    parser.add_argument("--from-json", type=Path,
                        help="run nothing: report the sweep this --json file holds")
    parser.add_argument("--write", action="store_true",
                        help="update bench/RESULTS.md and bench/capacity.png")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.from_json:  # render a finished sweep again (after editing the notes, say)
        result = json.loads(args.from_json.read_text())
    else:
        result = asyncio.run(sweep(args))
    print(markdown(result))
    save(args, result)


if __name__ == "__main__":
    main()
