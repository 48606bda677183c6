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
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from rag_system.candidates import Candidate
from services.memory_service import Memory


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


def _zscores(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return values
    spread = float(values.std())
    if spread < 1e-6:
        return np.zeros_like(values)
    # Three standard deviations above the pool's mean maps to about 1.
    return (values - float(values.mean())) / (3.0 * spread)


def _session_keys(candidates: Sequence[Candidate], gap_s: float) -> list[str]:
    """A conversation key per row: its session id, else a cluster of rows close in time."""
    keys = [f"s:{c.session}" if c.session else "" for c in candidates]
    loose = [i for i, key in enumerate(keys) if not key]
    if loose:
        loose.sort(key=lambda i: (str(candidates[i].companion_id), candidates[i].kind,
                                  candidates[i].occurred_at))
        cluster = 0
        previous: Candidate | None = None
        for i in loose:
            c = candidates[i]
            if previous is not None and (
                previous.companion_id != c.companion_id
                or previous.kind != c.kind
                or (c.occurred_at - previous.occurred_at).total_seconds() > gap_s
            ):
                cluster += 1
            keys[i] = f"t:{cluster}"
            previous = c
    return keys


def _neighbour_pairs(candidates: Sequence[Candidate]) -> list[tuple[int, int, int]]:
    """(row, neighbour, step) for every fetched link, both directions; step is 1 or 2."""
    index: dict[uuid.UUID, int] | None = None
    pairs: list[tuple[int, int, int]] = []
    for i, c in enumerate(candidates):
        if not c.links:
            continue
        if index is None:
            index = {x.id: n for n, x in enumerate(candidates)}
        when = c.occurred_at
        linked = [(candidates[j].occurred_at, j) for j in (index.get(x) for x in c.links)
                  if j is not None]
        before = sorted((t for t in linked if t[0] < when), reverse=True)
        after = sorted(t for t in linked if t[0] > when)
        for side in (before, after):
            for step, (_, j) in enumerate(side, start=1):
                pairs.append((i, j, step))
                pairs.append((j, i, step))
    return pairs


def recency_factor(occurred_at: datetime, now: datetime, half_life_days: float) -> float:
    """1.0 now, 0.5 one half-life ago; the future counts as now."""
    age_days = max(0.0, (now - occurred_at).total_seconds() / 86_400.0)
    return math.pow(0.5, age_days / half_life_days)


@dataclass(frozen=True)
class Scored:
    """One candidate's score and its parts (the parts explain it in `why`)."""

    score: float
    candidate: Candidate
    base: float
    neighbour: float
    session: float
    recency: float

    def why(self, window_label: str | None = None) -> str:
        """Why it was chosen, in a few words ("semantic 0.61 (#1); keywords 80% of query")."""
        return _why(self, window_label)

    def to_scored_memory(self, window_label: str | None) -> ScoredMemory:
        c = self.candidate
        return ScoredMemory(
            memory=c.memory,
            score=round(self.score, 6),
            similarity=round(c.similarity, 6) if c.similarity is not None else 0.0,
            text_rank=round(c.coverage, 6),
            recency=round(self.recency, 6),
            why=self.why(window_label),
        )


def score_candidates(
    candidates: Sequence[Candidate],
    *,
    now: datetime,
    weights: ScoringWeights,
    min_similarity: float,
    min_coverage: float,
    limit: int | None = None,
) -> list[Scored]:
    """Score every candidate; the best `limit` (default all) above the relevance floor, best
    first (ties broken by id, so the order is stable)."""
    n = len(candidates)
    if n == 0:
        return []
    sims = np.array(
        [np.nan if c.similarity is None else c.similarity for c in candidates], dtype=float
    )
    has_sim = ~np.isnan(sims)
    any_sim = bool(has_sim.any())
    semantic = np.zeros(n)
    if any_sim:
        semantic[has_sim] = _zscores(sims[has_sim])
        # A row without a vector sits at the pool's floor, not at its mean.
        semantic[~has_sim] = float(semantic[has_sim].min())
    kw = np.fromiter((c.keyword for c in candidates), dtype=float, count=n)
    top_kw = float(kw.max())
    keyword = kw / top_kw if top_kw > 0 else np.zeros(n)
    if not any_sim:
        alpha = 0.0
    elif top_kw <= 0:
        alpha = 1.0
    else:
        alpha = weights.semantic
    base = alpha * semantic + (1.0 - alpha) * keyword
    coverage = np.fromiter((c.coverage for c in candidates), dtype=float, count=n)
    supported = (np.where(has_sim, sims, -np.inf) >= min_similarity) | (coverage >= min_coverage)

    # Context: part of the best supported neighbour's score (the farther one counts half).
    neighbour = np.zeros(n)
    lifted = np.zeros(n, dtype=bool)
    for i, j, step in _neighbour_pairs(candidates):
        if not supported[j] or base[j] <= 0:
            continue
        lift = weights.neighbour * base[j] * (1.0 if step == 1 else weights.neighbour_far)
        if lift > neighbour[i]:
            neighbour[i] = lift
            lifted[i] = True

    keys = _session_keys(candidates, weights.session_gap_s)
    grouped: dict[str, list[float]] = defaultdict(list)
    for i in np.flatnonzero(supported):
        grouped[keys[i]].append(float(base[i]))
    top = weights.session_top
    strength = {
        key: max(0.0, sum(sorted(values)[-top:]) / min(top, len(values)))
        for key, values in grouped.items()
    }
    session = weights.session * np.array([strength.get(key, 0.0) for key in keys])

    now_ts = now.timestamp()
    age_days = np.maximum(
        0.0,
        now_ts - np.fromiter((c.occurred_at.timestamp() for c in candidates), float, count=n),
    ) / 86_400.0
    recency = np.power(0.5, age_days / weights.recency_half_life_days)
    importance = np.fromiter((c.importance for c in candidates), dtype=float, count=n)
    access = np.minimum(
        1.0,
        np.log1p(np.fromiter((c.access_count for c in candidates), float, count=n))
        / math.log(10.0),
    )
    flags = np.array([(c.in_window, c.kind == "explicit") for c in candidates], dtype=float)
    prior = (
        weights.recency * recency
        + weights.importance * (importance - 0.5)
        + weights.access * access
        + weights.window * flags[:, 0]
        + weights.explicit * flags[:, 1]
    )
    total = base + neighbour + session + prior

    # A neighbour of a supported row may stay even when its own evidence is weak:
    # "Yes, on Saturday!" answers the question next to it without sharing its words.
    kept = np.flatnonzero(supported | lifted).tolist()
    kept.sort(key=lambda i: (-total[i], candidates[i].id))
    if limit is not None:
        kept = kept[:limit]
    return [
        Scored(
            score=float(total[i]),
            candidate=candidates[i],
            base=float(base[i]),
            neighbour=float(neighbour[i]),
            session=float(session[i]),
            recency=float(recency[i]),
        )
        for i in kept
    ]


def _why(scored: Scored, window_label: str | None) -> str:
    c = scored.candidate
    parts: list[str] = []
    if c.similarity is not None and c.vector_rank is not None:
        parts.append(f"semantic {c.similarity:.2f} (#{c.vector_rank})")
    elif c.similarity is not None:
        parts.append(f"semantic {c.similarity:.2f}")
    if c.coverage > 0:
        parts.append(f"keywords {c.coverage:.0%} of query")
    if scored.neighbour > 0:
        parts.append("next to a strong match")
    if scored.session > 0.05:
        parts.append("same conversation as other matches")
    if c.in_window and window_label:
        parts.append(f"in '{window_label}'")
    if c.kind == "explicit":
        parts.append("saved fact")
    if scored.recency > 0.8:
        parts.append("recent")
    if c.access_count > 0:
        parts.append(f"used {c.access_count}x")
    return "; ".join(parts) or "weak match"
