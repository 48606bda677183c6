"""One measured run of the memory upkeep (merges, then contradictions) over one person's scope,
in a child process of bench/maintenance.py, with the tree under test first on PYTHONPATH.

    PYTHONPATH=TREE python bench/maintenance_runner.py --dsn DSN --user UUID [--since ISO]

It builds the tree's own MemoryService and MemoryUpkeep over the database and calls
`merge_duplicates(user)` then `flag_contradictions(user)` (with `since` only where the tree
has it: "now, next pass"). It prints one JSON line: for each call, this process's CPU seconds
(all threads), wall seconds, and the longest stall of its event loop (a 5 ms ticker: what
any other work on the loop would have waited), and what the call did.

It imports only what both trees have, so the same file measures "before" and "now".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

TICK_S = 0.005


async def measured(call: Callable[[], Awaitable[int]]) -> dict[str, Any]:
    stall = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal stall
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            stall = max(stall, now - last - TICK_S)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(TICK_S)
    cpu, wall = time.process_time(), time.perf_counter()
    done = await call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop.set()
    await ticking
    return {"cpu_s": cpu, "wall_s": wall, "loop_stall_s": stall, "count": done}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from openai import AsyncOpenAI

    from core.config import Settings
    from infrastructure.connection_pool import ConnectionPool
    from infrastructure.database_batcher import DatabaseBatcher
    from infrastructure.openai_embedder import OpenAIEmbedder
    from infrastructure.redis_cache import RedisCache
    from services.memory.memory_service import MemoryService
    from services.memory.memory_upkeep import MemoryUpkeep

    settings = Settings(
        _env_file=None, database_url=args.dsn, redis_enabled=False,
        batch_spool_dir=Path(args.work) / "spool", embedded_pg_dir=Path(args.work) / "pg",
        openai_api_key="bench", openai_base_url="http://127.0.0.1:9/v1",
        embedding_provider="openai", embedding_model="text-embedding-3-small",
        embedding_dimensions=384,
    )
    pool = await ConnectionPool.create(settings, dsn=args.dsn)
    cache = await RedisCache.create(settings)
    batcher = DatabaseBatcher(pool=pool, settings=settings)
    client = AsyncOpenAI(base_url=settings.openai_base_url, api_key="bench")
    # Never called: upkeep reads the stored vectors.
    embedder = OpenAIEmbedder(client=client, dimensions=384)
    memory = MemoryService(
        pool=pool, cache=cache, batcher=batcher, embedder=embedder, settings=settings
    )
    upkeep = MemoryUpkeep(pool=pool, memory=memory, settings=settings)
    user = uuid.UUID(args.user)
    extra: dict[str, Any] = {}
    if args.since:
        extra["since"] = datetime.fromisoformat(args.since)
    try:
        merge = await measured(lambda: upkeep.merge_duplicates(user, **extra))
        contradictions = await measured(lambda: upkeep.flag_contradictions(user, **extra))
        examined = await pool.fetchval(
            "select count(*) from public.memories where user_id = $1 and kind = 'explicit'",
            user,
        )
        superseded = await pool.fetch(
            "select id from public.memories where user_id = $1 and superseded_by is not null "
            "order by id", user,
        )
        flagged = await pool.fetch(
            "select id, source -> 'contradicts' as others from public.memories "
            "where user_id = $1 and source ? 'contradicts' order by id", user,
        )
    finally:
        await memory.aclose()
        await cache.aclose()
        await client.close()
        await pool.aclose()
    return {
        "merge": merge, "contradictions": contradictions, "rows": int(examined),
        "superseded": [str(r["id"]) for r in superseded],
        "flagged": {str(r["id"]): json.loads(r["others"]) for r in flagged},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--since")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
