"""Soak: many concurrent sessions for a bounded time, with faults injected on a schedule.

N simulated sessions talk at once through the real turn path of one worker process:
`open_session`, then per turn `CompanionSession.with_turn_context` (what `llm_node` runs
before the LLM: memory block and mood) and `log_message` for the turn and the reply (messages
and episodic memories through the batcher), now and then a tool (`remember`, `recall`), and
`close` (summary, consolidation, profile refresh in the background). There is no LLM on the
turn path (the reply text is scripted); the background LLM calls and the embeddings go to the
loopback OpenAI stub, which runs in its own process.

Faults, at fixed shares of the run: Redis killed and restarted on its port, Postgres stopped
and started, the embeddings endpoint answering 500, the chat endpoint answering 429.

At the end every session is closed and the services drained; anything left in the spool is
replayed by a new batcher, as the next start would. Then it reports turns, errors, lost writes
(what was logged or saved vs the rows in Postgres: must be 0), cross-user and cross-companion
leaks (marker tokens in greetings, memory blocks and tool results: must be 0) and the turn
overhead.

    .venv/bin/python bench/soak.py                        # 20 sessions, 60 s
    .venv/bin/python bench/soak.py --sessions 30 --seconds 120 --json /tmp/soak.json --write

It starts its own Postgres (pgserver's binaries) and redis-server on 127.0.0.1, and stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from livekit.agents import llm  # noqa: E402

from bench.common import machine_info, percentiles, write_section  # noqa: E402
from core.config import Settings  # noqa: E402
from core.memory_records import Episode  # noqa: E402
from infrastructure import migrations  # noqa: E402
from infrastructure.connection_pool import ConnectionPool  # noqa: E402
from infrastructure.database_batcher import DatabaseBatcher  # noqa: E402
from infrastructure.spool import Spool  # noqa: E402
from livekit_layer.companion_session import CompanionSession  # noqa: E402
from livekit_layer.session_open import open_session  # noqa: E402
from services.composition import Services, build_services, register_write_kinds  # noqa: E402
from services.people.companion_service import Companion  # noqa: E402
from services.people.onboarding_service import OnboardingData  # noqa: E402
from tests.support.markers import (  # noqa: E402
    Leak,
    Scope,
    check_block,
    leaks,
    marker_brain,
    markers_in,
    pair_token,
    user_token,
)
from tests.support.openai_server import OpenAIStubServer  # noqa: E402
from tests.support.servers import PostgresProcess, RedisProcess  # noqa: E402

COMPANIONS = ("Veda", "Kai")
EMBEDDINGS = "/v1/embeddings"
CHAT = "/v1/chat/completions"
# (name, start, end) as shares of the run; outside every window the phase is "steady".
FAULTS = (
    ("redis_down", 0.12, 0.25),
    ("postgres_down", 0.35, 0.45),
    ("embeddings_500", 0.55, 0.68),
    ("llm_429", 0.75, 0.88),
)
QUESTIONS = (
    "What is my pet called again?",
    "Do you remember which stamps I collect?",
    "How is my sister doing?",
    "What did I say about the park last week?",
    "I feel a bit tired today.",
    "Guess what happened at the market!",
)
# Seconds between a reply and the next turn: real voice turns come every few seconds.
THINK_S = (1.0, 3.0)
# Turns this soon after a fault ends (or the run starts) are reported as their own phase.
RECOVERY_S = 5.0
TIMELINE_S = 5
TURNS_PER_SESSION = (4, 10)
CLOSE_GIVE_UP_S = 120.0


class StubProcess:
    """The OpenAI stub in a child process (its own interpreter, like a real server), with a
    small control endpoint on a second loopback port for injecting faults."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.control_url = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-stub"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        self.base_url, self.control_url = ready["base_url"], ready["control_url"]

    async def control(self, action: str, **body: Any) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(f"{self.control_url}/{action}", json=body)
            response.raise_for_status()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def serve_stub() -> None:
    """The child side of StubProcess: the stub, its control app, and no unbounded history."""
    from aiohttp import web

    server = OpenAIStubServer(chat_script=marker_brain)
    await server.start()

    async def fail(request: web.Request) -> web.Response:
        body = await request.json()
        server.fail_next(int(body["n"]), status=int(body["status"]),
                         path_prefix=body["path_prefix"], retry_after=body.get("retry_after"))
        return web.json_response({"ok": True})

    async def reset(request: web.Request) -> web.Response:
        server.reset()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/fail", fail)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    control_port = runner.addresses[0][1]
    print(json.dumps({"base_url": server.base_url,
                      "control_url": f"http://127.0.0.1:{control_port}"}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 5)
        except TimeoutError:
            server.requests.clear()  # it records every request; a long soak would keep them all
    await runner.cleanup()
    await server.close()


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
    timeline: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    with_memory: Counter[str] = field(default_factory=Counter)
    leaks: list[Leak] = field(default_factory=list)
    messages: int = 0
    episodes: int = 0
    notes: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)


