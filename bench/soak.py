"""Soak: many concurrent sessions for a bounded time, with faults injected on a schedule.

N simulated sessions talk at once through the real turn path of one worker process:
`open_session`, then per turn `CompanionSession.with_turn_context` (what `llm_node` runs
before the LLM: memory block and mood) and `log_message` for the turn and the reply (messages
and episodic memories through the batcher), now and then a tool (`remember`, `recall`, the
memory list), and `close` (summary, consolidation, profile refresh in the background). There
is no LLM on the turn path (the reply text is scripted); the background LLM calls and the
embeddings go to the loopback OpenAI stub, which runs in its own process (`soak_stub`).

Faults, at fixed shares of the run (`soak_faults`): Redis killed and restarted on its port,
Postgres stopped and started, Postgres frozen (SIGSTOP on every process, then SIGCONT), the
embeddings endpoint answering 500, the chat endpoint answering 429. While Postgres is away,
sessions ask to forget a secret they saved earlier (`soak_forget`).

At the end every session is closed and the services drained; anything left in the spool is
replayed by a new batcher, as the next start would. Then it reports (`soak_report`) turns,
errors, lost writes (what was logged or saved vs the rows in Postgres: must be 0), cross-user
and cross-companion leaks (marker tokens in greetings, memory blocks and tool results: must
be 0), forgotten memories served and forgotten rows left (must be 0), the turn overhead, and
the slowest waits while Postgres was frozen.

    .venv/bin/python bench/soak.py                        # 20 sessions, 60 s
    .venv/bin/python bench/soak.py --sessions 30 --seconds 120 --json /tmp/soak.json --write

It starts its own Postgres (pgserver's binaries) and redis-server on 127.0.0.1, and stops them
(thawed first, whatever happened).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from livekit.agents import llm  # noqa: E402

from bench.common import machine_info, write_section  # noqa: E402
from bench.soak_faults import Clock, fault_actions, run_faults  # noqa: E402
from bench.soak_forget import SECRET_QUERY  # noqa: E402
from bench.soak_report import TIMELINE_S, Tally, markdown, summarize  # noqa: E402
from bench.soak_stub import StubProcess  # noqa: E402
from core.config import Settings  # noqa: E402
from core.memory_records import Episode  # noqa: E402
from infrastructure import migrations  # noqa: E402
from infrastructure.connection_pool import ConnectionPool  # noqa: E402
from infrastructure.database_batcher import DatabaseBatcher  # noqa: E402
from infrastructure.spool import Spool  # noqa: E402
from livekit_layer.chat_context import is_memory_note  # noqa: E402
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
    markers_in,
    pair_token,
    user_token,
)
from tests.support.servers import PostgresProcess, RedisProcess  # noqa: E402

COMPANIONS = ("Veda", "Kai")
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
TURNS_PER_SESSION = (4, 10)
CLOSE_GIVE_UP_S = 120.0


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


def chat_with(history: list[str], text: str) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="You are a companion.")
    for i, said in enumerate(history[-6:]):
        ctx.add_message(role="user" if i % 2 == 0 else "assistant", content=said)
    ctx.add_message(role="user", content=text)
    return ctx


async def turn_block(
    session: CompanionSession, chat: llm.ChatContext, clock: Clock, tally: Tally
) -> tuple[str, float] | None:
    """The turn's memory block (None when the turn path raised) and its time in ms."""
    started = time.perf_counter()
    try:
        ctx = await session.with_turn_context(chat)
    except Exception as exc:
        tally.turn_errors[type(exc).__name__] += 1
        return None
    ms = (time.perf_counter() - started) * 1000
    blocks = [m.text_content or "" for m in ctx.messages() if is_memory_note(m)]
    return "\n".join(blocks), ms


