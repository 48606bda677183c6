"""Scoring: fuse vector and keyword evidence, spread it to neighbouring turns, add priors.

The steps, per query, over the candidate pool only (no global statistics needed):
  1. Normalize: cosine similarities become z-scores over the pool (their absolute level varies
     by query; their spread says which rows stand out); the keyword weight is divided by the
     pool's best.
     The fused base score is a weighted sum of the two (score-level fusion keeps the margins
     that rank fusion throws away).
  2. Context: a turn next to a strong turn gains part of its neighbour's score (the answer to
     a question is often the reply after the turn that matches it), and turns of a
     conversation that holds several strong matches gain a little.
  3. Priors: recency decay, importance, how often the memory was used, a temporal hint's
     window, and explicit memories over raw turns. Small weights: they order near-ties.
  4. Relevance floor: a row with neither enough similarity nor enough keyword coverage (and no
     strong neighbour) is dropped, so an unrelated query returns nothing rather than noise.

Everything runs on the columns of a `CandidateBatch` (numpy), never row by row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import numpy as np

from core.memory_records import Memory
from rag_system.batch import CandidateBatch, empty_pairs, id_keys
from rag_system.candidates import Candidate, vector_matrix


@dataclass(frozen=True)
class ScoredMemory:
    """A retrieved memory with its score and the evidence behind it.

    Attributes:
        memory: the stored memory.
        score: the final score used for ranking (comparable within one query).
        similarity: cosine similarity to the query (0 when there was no embedding).
        text_rank: share of the query's keyword weight (IDF-weighted) the memory matched, 0..1.
        recency: recency decay factor, 1.0 for now, halving every `recency_half_life_days`.
        why: a short human-readable reason it was chosen.
    """

    memory: Memory
    score: float
    similarity: float
    text_rank: float
    recency: float
    why: str


@dataclass(frozen=True)
class ScoringWeights:
    """Weights of the fused score. Defaults are general, not fitted to any benchmark."""

    semantic: float = 0.5
    neighbour: float = 0.3
    neighbour_far: float = 0.5
    session: float = 0.2
    session_top: int = 3
    recency: float = 0.05
    recency_half_life_days: float = 30.0
    importance: float = 0.05
    access: float = 0.02
    window: float = 0.2
    explicit: float = 0.05
    session_gap_s: float = 1800.0


@dataclass(frozen=True)
class ScoredBatch:
    """Scores of a batch: `order` holds the kept rows, best first; the rest are per row."""

    order: np.ndarray
    total: np.ndarray
    base: np.ndarray
    neighbour: np.ndarray
    session: np.ndarray
    recency: np.ndarray


def _zscores(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return values
    spread = float(values.std())
    if spread < 1e-6:
        return np.zeros_like(values)
    # Three standard deviations above the pool's mean maps to about 1.
    return (values - float(values.mean())) / (3.0 * spread)


def session_keys(batch: CandidateBatch, gap_s: float) -> np.ndarray:
    """A conversation key per row: its session, else a cluster of rows close in time (same
    companion and kind, no gap over `gap_s`)."""
    keys = batch.session.astype(np.int64, copy=True)
    loose = np.flatnonzero(keys < 0)
    if loose.size:
        order = loose[np.lexsort((
            batch.occurred[loose], batch.explicit[loose], batch.companion[loose]
        ))]
        companion, explicit, occurred = (
            batch.companion[order], batch.explicit[order], batch.occurred[order]
        )
        breaks = np.empty(order.size, dtype=bool)
        breaks[0] = False
        breaks[1:] = (
            (companion[1:] != companion[:-1])
            | (explicit[1:] != explicit[:-1])
            | (np.diff(occurred) > gap_s)
        )
        first = int(keys.max()) + 1 if keys.max() >= 0 else 0
        keys[order] = first + np.cumsum(breaks)
    return keys


def _session_strength(keys: np.ndarray, base: np.ndarray, supported: np.ndarray,
                      top: int) -> np.ndarray:
    """Per row: the mean of the best `top` supported base scores of its conversation (>= 0)."""
    rows = np.flatnonzero(supported)
    out = np.zeros(keys.shape[0])
    if rows.size == 0:
        return out
    k, v = keys[rows], base[rows]
    order = np.lexsort((-v, k))
    k, v = k[order], v[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    sizes = np.diff(np.r_[starts, k.size])
    group = np.repeat(np.arange(starts.size), sizes)
    rank = np.arange(k.size) - starts[group]
    best = rank < top
    sums = np.bincount(group[best], weights=v[best], minlength=starts.size)
    strength = np.maximum(0.0, sums / np.minimum(top, sizes))
    unique = k[starts]
    at = np.minimum(np.searchsorted(unique, keys), unique.size - 1)
    found = unique[at] == keys
    out[found] = strength[at[found]]
    return out


def score_batch(
    batch: CandidateBatch,
    *,
    now: datetime,
    weights: ScoringWeights,
    min_similarity: float,
    min_coverage: float,
    limit: int | None = None,
) -> ScoredBatch:
    """Score every candidate; `order` keeps the best `limit` (default all) above the relevance
    floor, best first (ties broken by id, so the order is stable)."""
    n = batch.size
    if n == 0:
        nothing = np.zeros(0)
        return ScoredBatch(np.zeros(0, dtype=np.int64), nothing, nothing, nothing, nothing,
                           nothing)
    sims = batch.similarity
    has_sim = ~np.isnan(sims)
    any_sim = bool(has_sim.any())
    semantic = np.zeros(n)
    if any_sim:
        semantic[has_sim] = _zscores(sims[has_sim])
        # A row without a vector sits at the pool's floor, not at its mean.
        semantic[~has_sim] = float(semantic[has_sim].min())
    kw = batch.keyword
    top_kw = float(kw.max())
    keyword = kw / top_kw if top_kw > 0 else np.zeros(n)
    if not any_sim:
        alpha = 0.0
    elif top_kw <= 0:
        alpha = 1.0
    else:
        alpha = weights.semantic
    base = alpha * semantic + (1.0 - alpha) * keyword
    supported = (np.where(has_sim, sims, -np.inf) >= min_similarity) | (
        batch.coverage >= min_coverage
    )

    # Context: part of the best supported neighbour's score (the farther one counts less).
    neighbour = np.zeros(n)
    if batch.pairs.size:
        row, near, step = batch.pairs[:, 0], batch.pairs[:, 1], batch.pairs[:, 2]
        ok = supported[near] & (base[near] > 0)
        lift = weights.neighbour * base[near] * np.where(step == 1, 1.0, weights.neighbour_far)
        np.maximum.at(neighbour, row[ok], lift[ok])
    lifted = neighbour > 0

    keys = session_keys(batch, weights.session_gap_s)
    session = weights.session * _session_strength(keys, base, supported, weights.session_top)

    age_days = np.maximum(0.0, now.timestamp() - batch.occurred) / 86_400.0
    recency = np.power(0.5, age_days / weights.recency_half_life_days)
    access = np.minimum(1.0, np.log1p(batch.access_count) / math.log(10.0))
    prior = (
        weights.recency * recency
        + weights.importance * (batch.importance - 0.5)
        + weights.access * access
        + weights.window * batch.in_window
        + weights.explicit * batch.explicit
    )
    total = base + neighbour + session + prior

    # A neighbour of a supported row may stay even when its own evidence is weak:
    # "Yes, on Saturday!" answers the question next to it without sharing its words.
    kept = np.flatnonzero(supported | lifted)
    kept = kept[np.lexsort((batch.id_lo[kept], batch.id_hi[kept], -total[kept]))]
    if limit is not None:
        kept = kept[:limit]
    return ScoredBatch(kept, total, base, neighbour, session, recency)


def why(batch: CandidateBatch, scored: ScoredBatch, i: int, window_label: str | None) -> str:
    """Why row i was chosen, in a few words ("semantic 0.61 (#1); keywords 80% of query")."""
    return _why(
        float(batch.similarity[i]), int(batch.vector_rank[i]), float(batch.coverage[i]),
        float(scored.neighbour[i]), float(scored.session[i]), bool(batch.in_window[i]),
        bool(batch.explicit[i]), float(scored.recency[i]), int(batch.access_count[i]),
        window_label,
    )


def _why(
    similarity: float, rank: int, coverage: float, neighbour: float, session: float,
    in_window: bool, explicit: bool, recency: float, used: int, window_label: str | None,
) -> str:
    parts: list[str] = []
    if not math.isnan(similarity):
        parts.append(f"semantic {similarity:.2f}" + (f" (#{rank})" if rank > 0 else ""))
    if coverage > 0:
        parts.append(f"keywords {coverage:.0%} of query")
    if neighbour > 0:
        parts.append("next to a strong match")
    if session > 0.05:
        parts.append("same conversation as other matches")
    if in_window and window_label:
        parts.append(f"in '{window_label}'")
    if explicit:
        parts.append("saved fact")
    if recency > 0.8:
        parts.append("recent")
    if used > 0:
        parts.append(f"used {used}x")
    return "; ".join(parts) or "weak match"


def scored_memories(
    batch: CandidateBatch, scored: ScoredBatch, rows: Sequence[int], window_label: str | None
) -> list[ScoredMemory]:
    """The given rows as the engine's results, in that order."""
    picked = np.asarray(rows, dtype=np.int64)
    columns = zip(
        picked.tolist(),
        scored.total[picked].tolist(),
        batch.similarity[picked].tolist(),
        batch.vector_rank[picked].tolist(),
        batch.coverage[picked].tolist(),
        scored.neighbour[picked].tolist(),
        scored.session[picked].tolist(),
        batch.in_window[picked].tolist(),
        batch.explicit[picked].tolist(),
        scored.recency[picked].tolist(),
        batch.access_count[picked].tolist(),
        strict=True,
    )
    out = []
    for i, total, sim, rank, coverage, near, session, in_window, explicit, recency, used in (
        columns
    ):
        out.append(ScoredMemory(
            memory=batch.memory(i),
            score=round(total, 6),
            similarity=0.0 if math.isnan(sim) else round(sim, 6),
            text_rank=round(coverage, 6),
            recency=round(recency, 6),
            why=_why(sim, rank, coverage, near, session, in_window, explicit, recency,
                     int(used), window_label),
        ))
    return out