class Clock:
    """Phases of the run, for tagging each turn with the fault active when it started, or the
    one that ended moments ago (recovery), or the warm-up."""

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.seconds = seconds
        self.active: set[str] = set()
        self.ended: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def phase(self) -> str:
        if self.active:
            return "+".join(sorted(self.active))
        now = self.elapsed()
        recent = [name for name, at in self.ended.items() if now - at < RECOVERY_S]
        if recent:
            return "after_" + "+".join(sorted(recent))
        return "warm_up" if now < RECOVERY_S else "steady"

    def over(self) -> bool:
        return self.elapsed() >= self.seconds


People = list[tuple[uuid.UUID, list[Companion]]]


async def seed(services: Services, users: int, rng: random.Random) -> People:
    """Each person: a name and a shared memory with their token; each companion: two facts
    and 20 episodes with the pair's token."""
    now = datetime.now(UTC)
    gate = asyncio.Semaphore(8)

    async def one(index: int) -> tuple[uuid.UUID, list[Companion]]:
        async with gate:
            uid = uuid.uuid4()
            await services.users.ensure(uid)
            await services.users.update_profile(uid, display_name=f"Person {user_token(index)}")
            companions = [
                await services.companions.create(uid, name=name, is_default=c == 0)
                for c, name in enumerate(COMPANIONS)
            ]
            await services.memory.remember(uid, None, "PERSON", "sister",
                                           f"{user_token(index)}, my sister")
            for c, companion in enumerate(companions):
                token = pair_token(index, c)
                await services.memory.remember(uid, companion.id, "FACT", "pet_name",
                                               f"{token} the parrot")
                await services.memory.remember(uid, companion.id, "PREFERENCE", "hobby",
                                               f"collecting {token} stamps")
                await services.memory.import_episodes(uid, companion.id, [
                    Episode("user", f"At the park I thought about {token} again ({n})",
                            now - timedelta(hours=rng.randint(1, 2_000)))
                    for n in range(20)
                ])
            return uid, companions

    return list(await asyncio.gather(*(one(i) for i in range(users))))


