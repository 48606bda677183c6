"""The SQL path: one candidate statement per search, its vector plan picked by scope size.

Used for users past the in-process limit, and for anyone until their in-process index is
loaded. Also keeps the per-user word statistics its keyword source reads fresh (in the
background), and counts which plans ran.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np

from core.tasks import BackgroundTasks
from infrastructure.connection_pool import ConnectionPool
from rag_system import term_stats
from rag_system.batch import CandidateBatch
from rag_system.candidates import (
    CandidateLimits,
    CandidateSet,
    VectorPlan,
    count_scope,
    fetch_candidates,
)
from rag_system.pooled import run_released
from rag_system.query import PreparedQuery
from rag_system.tuning import RetrievalTuning

logger = logging.getLogger(__name__)


class SqlSearch:
    """Candidates from one SQL statement per search (see candidates.py for the statement).

    Args:
        pool: the shared database pool.
        tuning: plan thresholds, candidate limits and word-statistics refresh timing.
    """

    def __init__(self, *, pool: ConnectionPool, tuning: RetrievalTuning) -> None:
        self._pool = pool
        self.tuning = tuning
        self._counts: OrderedDict[
            tuple[uuid.UUID, uuid.UUID | None, bool], tuple[int, int, float]
        ] = OrderedDict()
        self._terms_checked: OrderedDict[uuid.UUID, float] = OrderedDict()
        self._tasks = BackgroundTasks("keyword statistics")
        self.counters = {
            "exact_plans": 0,
            "ann_plans": 0,
            "ann_short_fallbacks": 0,
            "term_stats_refreshes": 0,
            "term_stats_failures": 0,
        }

    async def candidates(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        prepared: PreparedQuery,
        vector: np.ndarray | None,
        *,
        k: int,
        include_assistant: bool,
    ) -> CandidateBatch:
        """The candidates of one search (one statement, two if the ANN plan came back short)."""
        found, rows = await run_released(
            self._pool,
            partial(self._sql_candidates, user_id, companion_id, include_assistant, prepared,
                    vector, k),
            self._tasks,
        )
        self.counters["exact_plans" if found.plan is VectorPlan.EXACT else "ann_plans"] += 1
        self._maybe_refresh_terms(user_id, rows)
        return found.batch

    async def _sql_candidates(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        include_assistant: bool,
        prepared: PreparedQuery,
        vector: np.ndarray | None,
        k: int,
        conn: Any,
    ) -> tuple[CandidateSet, int]:
        tuning = self.tuning
        # Only picks the vector plan (and when to rebuild word statistics): a stale count
        # never hides rows.
        rows, table_rows = await self._scope_rows(conn, user_id, companion_id, include_assistant)
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
            self.counters["ann_short_fallbacks"] += 1
            found = await fetch(VectorPlan.EXACT, k, tuning.limits)
        return found, rows

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
        self._tasks.spawn(self._refresh_if_stale(user_id, scope_rows))

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
                    self.counters["term_stats_refreshes"] += 1
        except Exception as exc:  # background work: never surfaces, only counted
            self.counters["term_stats_failures"] += 1
            logger.warning("keyword statistics refresh failed (%s)", type(exc).__name__)

    async def refresh_term_stats(self, user_id: uuid.UUID) -> None:
        """Rebuild a user's keyword statistics now (after a bulk import, for instance)."""
        async with self._pool.acquire() as conn:
            if await term_stats.refresh(conn, user_id):
                self.counters["term_stats_refreshes"] += 1
        self._terms_checked[user_id] = time.monotonic()
        self.forget_counts(user_id)

    def forget_counts(self, user_id: uuid.UUID | None = None) -> None:
        """Drop cached scope sizes (all, or one user's), e.g. after a bulk import."""
        if user_id is None:
            self._counts.clear()
            return
        for key in [k for k in self._counts if k[0] == user_id]:
            del self._counts[key]

    @property
    def cached_scopes(self) -> int:
        return len(self._counts)

    async def aclose(self) -> None:
        """Wait for statistics rebuilds and connection releases in flight."""
        await self._tasks.drain()
