"""Maximal marginal relevance: pick results that are relevant and not repeats of each other.

A person says the same thing many times ("I love hiking"); ten copies of it waste the context.
MMR picks, one at a time, the candidate with the best `lam * relevance - (1 - lam) *
redundancy`, where redundancy is its highest cosine similarity to anything already picked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mmr_order(
    relevance: Sequence[float],
    vectors: Sequence[np.ndarray | None] | np.ndarray,
    *,
    k: int,
    lam: float = 0.85,
) -> list[int]:
    """Indices of up to `k` items in MMR order.

    Args:
        relevance: one score per item (any scale; min-max normalized here).
        vectors: one L2-normalized vector per item, or None (treated as redundant with
            nothing); or an (items x dimensions) matrix with zero rows for the missing ones.
        k: how many to pick.
        lam: 1.0 is pure relevance order; lower trades relevance for diversity.
    """
    n = len(relevance)
    if n == 0 or k <= 0:
        return []
    rel = np.asarray(relevance, dtype=float)
    spread = float(rel.max() - rel.min())
    rel = (rel - rel.min()) / spread if spread > 0 else np.ones(n)
    if isinstance(vectors, np.ndarray):
        matrix = vectors
    else:
        dim = next((v.shape[0] for v in vectors if v is not None), 0)
        matrix = np.zeros((n, max(dim, 1)), dtype=np.float32)
        for i, vector in enumerate(vectors):
            if vector is not None and vector.shape[0] == dim:
                matrix[i] = vector
    gain = lam * rel
    penalty = np.zeros(n)
    chosen: list[int] = []
    for _ in range(min(k, n)):
        pick = int(np.argmax(gain - (1.0 - lam) * penalty))
        chosen.append(pick)
        gain[pick] = -np.inf
        # Only the picked rows' similarities are needed: a matrix-vector product each (a
        # full Gram matrix is a threaded BLAS call, which stalls on a busy machine).
        np.maximum(penalty, matrix @ matrix[pick], out=penalty)
    return chosen