def recency_factor(occurred_at: datetime, now: datetime, half_life_days: float) -> float:
    """1.0 now, 0.5 one half-life ago; the future counts as now."""
    age_days = max(0.0, (now - occurred_at).total_seconds() / 86_400.0)
    return math.pow(0.5, age_days / half_life_days)


# --- the same over `Candidate` objects (hand-made pools, tests) --------------------------------


def _neighbour_pairs(candidates: Sequence[Candidate]) -> np.ndarray:
    """(row, neighbour, step) for every link, both directions; step counts outwards in time."""
    index = {c.id: n for n, c in enumerate(candidates)}
    pairs: list[tuple[int, int, int]] = []
    for i, c in enumerate(candidates):
        linked = [(candidates[j].occurred_at, j) for j in (index.get(x) for x in c.links)
                  if j is not None]
        before = sorted((t for t in linked if t[0] < c.occurred_at), reverse=True)
        after = sorted(t for t in linked if t[0] > c.occurred_at)
        for side in (before, after):
            for step, (_, j) in enumerate(side, start=1):
                pairs += [(i, j, step), (j, i, step)]
    return np.array(pairs, dtype=np.int64).reshape(-1, 3) if pairs else empty_pairs()


def batch_from_candidates(candidates: Sequence[Candidate]) -> CandidateBatch:
    """A `CandidateBatch` over `Candidate` objects."""
    codes: dict[object, int] = {None: 0}
    sessions: dict[str, int] = {}
    hi, lo = id_keys([c.id for c in candidates])
    return CandidateBatch(
        similarity=np.array(
            [np.nan if c.similarity is None else c.similarity for c in candidates], dtype=float
        ),
        keyword=np.array([c.keyword for c in candidates], dtype=float),
        coverage=np.array([c.coverage for c in candidates], dtype=float),
        vector_rank=np.array([c.vector_rank or 0 for c in candidates], dtype=np.int64),
        keyword_rank=np.array([c.keyword_rank or 0 for c in candidates], dtype=np.int64),
        in_window=np.array([c.in_window for c in candidates], dtype=bool),
        occurred=np.array([c.occurred_at.timestamp() for c in candidates], dtype=float),
        companion=np.array(
            [codes.setdefault(c.companion_id, len(codes)) for c in candidates], dtype=np.int64
        ),
        explicit=np.array([c.kind == "explicit" for c in candidates], dtype=bool),
        session=np.array(
            [sessions.setdefault(c.session, len(sessions)) if c.session else -1
             for c in candidates],
            dtype=np.int64,
        ),
        importance=np.array([c.importance for c in candidates], dtype=float),
        access_count=np.array([c.access_count for c in candidates], dtype=float),
        id_hi=hi,
        id_lo=lo,
        pairs=_neighbour_pairs(candidates),
        vectors=lambda rows: vector_matrix([candidates[int(i)] for i in rows]),
        memory=lambda i: candidates[i].memory,
    )