async def talk(
    services: Services, session: CompanionSession, scope: Scope, rng: random.Random,
    clock: Clock, tally: Tally, counter: Callable[[], int], think_s: tuple[float, float],
) -> None:
    history: list[str] = []
    uid, cid = session.guard.user_id, session.guard.companion_id
    assert cid is not None
    if not clock.database_away():
        async with timed(tally, "remember", clock):
            await tally.forget.plant(services, uid, cid, scope)
    for _ in range(rng.randint(*TURNS_PER_SESSION)):
        if clock.over():
            return
        n = counter()
        text = f"{rng.choice(QUESTIONS)} I keep thinking about {scope.own}. ({n})"
        phase = clock.phase()
        chat = chat_with(history, text)
        turn = await turn_block(session, chat, clock, tally)
        if turn is None:
            continue
        block, ms = turn
        tally.turn_ms[phase].append(ms)
        tally.timeline[int(clock.elapsed() // TIMELINE_S)].append(ms)
        tally.turns += 1
        tally.leaks += check_block(block, scope, where="turn_block")
        tally.forget.check(block, "turn_block")
        if scope.own in markers_in(block):
            tally.with_memory[phase] += 1
        if clock.database_away() and await tally.forget.forget(services, scope, clock.phase()):
            # The forget tool ran inside this turn: llm_node asks for the block again.
            again = await turn_block(session, chat, clock, tally)
            if again is not None:
                tally.forget.check(again[0], "turn_block_after_forget")
        reply = f"I hear you about {scope.own}, tell me more. ({n})"
        session.log_message("user", text)
        session.log_message("assistant", reply)
        tally.messages += 2
        tally.episodes += 2
        history += [text, reply]
        if rng.random() < 0.2:
            await use_a_tool(services, session, scope, rng, clock, tally, n)
        await asyncio.sleep(rng.uniform(*think_s))


@asynccontextmanager
async def timed(tally: Tally, call: str, clock: Clock) -> AsyncIterator[None]:
    phase, started = clock.phase(), time.perf_counter()
    try:
        yield
    finally:
        tally.call_ms[call][phase].append((time.perf_counter() - started) * 1000)


async def use_a_tool(
    services: Services, session: CompanionSession, scope: Scope, rng: random.Random,
    clock: Clock, tally: Tally, n: int,
) -> None:
    """What the remember, recall and what_do_you_know_about_me tools call (ToolError to the
    model on failure)."""
    tally.tool_calls += 1
    uid, cid = session.guard.user_id, session.guard.companion_id
    pick = rng.random()
    try:
        if pick < 0.4:
            async with timed(tally, "remember", clock):
                await services.memory.remember(uid, cid, "FACT", f"note_{n}",
                                               f"{scope.own} note {n}")
            tally.notes += 1
        elif pick < 0.8:
            query = "my pet and the stamps" if rng.random() < 0.5 else SECRET_QUERY
            async with timed(tally, "recall", clock):
                found = await services.retrieval.search(uid, cid, query, k=5)
            text = " ".join(s.memory.content for s in found)
            tally.leaks += leaks(text, scope.pair_allowed, where="recall", scope=scope)
            tally.forget.check(text, "recall")
        else:
            async with timed(tally, "memory_list", clock):
                current = await services.memory.current(uid, cid)
            text = " ".join(m.content for m in current)
            tally.leaks += leaks(text, scope.pair_allowed, where="memory_list", scope=scope)
            tally.forget.check(text, "memory_list")
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
                async with timed(tally, "open_session", clock):
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
            greeting = session.greeting_instructions()
            tally.leaks += leaks(greeting, scope.pair_allowed, where="greeting", scope=scope)
            tally.forget.check(greeting or "", "greeting")
            await talk(services, session, scope, rng, clock, tally, counter, think_s)
            try:
                async with timed(tally, "close", clock):
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
        tally.forget_rows = await tally.forget.rows(pool)
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
    tally = Tally()
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
        report["bounds"] = {name: getattr(settings, name) for name in (
            "db_acquire_timeout_s", "db_command_timeout_s", "db_connect_timeout_s")}
        await migrations.migrate(dsn, settings)  # the worker's part, once
        services = await build_services(settings)
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
            faults = asyncio.create_task(
                run_faults(clock, tally.faults, fault_actions(pg, redis, stub))
            )
            workers = [
                asyncio.create_task(worker(services, people, busy, random.Random(rng.random()),
                                           clock, tally, lambda: next(numbers), think))
                for _ in range(args.sessions)
            ]
            await asyncio.wait_for(asyncio.gather(*workers), args.seconds + CLOSE_GIVE_UP_S)
            faults.cancel()
            await asyncio.gather(faults, return_exceptions=True)
            await asyncio.wait_for(settle(services), CLOSE_GIVE_UP_S)
            await tally.forget.sweep(services)
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
        report["forget_rows"] = tally.forget_rows
    finally:
        stub.stop()
        redis.kill()
        with contextlib.suppress(OSError):  # not running: nothing to thaw
            pg.thaw()
        pg.destroy()
        shutil.rmtree(work, ignore_errors=True)
    return report


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
    args = parser.parse_args()
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
              or report["leaks"]["cross_companion"] or sum(report["errors"]["turn"].values())
              or report["forget"]["forgotten_served"]
              or report["forget_rows"]["forgotten_rows_left"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
