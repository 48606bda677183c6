"""Candidates as columns: what the scorer reads, whichever path (SQL or in-process) found them.

Scoring ~100 candidates one Python object at a time cost about a millisecond; as numpy columns
it costs a small fraction of that. `Memory` objects are built only for the few results.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np

from core.memory_records import Memory


def id_keys(ids: Sequence[uuid.UUID]) -> tuple[np.ndarray, np.ndarray]:
    """Two uint64 columns that sort like the UUIDs (Postgres compares uuid bytes in order)."""
    raw = np.frombuffer(b"".join(i.bytes for i in ids), dtype=">u8").reshape(-1, 2)
    return raw[:, 0].astype(np.uint64), raw[:, 1].astype(np.uint64)


@dataclass
class CandidateBatch:
    """The candidate rows of one query, one array per field (index i is one row).

    Attributes:
        similarity: cosine similarity to the query, NaN without a query or stored vector.
        keyword: IDF weight of the query words the row contains (0 when none matched).
        coverage: share of the IDF weight of the turn's own words the row matched (0..1).
        vector_rank / keyword_rank: 1-based rank in that source, 0 when it did not propose it.
        in_window: whether the row lies in the query's time window.
        occurred: when it was said, epoch seconds.
        companion: the row's companion as a small integer (0 = shared at the user level).
        explicit: a saved fact rather than a logged turn.
        session: the conversation as a small integer, -1 when unknown.
        importance / access_count: the stored priors.
        id_hi / id_lo: the row id as two sortable integers (ties break by id).
        pairs: (row, neighbour, step) for every fetched neighbour link, both directions.
        vectors: the stored embeddings of the given rows (zero rows where there is none).
        memory: the full row as a `Memory`, built on demand.
    """

    similarity: np.ndarray
    keyword: np.ndarray
    coverage: np.ndarray
    vector_rank: np.ndarray
    keyword_rank: np.ndarray
    in_window: np.ndarray
    occurred: np.ndarray
    companion: np.ndarray
    explicit: np.ndarray
    session: np.ndarray
    importance: np.ndarray
    access_count: np.ndarray
    id_hi: np.ndarray
    id_lo: np.ndarray
    pairs: np.ndarray
    vectors: Callable[[np.ndarray], np.ndarray]
    memory: Callable[[int], Memory]

    @property
    def size(self) -> int:
        return int(self.similarity.shape[0])


def empty_pairs() -> np.ndarray:
    return np.zeros((0, 3), dtype=np.int64)


def matrix_from_sent(raws: Sequence[bytes | None]) -> np.ndarray:
    """Vectors in pgvector's binary form (`vector_send`) as rows; zero rows for None."""
    present = [r for r in raws if r is not None]
    if not present:
        return np.zeros((len(raws), 1), dtype=np.float32)
    # vector_send: int16 dimensions, int16 unused, then big-endian float4 values.
    dim = (len(present[0]) - 4) // 4
    blank = bytes(4 + 4 * dim)
    joined = b"".join(r if r is not None and len(r) == len(blank) else blank for r in raws)
    matrix = np.frombuffer(joined, dtype=">f4").reshape(len(raws), dim + 1)[:, 1:]
    return matrix.astype(np.float32)


def batch_from_records(rows: Sequence[asyncpg.Record]) -> CandidateBatch:
    """The candidate rows the statement returned, as columns."""
    companions: dict[uuid.UUID | None, int] = {None: 0}
    sessions: dict[str, int] = {}
    index = {r["id"]: i for i, r in enumerate(rows)}
    pairs: list[tuple[int, int, int]] = []
    for i, r in enumerate(rows):
        links = r["links"]
        if not links:
            continue
        when = r["occurred_at"]
        linked = [(rows[j]["occurred_at"], j) for j in (index.get(x) for x in links)
                  if j is not None]
        before = sorted((t for t in linked if t[0] < when), reverse=True)
        after = sorted(t for t in linked if t[0] > when)
        for side in (before, after):
            for step, (_, j) in enumerate(side, start=1):
                pairs += [(i, j, step), (j, i, step)]
    hi, lo = id_keys([r["id"] for r in rows])
    memories: dict[int, Memory] = {}

    def memory(i: int) -> Memory:
        if i not in memories:
            memories[i] = Memory.from_record(rows[i])
        return memories[i]

    return CandidateBatch(
        similarity=np.array(
            [np.nan if r["similarity"] is None else r["similarity"] for r in rows], dtype=float
        ),
        keyword=np.array([r["keyword"] for r in rows], dtype=float),
        coverage=np.array([r["coverage"] or 0.0 for r in rows], dtype=float),
        vector_rank=np.array([r["vrank"] or 0 for r in rows], dtype=np.int64),
        keyword_rank=np.array([r["frank"] or 0 for r in rows], dtype=np.int64),
        in_window=np.array([bool(r["in_window"]) for r in rows], dtype=bool),
        occurred=np.array([r["occurred_at"].timestamp() for r in rows], dtype=float),
        companion=np.array(
            [companions.setdefault(r["companion_id"], len(companions)) for r in rows],
            dtype=np.int64,
        ),
        explicit=np.array([r["kind"] == "explicit" for r in rows], dtype=bool),
        session=np.array(
            [sessions.setdefault(r["session"], len(sessions)) if r["session"] else -1
             for r in rows],
            dtype=np.int64,
        ),
        importance=np.array([r["importance"] for r in rows], dtype=float),
        access_count=np.array([r["access_count"] for r in rows], dtype=float),
        id_hi=hi,
        id_lo=lo,
        pairs=np.array(pairs, dtype=np.int64).reshape(-1, 3) if pairs else empty_pairs(),
        vectors=lambda picked: matrix_from_sent([rows[int(i)]["vec"] for i in picked]),
        memory=memory,
    )
