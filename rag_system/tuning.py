"""Engine internals that are not operator settings; the defaults are general-purpose."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rag_system.candidates import CandidateLimits
from rag_system.scoring import ScoringWeights


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
        local_index_max_rows: users with up to this many memories are searched in an
            in-process index (see local_store.py); 0 searches everything in SQL.
        local_index_budget_rows: most rows held in in-process indexes over all users
            (about 1.6 kB each with 384-d vectors).
        local_index_idle_s: an index unused this long is dropped.
        local_index_max_age_s: an index is reloaded in the background after this long.
        local_index_cold: what a search does for a user whose index is not loaded yet:
            "background" starts the load and searches in SQL meanwhile; "inline" waits for
            the load (benchmarks and tests that want one path).
        tombstone_retention_s: deleted ids are kept this long for indexes to catch up.
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
    local_index_max_rows: int = 20_000
    local_index_budget_rows: int = 100_000
    local_index_idle_s: float = 1_800.0
    local_index_max_age_s: float = 6 * 3_600.0
    local_index_cold: Literal["background", "inline"] = "background"
    tombstone_retention_s: float = 86_400.0
    limits: CandidateLimits = field(default_factory=CandidateLimits)
    weights: ScoringWeights = field(default_factory=ScoringWeights)
