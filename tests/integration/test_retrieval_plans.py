"""The SQL path's query plans: a user among many always gets k results, and the plans
Postgres caches for the engine's statements never filter an HNSW scan, never scan the table
for changes, and keep the ANN settings inside the transaction (a pooler's connection is shared).

Real Postgres+pgvector; embeddings from the loopback OpenAI stub (hashed bags of words).
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest

from infrastructure.connection_pool import ConnectionPool
from rag_system.candidates import SqlParams, VectorPlan, build_sql
from rag_system.engine import RetrievalEngine
from rag_system.query import prepare
from rag_system.tuning import RetrievalTuning
from tests.support.retrieval import NOW, WORDS, RetrievalStack, crowd, engine_for

pytestmark = pytest.mark.integration


# --- never short, and the plans behind it -----------------------------------------------------


async def test_a_user_among_many_gets_exactly_k_results_on_both_vector_plans(
    stack: RetrievalStack,
) -> None:
    target = uuid.uuid4()
    await crowd(stack, target, mine=120, others=25, each=60)
    k = 25
    queries = [" ".join(random.Random(q).sample(WORDS, 3)) for q in range(12)]
    # ANN first over a small ef: the global nearest rows are mostly other users', so the
    # filtered result is short and the engine must notice and scan the user's rows instead.
    ann = engine_for(
        stack,
        RetrievalTuning(exact_scan_max_rows=10, ef_headroom=0.05),
        rag_min_similarity=-1.0,
    )
    exact = engine_for(stack, rag_min_similarity=-1.0)
    for query in queries:
        for engine in (ann, exact):
            results = await engine.search(target, None, query, k=k, now=NOW)
            assert len(results) == k
            assert {r.memory.user_id for r in results} == {target}
    assert ann.stats()["ann_short_fallbacks"] > 0
    assert exact.stats()["exact_plans"] == len(queries) and exact.stats()["ann_plans"] == 0


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        items = ",".join(f'"{v}"' if isinstance(v, str) else repr(float(v)) for v in value)
        return "'{" + items + "}'"
    return "'" + str(value).replace("'", "''") + "'"


async def _explain_cached(conn, name: str, values: list[Any]) -> dict[str, Any]:
    # EXECUTE of asyncpg's own prepared statement: the plan its executions have been using.
    args = ", ".join(_literal(v) for v in values)
    raw = await conn.fetchval(f'explain (format json) execute "{name}"({args})')
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]


def _nodes(plan: dict[str, Any]):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.mark.parametrize("plan", [VectorPlan.EXACT, VectorPlan.ANN])
async def test_after_many_executions_the_cached_plan_never_filters_an_hnsw_scan(
    stack: RetrievalStack, db_dsn: str, make_settings, plan: VectorPlan
) -> None:
    target = uuid.uuid4()
    await crowd(stack, target, mine=80, others=20, each=40)
    # Push the planner hard towards an ordered index scan (what a naive `where user_id = $1
    # order by embedding <=> $2 limit k` becomes): the HNSW index must still never be filtered.
    database = db_dsn.rsplit("/", 1)[1]
    for setting in ("enable_seqscan", "enable_sort", "enable_bitmapscan"):
        await stack.pool.execute(f"alter database {database} set {setting} = off")
    settings = make_settings(db_pool_min_size=1, db_pool_max_size=1, rag_min_similarity=-1.0)
    one_connection = await ConnectionPool.create(settings, dsn=db_dsn)
    try:
        tuning = RetrievalTuning(
            exact_scan_max_rows=10 if plan is VectorPlan.ANN else 20_000, local_index_max_rows=0
        )
        engine = RetrievalEngine(
            pool=one_connection, embedder=stack.embedder, settings=settings, tuning=tuning
        )
        query = "violin lantern harbor"
        for _ in range(8):
            assert len(await engine.search(target, None, query, k=10, now=NOW)) == 10
        assert engine.stats()[f"{plan.value}_plans"] == 8
        # The parameter values the engine sent (the ANN plan's ef is inlined, not a parameter).
        params = SqlParams()
        build_sql(
            plan=plan, has_vector=True, has_keywords=True, has_window=False,
            limits=tuning.limits, params=params, user_id=target, companion_id=None,
            include_assistant=False, query_vector=await stack.embedder.embed(query),
            query=prepare(query, now=NOW), k=10,
        )
        ann_marker = "from public.memories m order by m.embedding <=>"
        async with one_connection.acquire() as conn:
            # The pool's reset on release put the session back to the default.
            assert await conn.fetchval("show plan_cache_mode") == "auto"
            cached = await conn.fetchrow(
                "select name, generic_plans, custom_plans from pg_prepared_statements "
                "where statement like 'with vec as materialized%' "
                "and (strpos(statement, $1) > 0) = $2",
                ann_marker, plan is VectorPlan.ANN,
            )
            assert cached is not None and cached["generic_plans"] >= 8
            assert cached["custom_plans"] == 0
            await conn.execute("set plan_cache_mode = force_generic_plan")
            root = await _explain_cached(conn, cached["name"], params.values)
        await engine.aclose()
    finally:
        await one_connection.aclose()
    hnsw = [n for n in _nodes(root) if n.get("Index Name") == "memories_embedding_hnsw"]
    if plan is VectorPlan.EXACT:
        assert hnsw == []
    else:
        # The index is asked for the global nearest rows: nothing is filtered inside it.
        assert hnsw and all("Filter" not in n and "Index Cond" not in n for n in hnsw)


async def test_behind_a_transaction_pooler_the_ann_settings_stay_inside_the_transaction(
    stack: RetrievalStack, db_dsn: str, make_settings, postgres
) -> None:
    target = uuid.uuid4()
    await crowd(stack, target, mine=60, others=5, each=40)
    database = db_dsn.rsplit("/", 1)[1]
    # The server log shows what was sent: a pooler hands the server connection to another
    # client after each transaction, so a session-level SET there would leak to them.
    await stack.pool.execute(f"alter database {database} set log_statement = 'all'")
    settings = make_settings(
        db_pool_min_size=1, db_pool_max_size=1, db_statement_cache_size=0,
        rag_min_similarity=-1.0,
    )
    pooled = await ConnectionPool.create(settings, dsn=db_dsn)
    try:
        engine = RetrievalEngine(
            pool=pooled, embedder=stack.embedder, settings=settings,
            tuning=RetrievalTuning(exact_scan_max_rows=10, local_index_max_rows=0),
        )
        marker = f"pooler-check-{uuid.uuid4()}"
        await pooled.execute(f"select '{marker}'")
        results = await engine.search(target, None, "violin lantern", k=12, now=NOW)
        await engine.aclose()
    finally:
        await pooled.aclose()
    log = (postgres.root / "log").read_text()
    sent = log[log.index(marker):]
    assert len(results) == 12 and engine.stats()["ann_plans"] == 1
    assert "set local hnsw.ef_search" in sent and "set local enable_seqscan = off" in sent
    assert "set plan_cache_mode" not in sent and "set enable_seqscan" not in sent


async def test_the_change_query_settles_on_a_generic_plan_that_reads_the_revision_index(
    stack: RetrievalStack, db_dsn: str, make_settings
) -> None:
    # One user holding most of the table (a laptop, a benchmark): the generic plan must still
    # read the revision index rather than scan the table on every search.
    target = uuid.uuid4()
    await crowd(stack, target, mine=80, others=1, each=20)
    await stack.pool.execute(
        "insert into public.memories "
        "(user_id, kind, content, content_hash, occurred_at, embedding) "
        "select $1, 'episodic', 'older turn ' || g, md5('older turn ' || g), "
        "now() - g * interval '1 minute', array_fill(0.05, array[384])::vector "
        "from generate_series(1, 8000) g",
        target,
    )
    await stack.pool.execute("analyze public.memories")
    settings = make_settings(db_pool_min_size=1, db_pool_max_size=1)
    one_connection = await ConnectionPool.create(settings, dsn=db_dsn)
    try:
        engine = RetrievalEngine(
            pool=one_connection, embedder=stack.embedder, settings=settings,
            tuning=RetrievalTuning(local_index_cold="inline"),
        )
        for q in range(12):
            await engine.search(target, None, f"violin lantern {WORDS[q]}", k=5, now=NOW)
        await engine.aclose()
        assert engine.stats()["local_searches"] == 12
        async with one_connection.acquire() as conn:
            cached = await conn.fetchrow(
                "select name, generic_plans, custom_plans from pg_prepared_statements "
                "where statement like 'select 0 as part%'"
            )
            # Postgres tries five custom plans, then keeps the generic one for good.
            assert cached is not None and cached["custom_plans"] <= 5
            assert cached["generic_plans"] >= 7
            root = await _explain_cached(conn, cached["name"], [target, 0, ["violin"]])
    finally:
        await one_connection.aclose()
    scans = [n for n in _nodes(root) if n.get("Relation Name") == "memories"]
    # Read in revision order from the (user_id, rev) index, so it stops at the first rows past
    # the horizon: never a scan of the table, nor of all the user's index entries.
    assert scans and all(
        n["Node Type"] == "Index Scan" and n.get("Index Name") == "memories_user_rev"
        for n in scans
    ), scans
