"""RetrievalEngine: the best few memories of one user (and companion) for a query."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import Settings
from core.errors import CompanionError, InvalidInput
from core.latency import LatencyWindow
from infrastructure.connection_pool import ConnectionPool
from rag_system.candidates import (
    CandidateLimits,
    CandidateSet,
    VectorPlan,
    count_scope,
    fetch_candidates,
    vector_matrix,
)
from rag_system import term_stats
from rag_system.mmr import mmr_order
from rag_system.query import PreparedQuery, prepare
from rag_system.scoring import ScoredMemory, ScoringWeights, score_candidates

if TYPE_CHECKING:
    from infrastructure.embeddings import Embedder

logger = logging.getLogger(__name__)

MAX_K = 100


@dataclass(frozen=True)
class RetrievalTuning:
    """Knobs of the engine that are not operator settings.

    Attributes:
        exact_scan_max_rows: scopes up to this many rows use the exact vector plan; larger
            ones ask the HNSW index first (and still fall back to exact if it comes back short).
        max_ef: the largest ef_search the ANN plan may use; a scope too small a share of the
            table to be found within it is scanned exactly instead.
        ef_headroom: ef is sized to hold this many times the rows needed, at the scope's
            share of the table.
        scope_count_ttl_s: how long a scope's row count is trusted (it only picks the plan and
            sizes ef, so a stale value is harmless).
        mmr_lambda: relevance share in MMR (1.0 disables diversity).
        mmr_pool: MMR chooses among this many times k of the best-scored rows.
        term_stats_check_s: how often (per user, per process) the word statistics behind the
            keyword weights are checked for staleness.
        term_stats_max_age_s: statistics older than this are rebuilt (in the background).
        term_stats_growth: rebuilt sooner when the scope grew past this factor of the count
            they were built over.
    """

    exact_scan_max_rows: int = 3_000
    max_ef: int = 800
    ef_headroom: float = 2.0
    scope_count_ttl_s: float = 60.0
    term_stats_check_s: float = 60.0
    term_stats_max_age_s: float = 3_600.0
    term_stats_growth: float = 1.2
    mmr_lambda: float = 0.85
    mmr_pool: int = 3
    limits: CandidateLimits = field(default_factory=CandidateLimits)
    weights: ScoringWeights = field(default_factory=ScoringWeights)


class RetrievalEngine:
    """Hybrid retrieval over `memories`: pgvector + Postgres full-text, fused and diversified.

    Every query is scoped in SQL to the user, and to the companion plus the user-level shared
    memories; the companion's own replies are left out unless `include_assistant`.

    Args:
        pool: the shared database pool.
        embedder: embeds the query (skipped when the caller passes `query_embedding`).
        settings: the relevance floor (`rag_min_similarity`, `rag_min_coverage`).
        tuning: engine internals; the defaults are general-purpose.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        embedder: Embedder,
        settings: Settings,
        tuning: RetrievalTuning | None = None,
    ) -> None:
        self._pool = pool
        self._embedder = embedder
        self._settings = settings
        self.tuning = tuning or RetrievalTuning()
        self._counts: OrderedDict[
            tuple[uuid.UUID, uuid.UUID | None, bool], tuple[int, int, float]
        ] = OrderedDict()
        self._terms_checked: OrderedDict[uuid.UUID, float] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._search_ms = LatencyWindow()
        self._embed_ms = LatencyWindow()
        self._counters = {
            "searches": 0,
            "keyword_only": 0,
            "embedding_failures": 0,
            "exact_plans": 0,
            "ann_plans": 0,
            "ann_short_fallbacks": 0,
            "empty_results": 0,
            "term_stats_refreshes": 0,
            "term_stats_failures": 0,
        }

    async def search(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        query: str,
        *,
        k: int = 10,
        recent_turns: Sequence[str] = (),
        now: datetime | None = None,
        query_embedding: np.ndarray | None = None,
        include_assistant: bool = False,
    ) -> list[ScoredMemory]:
        """The best `k` memories for `query`, best first, each with its scores and reason.

        Args:
            user_id: whose memories to search; nothing of anyone else is ever read.
            companion_id: this companion's memories plus the user-level shared ones; None
                searches only the shared ones.
            query: the user's turn or any search text.
            k: how many to return at most (fewer when fewer pass the relevance floor).
            recent_turns: the last few turns, oldest first (conversation-aware query).
            now: reference time for recency and relative hints like "last week".
            query_embedding: a precomputed embedding of `query` (skips the embedder).
            include_assistant: also return the companion's own replies.
        """
        if not 0 < k <= MAX_K:
            raise InvalidInput(f"k must be between 1 and {MAX_K}", suggestion="ask for 5-20")
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        prepared = prepare(query, recent_turns=recent_turns, now=now)
        vector = query_embedding
        if vector is None and prepared.text.strip():
            vector = await self._embed(prepared)
        started = time.perf_counter()
        if vector is None:
            self._counters["keyword_only"] += 1
        if vector is None and not prepared.words and prepared.window is None:
            self._counters["searches"] += 1
            self._counters["empty_results"] += 1
            return []
        results = await self._search(
            user_id, companion_id, prepared, vector, k=k, now=now,
            include_assistant=include_assistant,
        )
        self._search_ms.add((time.perf_counter() - started) * 1000)
        self._counters["searches"] += 1
        if not results:
            self._counters["empty_results"] += 1
        return results

    async def _embed(self, prepared: PreparedQuery) -> np.ndarray | None:
        started = time.perf_counter()
        try:
            vector = await self._embedder.embed(prepared.embed_text)
        except CompanionError as exc:
            # Keyword search still works; the caller gets results instead of an error.
            self._counters["embedding_failures"] += 1
            logger.warning("query embedding failed, keyword search only (%s)", type(exc).__name__)
            return None
        self._embed_ms.add((time.perf_counter() - started) * 1000)
        return np.asarray(vector, dtype=np.float32)

    async def _search(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        prepared: PreparedQuery,
        vector: np.ndarray | None,
        *,
        k: int,
        now: datetime,
        include_assistant: bool,
    ) -> list[ScoredMemory]:
        tuning = self.tuning
        async with self._pool.acquire() as conn:
            # Only picks the vector plan (and when to rebuild word statistics): a stale count
            # never hides rows.
            rows, table_rows = await self._scope_rows(conn, user_id, companion_id,
                                                      include_assistant)
            limits = self._limits_for(rows, table_rows, k)
            plan = VectorPlan.EXACT if limits is None else VectorPlan.ANN
            limits = limits or tuning.limits
            # asyncpg prepares every statement; with the default plan cache mode this one would
            # be re-planned on each call (it is many small queries in one). Its generic plan is
            # safe by construction (no vector plan can become a filtered HNSW scan, see
            # candidates.py), so use it from the first call. The ANN plan also needs ef_search
            # to cover its LIMIT, and the index rather than a sort of the whole table.
            settings = ["plan_cache_mode = force_generic_plan"]
            if plan is VectorPlan.ANN and vector is not None:
                settings += [f"hnsw.ef_search = {int(limits.ann_ef)}", "enable_seqscan = off"]
            fetch = partial(
                self._fetch, conn, user_id, companion_id, include_assistant, prepared, vector
            )
            if self._pool.statement_cache_size > 0:
                # One round trip; the pool's RESET ALL on release restores the defaults for
                # the next user of the connection.
                await conn.execute("; ".join(f"set {x}" for x in settings))
                found = await fetch(plan, k, limits)
            elif len(settings) > 1:
                # Behind a transaction pooler (Supabase 6543, pgbouncer) a session setting would
                # leak to other clients: scope it to one transaction. Nothing is prepared there,
                # so only the ANN settings matter.
                async with conn.transaction():
                    await conn.execute("; ".join(f"set local {x}" for x in settings[1:]))
                    found = await fetch(plan, k, limits)
            else:
                found = await fetch(plan, k, limits)
            wanted = min(max(limits.vector, k), rows)
            if vector is not None and plan is VectorPlan.ANN and found.vector_found < wanted:
                # Too few of the index's nearest rows were this user's: scan the user's rows.
                self._counters["ann_short_fallbacks"] += 1
                found = await fetch(VectorPlan.EXACT, k, tuning.limits)
        self._counters["exact_plans" if found.plan is VectorPlan.EXACT else "ann_plans"] += 1
        self._maybe_refresh_terms(user_id, rows)
        scored = score_candidates(
            found.candidates,
            now=now,
            weights=tuning.weights,
            min_similarity=self._settings.rag_min_similarity,
            min_coverage=self._settings.rag_min_coverage,
            limit=max(k, k * tuning.mmr_pool),
        )
        head = scored
        order = mmr_order(
            [s.score for s in head],
            vector_matrix([s.candidate for s in head]),
            k=k,
            lam=tuning.mmr_lambda,
        )
        label = prepared.window.label if prepared.window else None
        return [head[i].to_scored_memory(label) for i in order]

    async def _fetch(
        self,
        conn: Any,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        include_assistant: bool,
        prepared: PreparedQuery,
        vector: np.ndarray | None,
        plan: VectorPlan,
        k: int,
        limits: CandidateLimits,
    ) -> CandidateSet:
        return await fetch_candidates(
            conn,
            user_id=user_id,
            companion_id=companion_id,
            include_assistant=include_assistant,
            query=prepared,
            query_vector=vector,
            plan=plan,
            limits=limits,
            k=k,
        )

    def _limits_for(self, rows: int, table_rows: int, k: int) -> CandidateLimits | None:
        """Limits for the ANN plan, or None when the exact plan is the better one.

        ef is sized so that the index's unfiltered nearest rows hold about twice the rows
        needed at this scope's share of the table; past `max_ef` an exact scan is cheaper.
        """
        tuning = self.tuning
        if rows <= tuning.exact_scan_max_rows:
            return None
        share = rows / max(table_rows, rows, 1)
        needed = max(tuning.limits.vector, k) * tuning.ef_headroom / share
        ef = next((e for e in (100, 200, 400, 800) if e >= needed), None)
        if ef is None or ef > tuning.max_ef:
            return None
        return replace(tuning.limits, ann_ef=ef)

    async def _scope_rows(
        self,
        conn: Any,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        include_assistant: bool,
    ) -> tuple[int, int]:
        key = (user_id, companion_id, include_assistant)
        cached = self._counts.get(key)
        now = time.monotonic()
        if cached is not None and cached[2] > now:
            self._counts.move_to_end(key)
            return cached[0], cached[1]
        # Counting past the exact-scan limit only matters for sizing ef: cap it.
        cap = max(self.tuning.exact_scan_max_rows + 1, 200_000)
        count = await count_scope(
            conn,
            user_id=user_id,
            companion_id=companion_id,
            include_assistant=include_assistant,
            cap=cap,
        )
        table = int(
            await conn.fetchval(
                "select greatest(reltuples, 0)::bigint from pg_class "
                "where oid = 'public.memories'::regclass"
            )
        )
        self._counts[key] = (count, table, now + self.tuning.scope_count_ttl_s)
        while len(self._counts) > 10_000:
            self._counts.popitem(last=False)
        return count, table

    def _maybe_refresh_terms(self, user_id: uuid.UUID, scope_rows: int) -> None:
        now = time.monotonic()
        last = self._terms_checked.get(user_id)
        if last is not None and now - last < self.tuning.term_stats_check_s:
            return
        self._terms_checked[user_id] = now
        self._terms_checked.move_to_end(user_id)
        while len(self._terms_checked) > 10_000:
            self._terms_checked.popitem(last=False)
        task = asyncio.create_task(self._refresh_if_stale(user_id, scope_rows))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_if_stale(self, user_id: uuid.UUID, scope_rows: int) -> None:
        try:
            async with self._pool.acquire() as conn:
                info = await term_stats.corpus_info(conn, user_id)
                if info is not None:
                    age = (datetime.now(UTC) - info.refreshed_at).total_seconds()
                    grown = scope_rows > info.docs * self.tuning.term_stats_growth + 20
                    if age < self.tuning.term_stats_max_age_s and not grown:
                        return
                if await term_stats.refresh(conn, user_id):
                    self._counters["term_stats_refreshes"] += 1
        except Exception as exc:  # background work: never surfaces, only counted
            self._counters["term_stats_failures"] += 1
            logger.warning("keyword statistics refresh failed (%s)", type(exc).__name__)

    async def refresh_term_stats(self, user_id: uuid.UUID) -> None:
        """Rebuild a user's keyword statistics now (after a bulk import, for instance)."""
        async with self._pool.acquire() as conn:
            if await term_stats.refresh(conn, user_id):
                self._counters["term_stats_refreshes"] += 1
        self._terms_checked[user_id] = time.monotonic()
        self.forget_counts(user_id)

    async def aclose(self) -> None:
        """Wait for background statistics rebuilds to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def scope_stats(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None
    ) -> dict[str, Any]:
        """What the scope holds: current memories per category (episodic turns per speaker),
        rows without a vector, and the bytes they take."""
        rows = await self._pool.fetch(
            "select coalesce(m.category, m.kind || ':' || m.speaker) as bucket, "
            "count(*) as n, count(*) filter (where m.embedding is null) as unembedded, "
            "coalesce(sum(pg_column_size(m.*)), 0) as bytes "
            "from public.memories m where m.user_id = $1 "
            "and (m.companion_id = $2 or m.companion_id is null) and m.superseded_at is null "
            "group by 1 order by 1",
            user_id,
            companion_id,
        )
        return {
            "memories": sum(int(r["n"]) for r in rows),
            "per_category": {r["bucket"]: int(r["n"]) for r in rows},
            "without_vector": sum(int(r["unembedded"]) for r in rows),
            "store_bytes": sum(int(r["bytes"]) for r in rows),
        }

    def forget_counts(self, user_id: uuid.UUID | None = None) -> None:
        """Drop cached scope sizes (all, or one user's), e.g. after a bulk import."""
        if user_id is None:
            self._counts.clear()
            return
        for key in [k for k in self._counts if k[0] == user_id]:
            del self._counts[key]

    def stats(self) -> dict[str, Any]:
        return {
            **self._counters,
            "search_ms": self._search_ms.summary(),
            "query_embed_ms": self._embed_ms.summary(),
            "cached_scopes": len(self._counts),
        }