async def run_faults(
    clock: Clock, tally: Tally, pg: PostgresProcess, redis: RedisProcess, stub: StubProcess
) -> None:
    """Apply the fault schedule; every fault is undone by its window's end (or on cancel)."""

    async def at(share: float) -> None:
        await asyncio.sleep(max(0.0, share * clock.seconds - clock.elapsed()))

    actions: dict[str, tuple[Callable[[], Coroutine[Any, Any, None]],
                             Callable[[], Coroutine[Any, Any, None]]]] = {
        "redis_down": (lambda: asyncio.to_thread(redis.kill),
                       lambda: asyncio.to_thread(redis.start)),
        "postgres_down": (lambda: asyncio.to_thread(pg.stop),
                          lambda: asyncio.to_thread(pg.start)),
        "embeddings_500": (
            lambda: stub.control("fail", n=10**9, status=500, path_prefix=EMBEDDINGS),
            lambda: stub.control("reset"),
        ),
        "llm_429": (
            lambda: stub.control("fail", n=10**9, status=429, path_prefix=CHAT, retry_after=0.2),
            lambda: stub.control("reset"),
        ),
    }
    for name, start, end in FAULTS:
        await at(start)
        begin, undo = actions[name]
        began = clock.elapsed()
        await begin()
        clock.active.add(name)
        try:
            await at(end)
        finally:
            await undo()
            clock.active.discard(name)
            clock.ended[name] = clock.elapsed()
            tally.faults.append({"fault": name, "from_s": round(began, 1),
                                 "to_s": round(clock.elapsed(), 1)})
            print(f"  fault {name}: {began:.1f}-{clock.elapsed():.1f} s", flush=True)


def chat_with(history: list[str], text: str) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="You are a companion.")
    for i, said in enumerate(history[-6:]):
        ctx.add_message(role="user" if i % 2 == 0 else "assistant", content=said)
    ctx.add_message(role="user", content=text)
    return ctx