@dataclass(frozen=True)
class Scored:
    """One candidate's score and its parts (the parts explain it in `why`)."""

    score: float
    candidate: Candidate
    base: float
    neighbour: float
    session: float
    recency: float
    explain: Callable[[str | None], str] = field(repr=False, compare=False)

    def why(self, window_label: str | None = None) -> str:
        """Why it was chosen, in a few words ("semantic 0.61 (#1); keywords 80% of query")."""
        return self.explain(window_label)


def score_candidates(
    candidates: Sequence[Candidate],
    *,
    now: datetime,
    weights: ScoringWeights,
    min_similarity: float,
    min_coverage: float,
    limit: int | None = None,
) -> list[Scored]:
    """`score_batch` over `Candidate` objects: the kept ones, best first."""
    if not candidates:
        return []
    batch = batch_from_candidates(candidates)
    scored = score_batch(
        batch, now=now, weights=weights, min_similarity=min_similarity,
        min_coverage=min_coverage, limit=limit,
    )
    return [
        Scored(
            score=float(scored.total[i]),
            candidate=candidates[i],
            base=float(scored.base[i]),
            neighbour=float(scored.neighbour[i]),
            session=float(scored.session[i]),
            recency=float(scored.recency[i]),
            explain=partial(why, batch, scored, int(i)),
        )
        for i in scored.order
    ]
