"""Candidates from a `UserIndex`: the same sources and rules as the SQL statement, in numpy.

Mirrors `candidates.build_sql` source by source, so both paths propose the same rows:
  * vector: the nearest rows of the scope (exact: every row's dot product is computed);
  * keywords: rows holding one of the rarest query words (the probe), scored by the IDF weight
    of all query words they hold, with IDF from the user's own document frequencies;
  * time: rows inside a narrow temporal hint's window, nearest first;
  * the turns just before and after the top rows of each source, in the same conversation.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence

import numpy as np

from rag_system.batch import CandidateBatch, empty_pairs
from rag_system.candidates import CandidateLimits
from rag_system.index_columns import Int64
from rag_system.local_index import UserIndex, day_number
from rag_system.query import PreparedQuery


def _keyword_terms(
    index: UserIndex, query: PreparedQuery, stems: Mapping[str, Sequence[str]]
) -> list[tuple[int | None, float, float, float]]:
    """(word id or None, weight, idf, document frequency) per distinct lexeme of the query
    words, rarest first (ties by lexeme, as the SQL orders them)."""
    weights: dict[str, float] = {}
    for word, weight in zip(query.words, query.weights, strict=True):
        for lexeme in stems.get(word, ()):
            weights[lexeme] = max(weights.get(lexeme, 0.0), float(weight))
    n = float(index.docs)
    terms = []
    for lexeme, weight in weights.items():
        w = index.word(lexeme)
        df = float(index.df[w]) if w is not None else 0.0
        # Words in a single memory count as unseen, as in the stored statistics (which keep
        # only words in two or more), so both paths weigh a query alike.
        df = df if df >= 2 else 0.0
        idf = math.log(1 + (max(n, df) - df + 0.5) / (df + 0.5)) if n > 0 else 1.0
        terms.append((df, lexeme, w, weight, idf))
    terms.sort(key=lambda t: (t[0], t[1]))
    return [(w, weight, idf, df) for df, _, w, weight, idf in terms]


def local_batch(
    index: UserIndex,
    *,
    companion_id: uuid.UUID | None,
    include_assistant: bool,
    query: PreparedQuery,
    stems: Mapping[str, Sequence[str]],
    query_vector: np.ndarray | None,
    limits: CandidateLimits,
    k: int,
) -> tuple[CandidateBatch, int]:
    """The candidate batch for one query, and how many rows the vector source proposed."""
    n, cols = index.n, index.columns
    scope = index.scope(companion_id, include_assistant)
    has_vector = query_vector is not None
    sims = None
    if query_vector is not None and index.dim == query_vector.shape[0]:
        sims = index.similarities(query_vector)

    # Vector source: at least k, so a scope holding k rows always yields k.
    vector_rows = np.zeros(0, dtype=np.int64)
    if sims is not None:
        eligible = np.flatnonzero(scope & cols.has_vec[:n])
        wanted = max(int(limits.vector), int(k))
        values = sims[eligible]
        if eligible.size > wanted:
            part = np.argpartition(-values, wanted - 1)[:wanted]
        else:
            part = np.arange(eligible.size)
        vector_rows = eligible[part[np.argsort(-values[part], kind="stable")]]

    # Keyword source.
    has_keywords = bool(query.words)
    acc: np.ndarray | None = None
    matched: np.ndarray | None = None
    ranked = np.zeros(0, dtype=np.int64)
    total_weight = own_weight = 0.0
    if has_keywords:
        lists, probes, parts = [], [], []
        expected = 0.0
        for rank, (w, weight, idf, df) in enumerate(_keyword_terms(index, query, stems)):
            total_weight += weight * idf
            if weight >= 1.0:
                own_weight += weight * idf
            expected += df
            if w is None:
                continue
            positions = index.postings(w)
            lists.append(positions)
            parts.append(np.full(positions.shape[0], weight * idf))
            # The probe: the rarest words, as many as fit the expected-rows budget (always
            # the rarest one), pull rows in; the others only add to their scores.
            if rank == 0 or expected <= limits.keyword_probe_rows:
                probes.append(positions)
        matched = np.zeros(n, dtype=bool)
        if lists:
            acc = np.bincount(np.concatenate(lists), weights=np.concatenate(parts), minlength=n)
            if probes:
                matched[np.concatenate(probes)] = True
        else:
            acc = np.zeros(n)
        matched &= scope
        rows = np.flatnonzero(matched)
        if rows.size:
            order = np.lexsort((cols.id_lo[rows], cols.id_hi[rows], cols.dl[rows],
                                -acc[rows]))
            ranked = rows[order]

    # Time source: only a narrow window adds rows of its own; any window boosts.
    window = query.window
    in_window = None
    time_rows = np.zeros(0, dtype=np.int64)
    if window is not None:
        start_us = int(window.start.timestamp() * 1_000_000)
        end_us = int(window.end.timestamp() * 1_000_000)
        occ = cols.occ_us[:n]
        eday = cols.eday[:n]
        in_window = ((occ >= start_us) & (occ < end_us)) | (
            (eday >= day_number(window.start)) & (eday < day_number(window.end))
        )
        span_days = (window.end - window.start).total_seconds() / 86_400
        if span_days <= limits.window_source_max_days:
            rows = np.flatnonzero(in_window & scope)
            if sims is not None:
                key = np.where(cols.has_vec[rows], -sims[rows], np.inf)
            else:
                key = -cols.occ_us[rows].astype(np.float64)
            time_rows = rows[np.argsort(key, kind="stable")[: int(limits.time)]]

    # The turns next to the top rows of each source.
    anchors_n = int(limits.anchors)
    anchor_parts = []
    if has_vector:
        anchor_parts.append(vector_rows[:anchors_n])
    if has_keywords:
        anchor_parts.append(ranked[:anchors_n])
    if not anchor_parts:
        anchor_parts.append(time_rows[:anchors_n])
    links = _neighbours(index, np.unique(np.concatenate(anchor_parts)), scope, limits)

    pool = [vector_rows, ranked[: int(limits.keyword)], time_rows, links[:, 1]]
    rows = np.unique(np.concatenate(pool))
    # Coverage is measured against the turn's own words (weight 1), as in the SQL path.
    return _batch(index, rows, sims, vector_rows, ranked, acc, matched,
                  own_weight if own_weight > 0 else total_weight,
                  in_window, links, limits), int(vector_rows.size)


def _neighbours(
    index: UserIndex, anchors: np.ndarray, scope: np.ndarray, limits: CandidateLimits
) -> np.ndarray:
    """(anchor, neighbour, step) for the turns just before and after each anchor: in scope,
    same companion and kind, same conversation when both know theirs, within the gap; step 1
    is the nearest on its side. All anchors at once (their time ranges concatenated)."""
    if anchors.size == 0:
        return empty_pairs()
    cols = index.columns
    gap_us = int(limits.neighbour_gap_s) * 1_000_000
    width = int(limits.neighbours)
    t = cols.occ_us[anchors]
    lo = np.searchsorted(index.occ_sorted, t - gap_us, side="left")
    hi = np.searchsorted(index.occ_sorted, t + gap_us, side="right")
    sizes = hi - lo
    total = int(sizes.sum())
    if total == 0:
        return empty_pairs()
    group = np.repeat(np.arange(anchors.size), sizes)
    starts = np.cumsum(sizes) - sizes
    near = index.time_order[lo[group] + np.arange(total) - starts[group]]
    anchor = anchors[group]
    session, near_session = cols.session[anchor], cols.session[near]
    ok = (
        scope[near]
        & (cols.companion[near] == cols.companion[anchor])
        & (cols.explicit[near] == cols.explicit[anchor])
        & ((session < 0) | (near_session < 0) | (near_session == session))
    )
    when, at = cols.occ_us[near], t[group]
    out = []
    for side, nearest_last in ((ok & (when < at), True), (ok & (when > at), False)):
        # Rank within each anchor's range, counting outwards from the anchor (the range is in
        # time order, so "before" counts from its end).
        counted = np.cumsum(side)
        # (An empty range may start past the end; its value is never read.)
        before_group = (counted - side)[np.minimum(starts, total - 1)]
        in_group = counted - before_group[group]
        if nearest_last:
            step = in_group[starts + sizes - 1][group] - in_group + 1
        else:
            step = in_group
        keep = side & (step <= width)
        out.append(np.stack([anchor[keep], near[keep], step[keep]], axis=1))
    return np.concatenate(out).astype(np.int64)


def _batch(
    index: UserIndex,
    rows: np.ndarray,
    sims: np.ndarray | None,
    vector_rows: np.ndarray,
    ranked: np.ndarray,
    acc: np.ndarray | None,
    matched: np.ndarray | None,
    total_weight: float,
    in_window: np.ndarray | None,
    links: np.ndarray,
    limits: CandidateLimits,
) -> CandidateBatch:
    m, cols = rows.shape[0], index.columns
    if sims is not None:
        similarity = np.where(cols.has_vec[rows], sims[rows].astype(np.float64), np.nan)
    else:
        similarity = np.full(m, np.nan)
    if acc is not None and matched is not None:
        keyword = np.where(matched[rows], acc[rows], 0.0)
    else:
        keyword = np.zeros(m)
    coverage = np.minimum(1.0, keyword / total_weight) if total_weight > 0 else np.zeros(m)
    vector_rank = _ranks(index.n, rows, vector_rows)
    keyword_rank = _ranks(index.n, rows, ranked[: int(limits.keyword)])
    if links.size:
        # `rows` is sorted and holds every anchor and neighbour: positions -> batch rows.
        a, j = np.searchsorted(rows, links[:, 0]), np.searchsorted(rows, links[:, 1])
        pairs = np.concatenate([
            np.stack([a, j, links[:, 2]], axis=1), np.stack([j, a, links[:, 2]], axis=1)
        ])
    else:
        pairs = empty_pairs()
    picked = rows.copy()
    return CandidateBatch(
        similarity=similarity,
        keyword=keyword,
        coverage=coverage,
        vector_rank=vector_rank,
        keyword_rank=keyword_rank,
        in_window=in_window[rows] if in_window is not None else np.zeros(m, dtype=bool),
        occurred=cols.occ[rows],
        companion=cols.companion[rows].astype(np.int64),
        explicit=cols.explicit[rows],
        session=cols.session[rows].astype(np.int64),
        importance=cols.importance[rows],
        access_count=cols.access[rows],
        id_hi=cols.id_hi[rows],
        id_lo=cols.id_lo[rows],
        pairs=pairs,
        vectors=lambda chosen: index.vecs[picked[np.asarray(chosen, dtype=np.int64)]],
        memory=lambda i: index.memory(int(picked[i])),
    )


def _ranks(n: int, rows: Int64, ordered: Int64) -> Int64:
    """1-based rank of each of `rows` in `ordered`, 0 for rows not in it."""
    ranks = np.zeros(n, dtype=np.int64)
    ranks[ordered] = np.arange(1, ordered.shape[0] + 1)
    return ranks[rows]