async def talk(
    services: Services, session: CompanionSession, scope: Scope, rng: random.Random,
    clock: Clock, tally: Tally, counter: Callable[[], int], think_s: tuple[float, float],
) -> None:
    history: list[str] = []
    for _ in range(rng.randint(*TURNS_PER_SESSION)):
        if clock.over():
            return
        n = counter()
        text = f"{rng.choice(QUESTIONS)} I keep thinking about {scope.own}. ({n})"
        phase = clock.phase()
        started = time.perf_counter()
        try:
            ctx = await session.with_turn_context(chat_with(history, text))
        except Exception as exc:
            tally.turn_errors[type(exc).__name__] += 1
            continue
        ms = (time.perf_counter() - started) * 1000
        tally.turn_ms[phase].append(ms)
        tally.timeline[int(clock.elapsed() // TIMELINE_S)].append(ms)
        tally.turns += 1
        blocks = [m.text_content or "" for m in ctx.messages() if m.id.startswith("memory_")]
        block = "\n".join(blocks)
        tally.leaks += check_block(block, scope, where="turn_block")
        if scope.own in markers_in(block):
            tally.with_memory[phase] += 1
        reply = f"I hear you about {scope.own}, tell me more. ({n})"
        session.log_message("user", text)
        session.log_message("assistant", reply)
        tally.messages += 2
        tally.episodes += 2
        history += [text, reply]
        if rng.random() < 0.2:
            await use_a_tool(services, session, scope, rng, tally, n)
        await asyncio.sleep(rng.uniform(*think_s))


async def use_a_tool(
    services: Services, session: CompanionSession, scope: Scope, rng: random.Random,
    tally: Tally, n: int,
) -> None:
    """What the remember and recall tools call (ToolError to the model on failure)."""
    tally.tool_calls += 1
    uid, cid = session.guard.user_id, session.guard.companion_id
    try:
        if rng.random() < 0.5:
            await services.memory.remember(uid, cid, "FACT", f"note_{n}", f"{scope.own} note {n}")
            tally.notes += 1
        else:
            found = await services.retrieval.search(uid, cid, "my pet and the stamps", k=5)
            text = " ".join(s.memory.content for s in found)
            tally.leaks += leaks(text, scope.pair_allowed, where="recall", scope=scope)
    except Exception as exc:
        tally.tool_errors[type(exc).__name__] += 1


async def worker(
    services: Services, people: People, busy: set[tuple[int, int]],
    rng: random.Random, clock: Clock, tally: Tally, counter: Callable[[], int],
    think_s: tuple[float, float],
) -> None:
    while not clock.over():
        free = [(i, c) for i in range(len(people)) for c in range(2) if (i, c) not in busy]
        index, c = rng.choice(free)
        busy.add((index, c))
        try:
            uid, companions = people[index]
            try:
                session = await open_session(
                    services, user_id=uid, room=f"soak-{index}-{c}",
                    onboarding=OnboardingData(companion=COMPANIONS[c]),
                )
            except Exception as exc:
                tally.open_errors[type(exc).__name__] += 1
                await asyncio.sleep(0.5)
                continue
            tally.sessions += 1
            scope = Scope(index, c)
            if session.companion.id != companions[c].id:
                tally.leaks.append(Leak("open_session companion", scope, scope.sibling))
            # Last session's summary and follow-ups: this pair's only.
            tally.leaks += leaks(session.greeting_instructions(), scope.pair_allowed,
                                 where="greeting", scope=scope)
            await talk(services, session, scope, rng, clock, tally, counter, think_s)
            try:
                await session.close(wait=False)
            except Exception as exc:
                tally.close_errors[type(exc).__name__] += 1
        finally:
            busy.discard((index, c))


async def settle(services: Services) -> None:
    for _ in range(2):
        await services.memory.drain()
        await services.conversations.drain()
        await services.consolidation.drain()
        await services.batcher.flush()


async def count_rows(
    settings: Settings, dsn: str, tally: Tally, seeded_episodes: int
) -> dict[str, Any]:
    """Replay what the run left in the spool (as the next start would), then count."""
    pool = await ConnectionPool.create(settings, dsn=dsn)
    try:
        leftover = len(Spool(settings.batch_spool_dir).pending_files())
        successor = DatabaseBatcher(pool=pool, settings=settings)
        register_write_kinds(successor)
        await successor.start()
        replayed = successor.stats()["replayed"]
        await successor.aclose()
        row = await pool.fetchrow(
            "select (select count(*) from public.messages) as messages, "
            "(select count(*) from public.memories where kind = 'episodic') as episodes, "
            "(select count(*) from public.memories where kind = 'explicit' "
            " and key like 'note\\_%') as notes"
        )
        assert row is not None
        found = {k: int(row[k]) for k in ("messages", "episodes", "notes")}
        expected = {"messages": tally.messages, "episodes": tally.episodes + seeded_episodes,
                    "notes": tally.notes}
        return {
            "spool_files_left_at_exit": leftover,
            "replayed_at_next_start": replayed,
            "expected": expected,
            "found": found,
            "lost": {k: max(0, expected[k] - found[k]) for k in expected},
            "extra": {k: max(0, found[k] - expected[k]) for k in expected},
        }
    finally:
        await pool.aclose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="companion-soak-"))
    pg, redis, stub = PostgresProcess(), RedisProcess(), StubProcess()
    report: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "seed": args.seed,
                              "sessions": args.sessions, "seconds": args.seconds,
                              "think_s": [args.think_min_s, args.think_max_s]}
    try:
        pg.start()
        pg.psql("create database soak")
        dsn = pg.dsn_for("soak")
        redis.start()
        stub.start()
        settings = Settings(
            _env_file=None,
            database_url=dsn,
            redis_url=redis.url,
            openai_base_url=stub.base_url,
            openai_api_key="soak",
            llm_model="stub-model",
            embedding_provider="openai",
            embedding_model="text-embedding-3-small",
            embedding_dimensions=384,
            batch_spool_dir=work / "spool",
            embedded_pg_dir=work / "pg",
            session_resume_grace_s=0,
            db_pool_max_size=20,
        )
        await migrations.migrate(dsn, settings)  # the worker's part, once
        services = await build_services(settings)
        tally = Tally()
        try:
            report["machine"] = await machine_info(services.pool)
            # Every session needs a (person, companion) pair nobody else is talking with.
            users = max(args.sessions, args.users or args.sessions * 2)
            people = await seed(services, users, rng)
            seeded = users * 2 * 20
            await settle(services)
            print(f"seeded {users} people x 2 companions; {args.sessions} sessions for "
                  f"{args.seconds:.0f} s", flush=True)
            think = (args.think_min_s, args.think_max_s)
            clock = Clock(args.seconds)
            numbers = iter(range(10**9))
            busy: set[tuple[int, int]] = set()
            faults = asyncio.create_task(run_faults(clock, tally, pg, redis, stub))
            workers = [
                asyncio.create_task(worker(services, people, busy, random.Random(rng.random()),
                                           clock, tally, lambda: next(numbers), think))
                for _ in range(args.sessions)
            ]
            await asyncio.wait_for(asyncio.gather(*workers), args.seconds + CLOSE_GIVE_UP_S)
            faults.cancel()
            await asyncio.gather(faults, return_exceptions=True)
            await asyncio.wait_for(settle(services), CLOSE_GIVE_UP_S)
            report["services"] = {
                "rag": services.rag.stats(),
                "cache": services.cache.stats(),
                "batcher": services.batcher.stats(),
                "embedder": services.embedder.stats(),
                "consolidation": services.consolidation.stats(),
                "conversations": services.conversations.stats(),
                "profiles": services.profiles.stats(),
            }
        finally:
            await services.aclose()
        report["services"]["batcher_after_close"] = services.batcher.stats()
        report["writes"] = await count_rows(settings, dsn, tally, seeded)
        report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        report.update(summarize(tally))
    finally:
        stub.stop()
        redis.kill()
        pg.destroy()
        shutil.rmtree(work, ignore_errors=True)
    return report


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
        "turns_with_own_memory_by_phase": dict(tally.with_memory),
        "timeline": [
            {"from_s": k * TIMELINE_S, **percentiles(v)} for k, v in sorted(tally.timeline.items())
        ],
        "faults": tally.faults,
    }


