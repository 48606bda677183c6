"""RetrievalEngine: the best few memories of one user (and companion) for a query."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import Settings
from core.errors import CompanionError, InvalidInput, StorageUnavailable
from core.forgotten import ForgottenMemories
from core.latency import LatencyWindow
from infrastructure.connection_pool import ConnectionPool
from rag_system.batch import CandidateBatch
from rag_system.local_index import UserIndex
from rag_system.local_search import local_batch
from rag_system.local_store import LocalIndexes
from rag_system.mmr import mmr_order
from rag_system.query import PreparedQuery, prepare
from rag_system.scoring import ScoredMemory, score_batch, scored_memories
from rag_system.sql_search import SqlSearch
from rag_system.tuning import RetrievalTuning

if TYPE_CHECKING:
    from infrastructure.embeddings import Embedder

logger = logging.getLogger(__name__)

MAX_K = 100
# A sync of the in-process index waits at most this share of the turn's memory budget
# (`rag_budget_ms`): past it the database is slow or hung, and the index as it stands, stale by
# the time since its last sync, answers instead of the turn going on with no memory at all.
SYNC_SHARE_OF_BUDGET = 0.5

__all__ = ["MAX_K", "RetrievalEngine", "RetrievalTuning"]


class RetrievalEngine:
    """Hybrid retrieval over `memories`: pgvector + Postgres full-text, fused and diversified.

    Every query is scoped to the user, and to the companion plus the user-level shared
    memories; the companion's own replies are left out unless `include_assistant`.

    Two paths find the same candidates: for a user with up to `local_index_max_rows`
    memories, an in-process index kept current from Postgres (one round trip per search, run
    while the query is embedded); for larger users, or before the index is loaded, one SQL
    statement. Call `warm` when a session starts so its first turn already has the index.
    While Postgres cannot be reached, or does not answer within half the turn's memory
    budget (a hung server), a loaded index is searched as it stands (counted in
    `stale_local_searches`, the slow ones also in `slow_syncs`) rather than leaving the turn
    without memory. Whatever the path,
    nothing the process's notes say is forgotten is returned (`core.forgotten`).

    Args:
        pool: the shared database pool.
        embedder: embeds the query (skipped when the caller passes `query_embedding`).
        settings: the relevance floor (`rag_min_similarity`, `rag_min_coverage`).
        tuning: engine internals; the defaults are general-purpose.
        forgotten: this process's notes of forgotten memories (the memory service's); its own
            when not given.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        embedder: Embedder,
        settings: Settings,
        tuning: RetrievalTuning | None = None,
        forgotten: ForgottenMemories | None = None,
    ) -> None:
        self._pool = pool
        self._forgotten = forgotten if forgotten is not None else ForgottenMemories()
        self._embedder = embedder
        self._settings = settings
        self.tuning = tuning or RetrievalTuning()
        self._sql = SqlSearch(pool=pool, tuning=self.tuning)
        self._search_ms = LatencyWindow()
        self._embed_ms = LatencyWindow()
        self._local = LocalIndexes(
            pool=pool,
            max_rows=self.tuning.local_index_max_rows,
            budget_rows=self.tuning.local_index_budget_rows,
            idle_s=self.tuning.local_index_idle_s,
            max_age_s=self.tuning.local_index_max_age_s,
            tombstone_retention_s=self.tuning.tombstone_retention_s,
            forgotten=self._forgotten,
        )
        self._counters = {
            "searches": 0,
            "local_searches": 0,
            "sql_searches": 0,
            "keyword_only": 0,
            "embedding_failures": 0,
            "slow_syncs": 0,
            "empty_results": 0,
            "stale_local_searches": 0,
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
        started = time.perf_counter()
        prepared = prepare(query, recent_turns=recent_turns, now=now)
        embed = query_embedding is None and bool(prepared.text.strip())
        if query_embedding is None and not embed and not prepared.words and not prepared.window:
            return self._finish([], started, 0.0, keyword_only=True)
        embedding = asyncio.ensure_future(self._embed(prepared)) if embed else None
        index = await self._local_index(user_id)
        if index is not None:
            # The embedding runs in the embedder's thread (or server) meanwhile.
            try:
                local = await self._search_local(
                    index, companion_id, prepared, embedding, query_embedding, k=k, now=now,
                    include_assistant=include_assistant,
                )
            except BaseException:
                if embedding is not None:
                    embedding.cancel()
                raise
            if local is not None:
                results, waited, keyword_only = local
                self._counters["local_searches"] += 1
                return self._finish(results, started, waited, keyword_only=keyword_only)
        vector, waited = await self._embedding(embedding, query_embedding)
        if vector is None and not prepared.words and prepared.window is None:
            return self._finish([], started, waited, keyword_only=True)
        results = await self._search(
            user_id, companion_id, prepared, vector, k=k, now=now,
            include_assistant=include_assistant,
        )
        self._counters["sql_searches"] += 1
        return self._finish(results, started, waited, keyword_only=vector is None)

    async def _search_local(
        self,
        index: UserIndex,
        companion_id: uuid.UUID | None,
        prepared: PreparedQuery,
        embedding: asyncio.Future[np.ndarray | None] | None,
        query_embedding: np.ndarray | None,
        *,
        k: int,
        now: datetime,
        include_assistant: bool,
    ) -> tuple[list[ScoredMemory], float, bool] | None:
        """(results, seconds waited for the embedding, keyword only), or None when the index
        could not be brought up to date (the caller searches in SQL)."""
        sync_wait_s = self._settings.rag_budget_ms / 1000 * SYNC_SHARE_OF_BUDGET
        try:
            # A sync given up on applies nothing; its statement ends in the background.
            async with asyncio.timeout(sync_wait_s):
                stems = await self._local.sync(index, prepared.words)
        except (StorageUnavailable, TimeoutError) as exc:
            # Postgres is away (a restart, a failover) or hung: the copy held here is only as
            # old as the last search, far better for this turn than no memory at all.
            self._counters["stale_local_searches"] += 1
            if isinstance(exc, TimeoutError):
                self._counters["slow_syncs"] += 1
            stems = self._local.known_stems(prepared.words)
        if stems is None:
            return None
        vector, waited = await self._embedding(embedding, query_embedding)
        if vector is None and not prepared.words and prepared.window is None:
            return [], waited, True
        batch, _ = local_batch(
            index, companion_id=companion_id, include_assistant=include_assistant,
            query=prepared, stems=stems, query_vector=vector, limits=self.tuning.limits, k=k,
        )
        return self._rank(batch, prepared, k=k, now=now), waited, vector is None

    def _finish(
        self, results: list[ScoredMemory], started: float, waited: float, *, keyword_only: bool
    ) -> list[ScoredMemory]:
        # The SQL path may read a row whose delete waits in the spool; an index, one that was
        # forgotten just now.
        results = [r for r in results if not self._forgotten.hides(r.memory)]
        # The time the search itself took: waiting for the query embedding is timed apart.
        self._search_ms.add((time.perf_counter() - started - waited) * 1000)
        self._counters["searches"] += 1
        if keyword_only:
            self._counters["keyword_only"] += 1
        if not results:
            self._counters["empty_results"] += 1
        return results

    async def _local_index(self, user_id: uuid.UUID) -> UserIndex | None:
        if self.tuning.local_index_max_rows <= 0:
            return None
        index = self._local.ready(user_id)
        if index is not None or self._local.too_large(user_id):
            return index
        load = self._local.start_load(user_id)
        if self.tuning.local_index_cold == "inline":
            return await asyncio.shield(load)
        return None

    @staticmethod
    async def _embedding(
        embedding: asyncio.Future[np.ndarray | None] | None,
        query_embedding: np.ndarray | None,
    ) -> tuple[np.ndarray | None, float]:
        """The query vector, and how long the search waited for it."""
        if embedding is None:
            if query_embedding is None:
                return None, 0.0
            return np.asarray(query_embedding, dtype=np.float32), 0.0
        began = time.perf_counter()
        vector = await embedding
        return vector, time.perf_counter() - began

    async def warm(self, user_id: uuid.UUID) -> bool:
        """Load the user's in-process index now, or bring a loaded one up to date (call when a
        session starts, off the turn path); True when this user's searches will use it, False
        when they go to SQL (too many memories, or the in-process index is off)."""
        if self.tuning.local_index_max_rows <= 0 or self._local.too_large(user_id):
            return False
        index = self._local.ready(user_id)
        if index is not None and await self._local.sync(index, ()) is not None:
            return True
        return await asyncio.shield(self._local.start_load(user_id)) is not None

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

    def _rank(
        self, batch: CandidateBatch, prepared: PreparedQuery, *, k: int, now: datetime
    ) -> list[ScoredMemory]:
        """Score, keep the best few times k, and pick k of them by MMR."""
        tuning = self.tuning
        scored = score_batch(
            batch,
            now=now,
            weights=tuning.weights,
            min_similarity=self._settings.rag_min_similarity,
            min_coverage=self._settings.rag_min_coverage,
            limit=max(k, k * tuning.mmr_pool),
        )
        head = scored.order
        if head.size == 0:
            return []
        order = mmr_order(scored.total[head], batch.vectors(head), k=k, lam=tuning.mmr_lambda)
        label = prepared.window.label if prepared.window else None
        return scored_memories(batch, scored, [int(head[i]) for i in order], label)

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
        batch = await self._sql.candidates(
            user_id, companion_id, prepared, vector, k=k, include_assistant=include_assistant
        )
        return self._rank(batch, prepared, k=k, now=now)

    async def refresh_term_stats(self, user_id: uuid.UUID) -> None:
        """Rebuild a user's keyword statistics now (after a bulk import, for instance)."""
        await self._sql.refresh_term_stats(user_id)

    async def aclose(self) -> None:
        """Wait for background work (statistics rebuilds, index loads, releases) to finish."""
        await self._local.aclose()
        await self._sql.aclose()

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

    def stats(self) -> dict[str, Any]:
        return {
            **self._counters,
            **self._sql.counters,
            "search_ms": self._search_ms.summary(),
            "query_embed_ms": self._embed_ms.summary(),
            "cached_scopes": self._sql.cached_scopes,
            "local_index": self._local.stats(),
        }
