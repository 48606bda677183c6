"""bench/capacity.py's figures: one round's raw measurements summarized (percentiles, CPU,
PSS, failures, the verdict against the limits), the RESULTS.md section and the PNG plot."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.capacity_script import TURNS

# The requests a reply waits for; their server time is subtracted from the turn's latency.
_ON_TURN_PATH = ("/v1/audio/transcriptions", "/v1/chat/completions", "/v1/audio/speech")
NOTES = Path(__file__).resolve().parent / "data" / "capacity_notes.md"


@dataclass(frozen=True)
class Limits:
    """Where a round counts as broken (besides any failed turn)."""

    latency_ms: float  # p95 end of speech -> first audio frame, minus the server's own time
    memory_gb: float  # PSS of the job processes, forkserver, Postgres and Redis together
    lookup_ms: float = 30.0  # p95 of the product's memory lookup per turn


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def server_ms(rows: list[dict[str, Any]], start: float, end: float) -> float:
    """The server's own time on a turn's path between `start` and `end`: each transcription,
    streamed chat and speech request it received then, until its first byte left (their
    union, so overlapping requests count once)."""
    spans = []
    for row in rows:
        path = row["path"]
        if path not in _ON_TURN_PATH or (path.endswith("completions") and not row["stream"]):
            continue
        if not start <= row["received_at"] <= end:
            continue
        stop = row["first_byte_at"] or row["answered_at"] or row["received_at"]
        spans.append((row["received_at"], min(stop, end)))
    total, reach = 0.0, start
    for begin, stop in sorted(spans):
        begin = max(begin, reach)
        if stop > begin:
            total, reach = total + stop - begin, stop
    return total * 1000


def _window(rows: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    inside = [r for r in rows if start <= r["t"] <= end]
    return inside if len(inside) >= 3 else rows


def _cores(rows: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Cores the job processes used, and the whole machine's busy cores, over `rows`."""
    if len(rows) < 2:
        return None, None
    first, last = rows[0], rows[-1]
    seconds = last["t"] - first["t"]
    jobs = sum(last["cpu"][i] - first["cpu"][i] for i in last["cpu"] if i in first["cpu"])
    busy = last["busy_s"] - first["busy_s"]
    return jobs / seconds, busy / seconds


