"""Retrieval on LoCoMo-format conversations: the companion's engine beside its baselines.

    python bench/locomo_retrieval.py --data /work/shared/data/locomo-dev --json out.json

Each conversation becomes one user's episodic memories (every turn, as "Speaker: text", with a
shared photo's caption, at its session's date); the annotation fields (events_session_N,
session_N_observation, session_N_summary) and the image search query are never read. Every
question of categories 1-4 is asked, and recall@k counts how many of its evidence turns are in
the top k. All systems get the same turns and the same embeddings (the bundled
all-MiniLM-L6-v2):

  companion    rag_system.RetrievalEngine (the project's retrieval)
  pgvector     plain cosine top-k: WHERE user_id ORDER BY embedding <=> q LIMIT k (HNSW)
  pg_fulltext  Postgres full-text: OR-ed stemmed words, ranked by ts_rank
  rrf          naive reciprocal-rank fusion (k=60) of the two above
  mem0         mem0ai (infer=False) with the same model, its default local store (Qdrant)

Latency is measured per query with the query embedding precomputed ("search_ms") and with it
("with_embedding_ms"); the query embedding itself is timed once per question.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import embedded_postgres, machine_info, percentiles, save_report  # noqa: E402
from bench.locomo_data import load_dataset  # noqa: E402
from bench.locomo_mem0 import run_mem0  # noqa: E402
from bench.locomo_report import markdown, print_table  # noqa: E402
from bench.locomo_scoring import KS, Corpus, SystemRun  # noqa: E402

RRF_K = 60
WARMUP_QUERIES = 10
_WORD = re.compile(r"[^\W_]+")


# --- the systems -------------------------------------------------------------------------------


async def ingest_companion(conversations, memory, engine, pool) -> dict[str, Any]:
    from core.memory_records import Episode

    started = time.perf_counter()
    stored = 0
    for conv in conversations:
        episodes = [
            Episode(
                speaker="user",
                text=t.text,
                occurred_at=t.at,
                source={"session_id": f"{conv.name}:{t.session}", "dia_id": t.dia_id},
            )
            for t in conv.turns
        ]
        stored += await memory.import_episodes(conv.user_id, None, episodes)
    seconds = time.perf_counter() - started
    # What autovacuum and the engine's background rebuild would do soon after an import.
    await pool.execute("analyze public.memories")
    for conv in conversations:
        await engine.refresh_term_stats(conv.user_id)
    return {
        "turns": sum(len(c.turns) for c in conversations),
        "stored": stored,
        "seconds": round(seconds, 2),
        "turns_per_s": round(sum(len(c.turns) for c in conversations) / seconds, 1),
        "includes": "embedding (local MiniLM) + insert",
    }


def _or_query(text: str) -> str:
    return " | ".join(_WORD.findall(text.lower()))


async def run_sql_baselines(conversations, pool, corpus, vectors, embed_ms, runs) -> None:
    pgv, fts, rrf = runs["pgvector"], runs["pg_fulltext"], runs["rrf"]
    vector_sql = (
        "select content from public.memories where user_id = $1 "
        "order by embedding <=> $2 limit $3"
    )
    text_sql = (
        "select content from public.memories "
        "where user_id = $1 and tsv @@ to_tsquery('english', $2) "
        "order by ts_rank(tsv, to_tsquery('english', $2)) desc limit $3"
    )
    depth = max(KS)
    for conv in conversations:
        for i, q in enumerate(conv.questions):
            vec = vectors[(conv.name, i)]
            orq = _or_query(q.text)
            t0 = time.perf_counter()
            v_rows = await pool.fetch(vector_sql, conv.user_id, vec, RRF_K)
            t1 = time.perf_counter()
            f_rows = await pool.fetch(text_sql, conv.user_id, orq, RRF_K) if orq else []
            t2 = time.perf_counter()
            v_ids = [r["content"] for r in v_rows]
            f_ids = [r["content"] for r in f_rows]
            fused: dict[str, float] = defaultdict(float)
            for ranked in (v_ids, f_ids):
                for rank, content in enumerate(ranked):
                    fused[content] += 1.0 / (RRF_K + rank + 1)
            rrf_ids = sorted(fused, key=lambda c: -fused[c])[:depth]
            t3 = time.perf_counter()
            # Each baseline's own query, asked for its own depth, is what is timed.
            for run, ids, ms, needs_vector in (
                (pgv, v_ids[:depth], (t1 - t0) * 1000, True),
                (fts, f_ids[:depth], (t2 - t1) * 1000, False),
                (rrf, rrf_ids, (t3 - t0) * 1000, True),
            ):
                run.record(q, [corpus.ids_for(conv.user_id, c) for c in ids])
                run.search_ms.append(ms)
                run.with_embedding_ms.append(ms + (embed_ms[(conv.name, i)] if needs_vector else 0))


async def run_companion(conversations, engine, corpus, vectors, embed_ms, run) -> None:
    warm_ms: list[float] = []
    for conv in conversations:
        # What a session start does (RetrievalEngine.warm): load the user's in-process index.
        started = time.perf_counter()
        run.extra.setdefault("in_process", []).append(await engine.warm(conv.user_id))
        warm_ms.append((time.perf_counter() - started) * 1000)
        for i, q in enumerate(conv.questions):
            started = time.perf_counter()
            results = await engine.search(
                conv.user_id, None, q.text, k=max(KS), now=conv.end,
                query_embedding=vectors[(conv.name, i)],
            )
            ms = (time.perf_counter() - started) * 1000
            run.record(q, [corpus.ids_for(conv.user_id, r.memory.content) for r in results])
            run.search_ms.append(ms)
            run.with_embedding_ms.append(ms + embed_ms[(conv.name, i)])
    run.extra["warm_ms"] = percentiles(warm_ms)
    run.extra["engine"] = engine.stats()


# --- main --------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from core.config import Settings
    from infrastructure import migrations
    from infrastructure.connection_pool import ConnectionPool
    from infrastructure.database_batcher import DatabaseBatcher
    from infrastructure.local_embedder import LocalEmbedder
    from infrastructure.redis_cache import RedisCache
    from rag_system.engine import RetrievalEngine
    from services.memory.memory_service import MemoryService

    conversations = load_dataset(Path(args.data))
    questions = sum(len(c.questions) for c in conversations)
    print(f"{len(conversations)} conversations, "
          f"{sum(len(c.turns) for c in conversations)} turns, {questions} questions (cat 1-4)")
    systems = ["companion", "pgvector", "pg_fulltext", "rrf"] + ([] if args.no_mem0 else ["mem0"])
    runs = {name: SystemRun(name) for name in systems}
    workdir = Path(tempfile.mkdtemp(prefix="locomo-bench-"))
    with embedded_postgres() as dsn:
        settings = Settings(
            _env_file=None, redis_enabled=False, embedded_pg_dir=workdir / "unused",
            batch_spool_dir=workdir / "spool",
        )
        await migrations.migrate(dsn, settings)
        pool = await ConnectionPool.create(settings, dsn=dsn)
        cache = await RedisCache.create(settings)
        batcher = DatabaseBatcher(pool=pool, settings=settings)
        embedder = await asyncio.to_thread(LocalEmbedder.load)
        memory = MemoryService(
            pool=pool, cache=cache, batcher=batcher, embedder=embedder, settings=settings
        )
        engine = RetrievalEngine(pool=pool, embedder=embedder, settings=settings)
        corpus = Corpus(conversations)
        try:
            machine = await machine_info(pool)
            print("ingesting (embedding every turn)...")
            runs["companion"].ingest = await ingest_companion(conversations, memory, engine, pool)
            # Query embeddings, one question at a time as a live turn would be.
            vectors: dict[tuple[str, int], np.ndarray] = {}
            embed_ms: dict[tuple[str, int], float] = {}
            for conv in conversations:
                for i, q in enumerate(conv.questions):
                    started = time.perf_counter()
                    vectors[(conv.name, i)] = await embedder.embed(q.text)
                    embed_ms[(conv.name, i)] = (time.perf_counter() - started) * 1000
            # Warm caches and prepared statements the same way for every system.
            warm = [c for c in conversations[:1]]
            for conv in warm:
                for i, q in enumerate(conv.questions[:WARMUP_QUERIES]):
                    await engine.search(conv.user_id, None, q.text, k=max(KS),
                                        query_embedding=vectors[(conv.name, i)], now=conv.end)
            scratch = {n: SystemRun(n) for n in ("pgvector", "pg_fulltext", "rrf")}
            await run_sql_baselines(warm, pool, corpus, vectors, embed_ms, scratch)
            print("searching: companion, pgvector, pg_fulltext, rrf...")
            await run_companion(conversations, engine, corpus, vectors, embed_ms,
                                runs["companion"])
            await run_sql_baselines(conversations, pool, corpus, vectors, embed_ms, runs)
            for name in ("pgvector", "pg_fulltext", "rrf"):
                runs[name].ingest = {"shared_with": "companion (same rows)"}
        finally:
            await engine.aclose()
            await memory.aclose()
            await batcher.aclose()
            await embedder.aclose()
            await cache.aclose()
            await pool.aclose()
    if "mem0" in runs:
        print("mem0: ingesting and searching (its own store and embedding calls)...")
        await asyncio.to_thread(run_mem0, conversations, corpus, runs["mem0"], workdir)
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine,
        "dataset": {
            "path": str(Path(args.data).resolve()),
            "conversations": len(conversations),
            "turns": sum(len(c.turns) for c in conversations),
            "questions": questions,
        },
        "query_embedding_ms": percentiles(list(embed_ms.values())),
        "systems": {name: run.summary() for name, run in runs.items()},
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder of LoCoMo-format .json files")
    parser.add_argument("--json", help="write the full report to this file")
    parser.add_argument("--no-mem0", action="store_true", help="skip the mem0 peer")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument("--before", help="a --json report of the previous engine, to compare")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    arguments = parse_args()
    report = asyncio.run(main(arguments))
    if arguments.before:
        report["before"] = json.loads(Path(arguments.before).read_text())
    print_table(report)
    save_report("locomo_retrieval", report, markdown, arguments)
