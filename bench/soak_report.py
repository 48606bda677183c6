"""What bench/soak.py counts while it runs (`Tally`), and its report: the JSON summary and
the markdown section of bench/RESULTS.md."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.common import fmt_ms, percentiles
from bench.soak_faults import RECOVERY_S
from bench.soak_forget import ForgetCheck
from tests.support.markers import Leak

TIMELINE_S = 5


@dataclass
class Tally:
    """What the run did and saw."""

    turns: int = 0
    sessions: int = 0
    turn_errors: Counter[str] = field(default_factory=Counter)
    open_errors: Counter[str] = field(default_factory=Counter)
    tool_errors: Counter[str] = field(default_factory=Counter)
    close_errors: Counter[str] = field(default_factory=Counter)
    tool_calls: int = 0
    turn_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # Slowest waits outside the turn's memory lookup, by call and phase: a hung database
    # must end each of them within the pool's bounds.
    call_ms: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    timeline: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    with_memory: Counter[str] = field(default_factory=Counter)
    leaks: list[Leak] = field(default_factory=list)
    messages: int = 0
    episodes: int = 0
    notes: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    forget: ForgetCheck = field(default_factory=ForgetCheck)
    forget_rows: dict[str, int] = field(default_factory=dict)


def summarize(tally: Tally) -> dict[str, Any]:
    everything = [ms for samples in tally.turn_ms.values() for ms in samples]
    kinds = Counter(leak.kind for leak in tally.leaks)
    return {
        "turns": tally.turns,
        "sessions_opened": tally.sessions,
        "tool_calls": tally.tool_calls,
        "errors": {
            "turn": dict(tally.turn_errors),
            "open_session": dict(tally.open_errors),
            "tool": dict(tally.tool_errors),
            "close": dict(tally.close_errors),
        },
        "leaks": {"cross_user": kinds["cross_user"], "cross_companion": kinds["cross_companion"],
                  "examples": [f"{x.where}: {x.token} for {x.scope.own}" for x in tally.leaks[:5]]},
        "turn_ms": percentiles(everything),
        "turn_ms_by_phase": {k: percentiles(v) for k, v in sorted(tally.turn_ms.items())},
        "turn_ms_max_by_phase": {k: round(max(v), 1) for k, v in sorted(tally.turn_ms.items())},
        "call_ms_max_by_phase": {
            call: {phase: round(max(v), 1) for phase, v in sorted(phases.items()) if v}
            for call, phases in sorted(tally.call_ms.items())
        },
        "turns_with_own_memory_by_phase": dict(tally.with_memory),
        "timeline": [
            {"from_s": k * TIMELINE_S, **percentiles(v)} for k, v in sorted(tally.timeline.items())
        ],
        "faults": tally.faults,
        "forget": tally.forget.summary(),
    }


def markdown(report: dict[str, Any]) -> str:
    m, w, s = report["machine"], report["writes"], report["services"]
    lost = sum(w["lost"].values())
    leaks_ = report["leaks"]
    errors = report["errors"]
    f, rows = report["forget"], report["forget_rows"]
    frozen = report["turn_ms_by_phase"].get("postgres_frozen")
    slowest = {call: phases.get("postgres_frozen", 0.0)
               for call, phases in report["call_ms_max_by_phase"].items()}
    slowest["forget"] = f["forget_ms_max_by_phase"].get("postgres_frozen", 0.0)
    bounds = report["bounds"]
    lines = [
        "## Soak with faults (bench/soak.py)",
        "",
        f"Command: `{report['command']}` (seed {report['seed']})",
        "",
        f"Run {m['date']} on {m['cpu']}, {m['cores']} cores shared with other work; load "
        f"average {m['load_average_1m_5m_15m'][0]} at start, {m['load_average_after'][0]} at "
        f"end; Python {m['python']}, Postgres {m['postgres']} + pgvector {m['pgvector']} and "
        "redis-server on loopback. One worker process: one `Services` shared by "
        f"{report['sessions']} concurrent simulated sessions for {report['seconds']:.0f} s, "
        "through `open_session`, `with_turn_context` (memory block + mood, RAG budget 150 ms), "
        "`log_message` for turn and reply, a tool on 20% of turns (`remember`, `recall` or "
        "the memory list) and `close`; each session saves a secret when it starts (if its "
        "pair holds none) and asks to forget it while the database is away; "
        f"{report['think_s'][0]:g}-{report['think_s'][1]:g} s between turns. "
        "Embeddings and the background LLM are the loopback OpenAI stub in its own process "
        "(no LLM on the turn path); client retries and timeouts at their defaults "
        f"(pool acquire {bounds['db_acquire_timeout_s']:g} s, statement "
        f"{bounds['db_command_timeout_s']:g} s).",
        "",
        "Faults: " + "; ".join(f"{x['fault']} {x['from_s']}-{x['to_s']} s"
                               for x in report["faults"]) + ".",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| turns (sessions opened) | {report['turns']:,} ({report['sessions_opened']:,}) |",
        f"| turn errors (an exception out of the turn path) | {sum(errors['turn'].values())} |",
        f"| lost writes (messages / episodes / saved notes) | **{lost}** "
        f"({w['lost']['messages']} / {w['lost']['episodes']} / {w['lost']['notes']} of "
        f"{w['expected']['messages']:,} / {w['expected']['episodes']:,} / "
        f"{w['expected']['notes']:,}) |",
        f"| cross-user leaks | **{leaks_['cross_user']}** |",
        f"| cross-companion leaks (greetings, memory blocks with profile line, tool results) | "
        f"**{leaks_['cross_companion']}** |",
        f"| secrets saved; forgets while the database was away: made / deferred to the spool "
        f"/ refused | {f['planted']}; {f['made']} / {f['deferred']} / {f['refused']} |",
        f"| forgotten memories served (memory blocks, recall, memory list, greetings, a last "
        f"lookup) | **{f['forgotten_served']}** |",
        f"| forgotten rows left in Postgres after the spool's replay | "
        f"**{rows['forgotten_rows_left']}** |",
        f"| kept secrets seen where they may be (the check can see a marker) | "
        f"{sum(f['kept_seen'].values())} ({rows['kept_rows_found']} of {rows['kept']} kept "
        "still in Postgres) |",
        f"| turn overhead p50 / p95 / p99 ms, all turns | {fmt_ms(report['turn_ms'])} |",
        "| Postgres frozen: turns, p50 / p95 / p99 / max ms | "
        + (f"{frozen['count']:,}, {fmt_ms(frozen)} / "
           f"{report['turn_ms_max_by_phase']['postgres_frozen']:.0f} |" if frozen else "0 |"),
        "| Postgres frozen: slowest " + " / ".join(sorted(slowest)) + " ms | "
        + " / ".join(f"{slowest[k]:,.0f}" for k in sorted(slowest)) + " |",
        f"| spooled during the run / replayed by it / left for the next start | "
        f"{s['batcher']['spooled']} / {s['batcher']['replayed']} / {w['replayed_at_next_start']} |",
        f"| Redis fallbacks / reconnects, backend at the end | {s['cache']['fallbacks']} / "
        f"{s['cache']['reconnects']}, {s['cache']['backend']} |",
        f"| RAG timeouts / errors | {s['rag']['timeouts']} / {s['rag']['errors']} |",
        f"| embedder errors / refused while failing | {s['embedder']['errors']} / "
        f"{s['embedder'].get('refused_while_failing', 0)} |",
        f"| summaries by LLM / fallback; consolidation failures | "
        f"{s['conversations']['summaries_by_llm']} / {s['conversations']['summaries_fallback']}; "
        f"{s['consolidation']['failures']} |",
        "",
        "Expected errors outside the turn path, by fault: "
        f"open_session {errors['open_session'] or 'none'}; tools {errors['tool'] or 'none'}; "
        f"close {errors['close'] or 'none'}.",
        "",
        "| phase | turns | with own memory | turn p50 / p95 / p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for phase, summary in report["turn_ms_by_phase"].items():
        with_memory = report["turns_with_own_memory_by_phase"].get(phase, 0)
        lines.append(f"| {phase} | {summary['count']:,} | {with_memory:,} | {fmt_ms(summary)} |")
    lines += [
        "",
        "Phases: a turn is counted under the fault active when it started, `after_<fault>` for "
        f"{RECOVERY_S:g} s after it ended, `warm_up` for the first {RECOVERY_S:g} s (all sessions "
        "opening at once). With Postgres down or frozen a turn goes on without memory (RAG "
        "fails fast, or within its budget, counted) and writes are retried, then spooled and "
        "replayed; a frozen Postgres answers nothing, so every other wait ends at the pool's "
        "bounds; with embeddings failing the first turns wait out the budget until the "
        "embedder stops asking (two failed calls in a row), then keyword search answers "
        "within it; open_session and tools fail while Postgres is away (the tool returns an "
        "error to the model). A forget is counted from the moment it returns: made (the rows "
        "deleted), deferred (the delete waits in the spool and the process hides it "
        "meanwhile) or refused (\"try again in a moment\", nothing changed; asked again later).",
    ]
    return "\n".join(lines)