def summarize(raw: dict[str, Any], limits: Limits) -> dict[str, Any]:
    n = raw["n"]
    by_job: dict[str, list[dict[str, Any]]] = {}
    for row in raw["server"]["requests"]:
        by_job.setdefault(row["job"], []).append(row)
    failures: Counter[str] = Counter()
    e2e, server, net, lookup, wait, cpu_per_job, end_job = [], [], [], [], [], [], []
    endpointing, after = [], []
    turns = over_budget = lookups = 0
    finished: list[float] = []
    for job in raw["jobs"]:
        result, plan = job["result"], job["plan"]
        if job["end"] is not None:
            end_job.append(job["end"]["end_job_s"])
        if result is None:
            failures["job never reported"] += len(TURNS)
            turns += len(TURNS)
            continue
        finished.append(plan["launched_at"] + result["wall_s"])
        cpu_per_job.append(result["cpu_s"] / result["wall_s"])
        lookup += result["memory_lookup_ms"]
        # Cut at the budget: in the lookup, or in the LLM call's wait for one started early.
        over_budget += result["rag"]["timeouts"] + result["session"].get("late_prefetches", 0)
        lookups += result["rag"]["turns"]
        wait += result["memory_wait_ms"]
        if not result["greeted"]:
            failures["no greeting"] += 1
        for turn in result["turns"]:
            turns += 1
            if not turn["ok"]:
                failures[turn["why"]] += 1
                continue
            spent = server_ms(by_job.get(plan["key"], []), turn["voice_ended_at"],
                              turn["first_audio_at"])
            e2e.append(turn["e2e_ms"])
            server.append(spent)
            net.append(turn["e2e_ms"] - spent)
            waited = turn["user_metrics"].get("end_of_turn_delay")
            if waited is not None:
                endpointing.append(waited * 1000)
                after.append(turn["e2e_ms"] - spent - waited * 1000)
    done_at = float(min(finished) if finished else raw["ended"])
    steady = _window(raw["samples"], raw["last_launch"], done_at)
    jobs_cores, machine_cores = _cores(steady)
    totals = [sum(r["pss"].values()) for r in raw["samples"]] or [0.0]
    peaks = list(raw["peak_pss"].values())
    forkserver = max((r["forkserver_pss"] or 0.0 for r in raw["samples"]), default=0.0)
    infra = raw["infra_pss_mb"]
    footprint_gb = (max(totals) + forkserver + infra["postgres"] + infra["redis"]) / 1024
    inits = [s["process_ready"] - s["process_created"] for s in raw["inits"]
             if "process_ready" in s and "process_created" in s]
    init_failures = sum(1 for s in raw["inits"] if "process_ready" not in s)
    loads = [r["load1"] for r in raw["samples"]] or [0.0]
    failed = sum(failures.values())
    reasons = []
    if failed:
        reasons.append(f"{failed} failed turn(s): " + ", ".join(
            f"{why} x{count}" for why, count in failures.most_common()))
    if footprint_gb > limits.memory_gb:
        reasons.append(f"memory {footprint_gb:.1f} GB over the {limits.memory_gb:g} GB budget")
    lookup_p95, net_p95 = pct(lookup, 95), pct(net, 95)
    if lookup_p95 is not None and lookup_p95 > limits.lookup_ms:
        reasons.append(f"memory lookup p95 {lookup_p95:.1f} ms over {limits.lookup_ms:g} ms")
    if net_p95 is not None and net_p95 > limits.latency_ms:
        reasons.append(f"reply latency p95 {net_p95:.0f} ms over {limits.latency_ms:g} ms")
    summary = {
        "n": n, "turns": turns, "failed": failed, "failures": dict(failures),
        "lookup_ms": [pct(lookup, 50), lookup_p95], "over_budget": [over_budget, lookups],
        "wait_ms": [pct(wait, 50), pct(wait, 95)],
        "e2e_ms": [pct(e2e, 50), pct(e2e, 95)], "server_ms": [pct(server, 50), pct(server, 95)],
        "net_ms": [pct(net, 50), net_p95],
        "end_of_turn_ms": [pct(endpointing, 50), pct(endpointing, 95)],
        "after_turn_ms": [pct(after, 50), pct(after, 95)],
        "jobs_cores": jobs_cores, "machine_cores": machine_cores,
        "cores_per_job": [pct(cpu_per_job, 50), pct(cpu_per_job, 95)],
        "pss_per_job_mb": [pct(peaks, 50), max(peaks, default=None)],
        "pss_jobs_gb": max(totals) / 1024, "forkserver_mb": forkserver,
        "postgres_mb": infra["postgres"], "redis_mb": infra["redis"],
        "footprint_gb": footprint_gb, "init_s": [pct(inits, 50), max(inits, default=None)],
        "init_failures": init_failures, "end_job_s": [pct(end_job, 50), pct(end_job, 95)],
        "warmed_s": raw["warmed_s"], "infra_cpu_s": raw["infra_cpu_s"],
        "load": [raw["load_before"][0], float(np.mean(loads)), max(loads),
                 raw["load_after"][0]],
        "refused_transcriptions": raw["server"]["refused_transcriptions"],
        "log_counts": dict(Counter(raw["log_counts"]).most_common(8)),
        "verdict": {"breaks": bool(reasons), "reasons": reasons,
                    "hard": bool(failed) or footprint_gb > limits.memory_gb},
    }
    summary["headline"] = {k: summary[k] for k in (
        "n", "failed", "lookup_ms", "over_budget", "net_ms", "e2e_ms", "jobs_cores",
        "pss_per_job_mb", "footprint_gb", "init_s", "load", "verdict")}
    return summary