def markdown(report: dict[str, Any]) -> str:
    m, w, s = report["machine"], report["writes"], report["services"]
    lost = sum(w["lost"].values())
    leaks_ = report["leaks"]
    errors = report["errors"]
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
        "`log_message` for turn and reply, a tool on 20% of turns (`remember` or `recall`) and "
        f"`close`; {report['think_s'][0]:g}-{report['think_s'][1]:g} s between turns. "
        "Embeddings and the background LLM are the loopback OpenAI stub in its own process "
        "(no LLM on the turn path); client retries and timeouts at their defaults.",
        "",
        "Faults: " + "; ".join(f"{f['fault']} {f['from_s']}-{f['to_s']} s"
                               for f in report["faults"]) + ".",
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
        f"| turn overhead p50 / p95 / p99 ms, all turns | {_ms(report['turn_ms'])} |",
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
        lines.append(f"| {phase} | {summary['count']:,} | {with_memory:,} | {_ms(summary)} |")
    lines += [
        "",
        "Phases: a turn is counted under the fault active when it started, `after_<fault>` for "
        f"{RECOVERY_S:g} s after it ended, `warm_up` for the first {RECOVERY_S:g} s (all sessions "
        "opening at once). With Postgres down a turn goes on without memory (RAG fails fast, "
        "counted) and writes are retried, then spooled and replayed; with embeddings failing "
        "the first turns wait out the budget until the embedder stops asking (two failed calls "
        "in a row), then keyword search answers within it; open_session and tools fail while "
        "Postgres is down (the tool returns an error to the model).",
    ]
    return "\n".join(lines)


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['p50']:.2f} / {summary['p95']:.2f} / {summary['p99']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=0, help="people (default 2 x sessions)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--think-min-s", type=float, default=THINK_S[0])
    parser.add_argument("--think-max-s", type=float, default=THINK_S[1])
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument("--log-level", default="CRITICAL",
                        help="the services' own logging (faults make them log errors)")
    parser.add_argument("--serve-stub", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        asyncio.run(serve_stub())
        return
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    report = asyncio.run(run(args))
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if args.write:
        write_section("soak", text)
    failed = (sum(report["writes"]["lost"].values()) or report["leaks"]["cross_user"]
              or report["leaks"]["cross_companion"] or sum(report["errors"]["turn"].values()))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
