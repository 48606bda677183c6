"""Search latency for one user with 10k and 100k memories, among 100 other users' memories.

    python bench/scale_search.py --json scale.json

Synthetic but shaped like conversation memories: 300 topics, each a direction in 384-d space
with its own words; a memory is a topic's direction plus noise, and 6-14 words drawn mostly
from its topic and partly from a shared Zipf vocabulary. Queries are noisy topic directions
with 2-4 topic words. Rows are bulk-loaded with COPY and the indexes built afterwards (as a
restore would); the migrations' own indexes are used, nothing else.

Timed per query (embedding precomputed): the companion's engine (k=10) on its default path (the
in-process index for users up to `RetrievalTuning.local_index_max_rows` memories, warmed first
as a session start does; SQL above that) and on SQL alone, and beside them the naive filtered
pgvector query (`WHERE user_id = $1 ORDER BY embedding <=> $2 LIMIT 10`), whose short results
are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    embedded_postgres,
    fmt_ms,
    machine_info,
    machine_line,
    percentiles,
    save_report,
)

DIM = 384
TOPICS = 300
VOCAB = 6_000
K = 10
NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


class Synth:
    """Deterministic generator of topic-shaped memories and queries."""

    def __init__(self, seed: int = 11) -> None:
        self.rng = np.random.default_rng(seed)
        centers = self.rng.normal(size=(TOPICS, DIM)).astype(np.float32)
        self.centers = centers / np.linalg.norm(centers, axis=1, keepdims=True)
        syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "da", "fe", "go"]
        words: set[str] = set()
        while len(words) < VOCAB:
            n = int(self.rng.integers(2, 5))
            words.add("".join(self.rng.choice(syllables, size=n)))
        self.vocab = sorted(words)
        ranks = np.arange(1, VOCAB + 1)
        self.zipf = (1.0 / ranks) / (1.0 / ranks).sum()
        self.topic_words = [self.rng.choice(VOCAB, size=25, replace=False) for _ in range(TOPICS)]

    def vector(self, topic: int, noise: float) -> np.ndarray:
        v = self.centers[topic] + self.rng.normal(scale=noise / np.sqrt(DIM), size=DIM)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def text(self, topic: int, n_words: int, topic_share: float) -> str:
        general = self.rng.choice(VOCAB, size=n_words, p=self.zipf)
        own = self.rng.choice(self.topic_words[topic], size=n_words)
        pick = self.rng.random(n_words) < topic_share
        return " ".join(self.vocab[int(w)] for w in np.where(pick, own, general))

    def memories(self, n: int) -> list[tuple[str, np.ndarray, datetime]]:
        topics = self.rng.integers(TOPICS, size=n)
        vectors = self.centers[topics] + self.rng.normal(scale=0.9 / np.sqrt(DIM), size=(n, DIM))
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        lengths = self.rng.integers(6, 15, size=n)
        general = self.rng.choice(VOCAB, size=int(lengths.sum()), p=self.zipf)
        pick = self.rng.random(int(lengths.sum())) < 0.5
        out, at = [], 0
        for i in range(n):
            own = self.topic_words[int(topics[i])]
            words = []
            for j in range(at, at + int(lengths[i])):
                index = int(own[j % len(own)]) if pick[j] else int(general[j])
                words.append(self.vocab[index])
            at += int(lengths[i])
            out.append((" ".join(words), vectors[i], NOW - timedelta(minutes=3 * (n - i))))
        return out

    def query(self) -> tuple[str, np.ndarray]:
        topic = int(self.rng.integers(TOPICS))
        return self.text(topic, int(self.rng.integers(2, 5)), 0.8), self.vector(topic, 1.0)


async def load_rows(pool: Any, user_id: uuid.UUID, rows: list[tuple[str, np.ndarray, datetime]]):
    from infrastructure.vector_codec import encode_vector

    await pool.execute("insert into public.users (id) values ($1) on conflict do nothing", user_id)
    for start in range(0, len(rows), 5_000):
        chunk = rows[start : start + 5_000]
        await pool.execute(
            "insert into public.memories (id, user_id, kind, speaker, content, content_hash, "
            "importance, occurred_at, embedding) "
            "select id, $1, 'episodic', 'user', content, id::text, 0.3, at, vec::vector "
            "from unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::text[]) "
            "as t(id, content, at, vec)",
            user_id,
            [uuid.uuid4() for _ in chunk],
            [text for text, _, _ in chunk],
            [at for _, _, at in chunk],
            [encode_vector(vec) for _, vec, _ in chunk],
        )


_INDEX_SQL = (
    "create index memories_embedding_hnsw on public.memories "
    "using hnsw (embedding vector_cosine_ops)"
)


async def build_indexes(pool: Any) -> float:
    started = time.perf_counter()
    async with pool.acquire() as conn:
        await conn.execute("set maintenance_work_mem = '1GB'")
        await conn.execute(_INDEX_SQL)
        await conn.execute("vacuum analyze public.memories")
    return time.perf_counter() - started


async def measure(pool, engine, target: uuid.UUID, queries, label: str) -> dict[str, Any]:
    """The engine on its default path (in-process index when the user fits) and the naive
    query, alternating per query."""
    naive_sql = (
        "select id from public.memories where user_id = $1 "
        "order by embedding <=> $2 limit $3"
    )
    await engine.refresh_term_stats(target)  # also drops the target's cached scope sizes
    started = time.perf_counter()
    in_process = await engine.warm(target)  # what a session start does
    warm_ms = (time.perf_counter() - started) * 1000
    for text, vec in queries[:10]:  # warm-up: prepared statements, caches, scope count
        await engine.search(target, None, text, k=K, query_embedding=vec, now=NOW)
        await pool.fetch(naive_sql, target, vec, K)
    before = engine.stats()
    engine_ms, naive_ms, short, engine_short = [], [], 0, 0
    for text, vec in queries:
        started = time.perf_counter()
        results = await engine.search(target, None, text, k=K, query_embedding=vec, now=NOW)
        engine_ms.append((time.perf_counter() - started) * 1000)
        engine_short += len(results) < K
        started = time.perf_counter()
        rows = await pool.fetch(naive_sql, target, vec, K)
        naive_ms.append((time.perf_counter() - started) * 1000)
        short += len(rows) < K
    after = engine.stats()
    plans = {key: after[key] - before[key]
             for key in ("local_searches", "exact_plans", "ann_plans", "ann_short_fallbacks")}
    print(f"{label}: companion p50 {np.percentile(engine_ms, 50):.2f} ms, "
          f"p95 {np.percentile(engine_ms, 95):.2f} ms {plans}; naive pgvector p50 "
          f"{np.percentile(naive_ms, 50):.2f} ms, short {short}/{len(queries)}")
    return {
        "companion": {"search_ms": percentiles(engine_ms), "short_results": engine_short,
                      "plans": plans, "in_process": in_process, "warm_ms": round(warm_ms, 1),
                      "index": after["local_index"]},
        "naive_pgvector": {"search_ms": percentiles(naive_ms), "short_results": short},
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from core.config import Settings
    from infrastructure import migrations
    from infrastructure.connection_pool import ConnectionPool
    from rag_system.engine import RetrievalEngine
    from rag_system.tuning import RetrievalTuning

    synth = Synth()
    report: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "sizes": {}}
    with embedded_postgres() as dsn:
        # Index builds over 150k rows take longer than the default statement timeout.
        settings = Settings(_env_file=None, redis_enabled=False, db_command_timeout_s=3_600)
        await migrations.migrate(dsn, settings)
        pool = await ConnectionPool.create(settings, dsn=dsn)
        base = RetrievalTuning(exact_scan_max_rows=args.exact_max or 3_000)
        engines = {
            "default": RetrievalEngine(
                pool=pool, embedder=None, settings=settings, tuning=base  # type: ignore[arg-type]
            ),
            "sql": RetrievalEngine(
                pool=pool, embedder=None, settings=settings,  # type: ignore[arg-type]
                tuning=replace(base, local_index_max_rows=0),
            ),
        }
        try:
            report["machine"] = await machine_info(pool)
            await pool.execute("drop index public.memories_embedding_hnsw")
            started = time.perf_counter()
            for _ in range(args.others):
                await load_rows(pool, uuid.uuid4(), synth.memories(args.per_other))
            target = uuid.uuid4()
            loaded = 0
            queries = [synth.query() for _ in range(args.queries)]
            for size in sorted(args.sizes):
                await load_rows(pool, target, synth.memories(size - loaded))
                loaded = size
                load_s = time.perf_counter() - started
                await pool.execute("drop index if exists public.memories_embedding_hnsw")
                index_s = await build_indexes(pool)
                total = await pool.fetchval("select count(*) from public.memories")
                print(f"{size} rows for the user, {total} in the table "
                      f"(load {load_s:.0f} s, HNSW build {index_s:.0f} s)")
                for path, engine in engines.items():
                    result = await measure(
                        pool, engine, target, queries, f"{size:>7} memories, {path}"
                    )
                    result["table_rows"] = int(total)
                    result["hnsw_build_s"] = round(index_s, 1)
                    report["sizes"].setdefault(str(size), {})[path] = result
                    if not result["companion"]["in_process"]:
                        break  # the default path was SQL already: nothing to compare
                started = time.perf_counter()
        finally:
            for engine in engines.values():
                await engine.aclose()
            await pool.aclose()
    report["setup"] = {
        "other_users": args.others, "memories_per_other_user": args.per_other,
        "queries": args.queries, "k": K, "topics": TOPICS,
    }
    return report


def markdown(report: dict[str, Any]) -> str:
    """This benchmark's section of bench/RESULTS.md."""
    setup = report["setup"]
    lines = [
        "## Search latency at scale (bench/scale_search.py)",
        "",
        f"Command: `{report['command']}`",
        "",
        machine_line(report["machine"]) + f" One user's memories among {setup['other_users']} "
        f"other users' ({setup['memories_per_other_user']} each), synthetic topic-shaped text "
        f"and vectors, {setup['queries']} queries per size, k={setup['k']}, query embedding "
        "precomputed. Companion default = the engine as shipped: the user's in-process index "
        "when they have up to 20,000 memories (loaded first by `RetrievalEngine.warm`, as a "
        "session start does; load time in the last column), SQL above that; companion SQL = "
        "the same engine with the in-process index off. Naive pgvector = `WHERE user_id = $1 "
        "ORDER BY embedding <=> $2 LIMIT k` (HNSW, default ef_search 40).",
        "",
        "| user's memories | rows in table | engine | p50 / p95 / p99 ms | searches by path "
        "| short | naive pgvector p50 / p95 / p99 ms | naive short | index load ms |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for size, paths in report["sizes"].items():
        for path, r in paths.items():
            c, n = r["companion"], r["naive_pgvector"]
            plans = ", ".join(
                f"{'in-process' if k == 'local_searches' else k} {v}"
                for k, v in c["plans"].items() if v
            )
            warm = f"{c['warm_ms']:.0f}" if c["in_process"] else "-"
            lines.append(
                f"| {int(size):,} | {r['table_rows']:,} | companion {path} "
                f"| {fmt_ms(c['search_ms'])} | {plans} | {c['short_results']} "
                f"| {fmt_ms(n['search_ms'])} | {n['short_results']} | {warm} |"
            )
    largest = report["sizes"].get("100000", {}).get("default")
    if largest is not None:
        p95 = largest["companion"]["search_ms"]["p95"]
        verdict = "met" if p95 <= 15.0 else "NOT met"
        lines += ["", f"Target p95 <= 15 ms at 100,000 memories for one user: **{verdict}** "
                  f"({p95:.2f} ms). The naive query is faster but comes back short when the user "
                  "is a small share of the table (the filter runs after the index)."]
    before = report.get("before")
    if before is not None:
        # The previous engine's report has one result per size (SQL only).
        figures = "; ".join(
            f"{int(size):,}: {fmt_ms(r['companion']['search_ms'])} ms"
            for size, r in before["sizes"].items()
        )
        lines += ["", f"Before (same machine, the engine of commit f6f31f4, SQL only; "
                  f"`{before['command']}`, {before['machine']['date']}, load average "
                  f"{before['machine']['load_average_1m_5m_15m'][0]}): companion p50 / p95 / p99 "
                  f"by size {figures}."]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--others", type=int, default=100, help="other users in the table")
    parser.add_argument("--per-other", type=int, default=500, help="memories per other user")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--exact-max", type=int, default=None,
                        help="override RetrievalTuning.exact_scan_max_rows (default: engine's)")
    parser.add_argument("--json", help="write the report to this file")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument("--before", help="a --json report of the previous engine, to compare")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    out = asyncio.run(main(arguments))
    if arguments.before:
        out["before"] = json.loads(Path(arguments.before).read_text())
    save_report("scale_search", out, markdown, arguments)