def _pair(values: list[float | None], digits: int = 0) -> str:
    return " / ".join("-" if v is None else f"{v:.{digits}f}" for v in values)


def markdown(report: dict[str, Any]) -> str:
    m, limits = report["machine"], report["limits"]
    rounds = [r["summary"] for r in report["rounds"]]
    label = f" ({report['label']})" if report["label"] else ""
    lines = [
        f"## Capacity: concurrent voice sessions, one job process each{label} "
        "(bench/capacity.py)", "",
        f"Command: `{report['command']}`", "",
        f"Run {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, shared with "
        f"other work (load average per round below); Python {m['python']}; commit "
        f"{m['commit']}.", "",
        "Each session is a LiveKit job process forked by LiveKit's forkserver (preloaded as "
        "the worker preloads it) and started by LiveKit's ProcPool with the product's prewarm; "
        "the job runs agent.entrypoint's sequence with a microphone and loudspeaker in place of "
        f"the room. The person speaks {len(TURNS)} espeak-ng utterances at speaking pace (one "
        "saves a memory through the `remember` tool), each after the previous reply has had "
        "time to play, through Silero VAD, OpenAI STT, the memory lookup, the OpenAI LLM and "
        f"OpenAI TTS. {_audio_in(report)}Each person has {report['memories']} past turns "
        f"stored. Sessions of a round start spread over {report['ramp_s']:g} s. Shared by all "
        "jobs: one Postgres (embedded, loopback), one redis-server, one loopback "
        "OpenAI-compatible server in its own process (replies scripted, speech pre-rendered), "
        "whose own time per request is subtracted from each turn.", "",
        f"Limits: no failed turn; memory (PSS of jobs + forkserver + Postgres + Redis) <= "
        f"{limits['memory_gb']:g} GB; memory lookup p95 <= {limits['lookup_ms']:g} ms; end of "
        f"speech -> first audio frame minus the server's time, p95 <= "
        f"{limits['latency_ms']:g} ms: the framework's own end-of-turn wait (`end_of_turn_delay`"
        ": 0.5 s when its turn detector, the local v1-mini model, judges the turn complete, up "
        "to 3 s when not) plus 0.5 s for everything else. The end-of-turn wait and the rest "
        "(STT, memory, LLM, TTS, and any delay the load adds) are shown apart.", "",
        "Latency per turn, p50 / p95 ms (memory lookup = the product's own `RAGService."
        "context_ms`, from its start, on the transcript for a spoken turn; over budget = turns "
        "whose LLM call waited RAG_BUDGET_MS for the lookup and went on without memories; "
        "wait = `CompanionSession.turn_ms`, what the LLM call waited for memory and mood):", "",
        "| N | turns | failed | memory lookup | over budget | wait for memory | end of speech "
        "-> audio, "
        "minus server | of which end-of-turn wait | the rest | as measured | server's own | "
        "verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in rounds:
        verdict = "; ".join(s["verdict"]["reasons"]) or "ok"
        lines.append(
            f"| {s['n']} | {s['turns']} | {s['failed']} | {_pair(s['lookup_ms'], 1)} | "
            f"{s['over_budget'][0]}/{s['over_budget'][1]} | "
            f"{_pair(s['wait_ms'], 1)} | {_pair(s['net_ms'])} | {_pair(s['end_of_turn_ms'])} | "
            f"{_pair(s['after_turn_ms'])} | {_pair(s['e2e_ms'])} | "
            f"{_pair(s['server_ms'])} | {verdict} |"
        )
    lines += [
        "", "Resources per round (CPU over the time all N talked at once; PSS peak from "
        "/proc/PID/smaps_rollup; setup = LiveKit's process initialization, prewarm included):",
        "",
        "| N | load 1m start / mean / max / end | job CPU cores | per job p50 / p95 | machine "
        "busy cores | PSS per job p50 / max MB | jobs total GB | + forkserver / Postgres / "
        "Redis MB | footprint GB | setup p50 / max s (failed) | end of job p50 / p95 s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in rounds:
        lines.append(
            f"| {s['n']} | {_pair(s['load'], 1)} | {_pair([s['jobs_cores']], 2)} | "
            f"{_pair(s['cores_per_job'], 3)} | {_pair([s['machine_cores']], 2)} | "
            f"{_pair(s['pss_per_job_mb'])} | {s['pss_jobs_gb']:.2f} | "
            f"{_pair([s['forkserver_mb'], s['postgres_mb'], s['redis_mb']])} | "
            f"{s['footprint_gb']:.2f} | {_pair(s['init_s'], 1)} ({s['init_failures']}) | "
            f"{_pair(s['end_job_s'], 2)} |"
        )
    broken = next((s for s in rounds if s["verdict"]["breaks"]), None)
    hard = next((s for s in rounds if s["verdict"]["hard"]), None)
    lines += ["", (f"**First limit crossed at N = {broken['n']}**: "
                   + "; ".join(broken["verdict"]["reasons"]) + ".")
              if broken else "**Did not break** in the sessions tried."]
    if hard is not None and hard is not broken:
        lines += ["", f"**Failed turns or memory over budget from N = {hard['n']}**: "
                  + "; ".join(hard["verdict"]["reasons"]) + "."]
    if NOTES.exists():
        lines += ["", NOTES.read_text().strip()]
    lines += ["", "![capacity curve](capacity.png)"]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["summary"] for r in report["rounds"]]
    limits = report["limits"]
    ns = [s["n"] for s in rounds]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [
        (axes[0][0], "end of speech -> first audio, minus server (ms)",
         [("p50", [s["net_ms"][0] for s in rounds]), ("p95", [s["net_ms"][1] for s in rounds])],
         limits["latency_ms"]),
        (axes[0][1], "memory lookup (ms)",
         [("p50", [s["lookup_ms"][0] for s in rounds]),
          ("p95", [s["lookup_ms"][1] for s in rounds])], limits["lookup_ms"]),
        (axes[1][0], "memory: PSS (GB)",
         [("jobs", [s["pss_jobs_gb"] for s in rounds]),
          ("footprint", [s["footprint_gb"] for s in rounds])], limits["memory_gb"]),
        (axes[1][1], "CPU (cores)",
         [("job processes", [s["jobs_cores"] for s in rounds]),
          ("whole machine", [s["machine_cores"] for s in rounds])],
         float(report["machine"]["cores"])),
    ]
    axes[0][1].set_yscale("log")
    for ax, title, series, limit in panels:
        for name, values in series:
            ax.plot(ns, [np.nan if v is None else v for v in values], marker="o", label=name)
        ax.axhline(limit, color="red", linestyle="--", linewidth=1, label="limit")
        ax.set_title(title)
        ax.set_xlabel("concurrent sessions")
        ax.grid(alpha=0.3)
        ax.legend()
    for s in rounds:
        if s["failed"]:
            axes[0][0].annotate(f"{s['failed']} failed", (s["n"], s["net_ms"][1] or 0))
    label = f" ({report['label']})" if report["label"] else ""
    fig.suptitle(f"Capacity on {report['machine']['cores']} cores{label}, "
                 f"{report['machine']['date']}, commit {report['machine']['commit']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _audio_in(report: dict[str, Any]) -> str:
    audio = report.get("audio_in")  # absent from sweeps recorded before it was
    if not audio:
        return ""
    return (f"The microphone delivers the speech as the room would for the product: "
            f"{audio['sample_rate'] / 1000:g} kHz in {audio['frame_ms']} ms frames. ")
