"""One user's memories held in process memory, as columns, for searching without a scan.

Postgres stays the source of truth: the copy is loaded off the critical path when a session
starts, and before each search it takes in what changed since (rows whose `rev` is at or past
its horizon, and tombstones of deleted rows; see the 20261121006000 migration), in the same
round trip that stems the query words. So a search reads the same rows a database scan would,
and the vector half costs one matrix-vector product instead of a scan.

Layout: position p is one version of one row. An update that keeps the text and time changes
the row in place; any other one (and a delete) retires the old position and appends a new
one, so positions never move while a search runs. Word postings and document frequencies
are per stemmed word (Postgres's own lexemes, from `tsvector_to_array(tsv)`); a retired
position stays in the postings and is masked out, and its words still count in the document
frequencies until the next full load (the same slack as the stored word statistics).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from core.memory_records import Memory
from rag_system.batch import id_keys, matrix_from_sent
from rag_system.index_columns import NO_DAY, Columns, Int64, RowFields

# OpenBLAS runs a larger matrix-vector product on all cores; on a shared 2-core machine its
# threads then wait for each other (milliseconds). Blocks of this many rows stay on one thread.
_DOT_BLOCK = 512


class _Postings:
    """Positions per word id, in growable int32 arrays."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.sizes: list[int] = []

    def new(self, positions: np.ndarray | None = None) -> None:
        if positions is None:
            self.arrays.append(np.zeros(4, dtype=np.int32))
            self.sizes.append(0)
        else:
            self.arrays.append(positions.astype(np.int32))
            self.sizes.append(int(positions.shape[0]))

    def add(self, word: int, position: int) -> None:
        size = self.sizes[word]
        array = self.arrays[word]
        if size == array.shape[0]:
            array = np.concatenate([array, np.zeros(max(4, size), dtype=np.int32)])
            self.arrays[word] = array
        array[size] = position
        self.sizes[word] = size + 1

    def get(self, word: int) -> np.ndarray:
        return self.arrays[word][: self.sizes[word]]


class UserIndex:
    """All memories of one user (every companion, history included), as columns.

    Attributes:
        horizon: changes by transactions from this id on may not be in the copy yet.
        n: positions in use (retired ones included).
        dead: retired positions (a full reload drops them).
        columns: what searching reads, per position.
        fields: the rest of each row, for building its `Memory`.
        vecs: the stored embeddings, one row per position (zeros where there is none).
        df: per word id, how many positions hold the word.
        pos: the current position of each memory id.
    """

    def __init__(self, user_id: uuid.UUID, horizon: int) -> None:
        self.user_id = user_id
        self.horizon = horizon
        self.loaded_at = time.monotonic()
        self.used_at = self.loaded_at
        self.n = 0
        self.dead = 0
        self.dim = 0
        self._cap = 0
        self.columns = Columns.zeros(0)
        self.fields = RowFields()
        self.vecs: npt.NDArray[np.float32] = np.zeros((0, 0), dtype=np.float32)
        self.companion_ids: list[uuid.UUID | None] = [None]
        self._companions: dict[uuid.UUID | None, int] = {None: 0}
        self._sessions: dict[str, int] = {}
        self.vocab: dict[str, int] = {}
        self.df: Int64 = np.zeros(0, dtype=np.int64)
        self._postings = _Postings()
        self.pos: dict[uuid.UUID, int] = {}
        self.gone: set[uuid.UUID] = set()
        self.time_order: Int64 = np.zeros(0, dtype=np.int64)
        self.occ_sorted: Int64 = np.zeros(0, dtype=np.int64)
        self._memories: dict[int, Memory] = {}
        # One sync at a time: `apply` relies on each read being newer than the last.
        self.sync_lock = asyncio.Lock()
        # The version of the process's forgotten-memory notes taken in (`LocalIndexes`).
        self.forgotten_version = 0

    # --- building ----------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        user_id: uuid.UUID,
        horizon: int,
        rows: Sequence[Mapping[str, Any]],
        postings: Iterable[tuple[str, Sequence[int]]],
    ) -> UserIndex:
        """From a full load: `rows` in position order, `postings` (word, positions) over them."""
        index = cls(user_id, horizon)
        n = len(rows)
        index._reserve(n)
        index.n = n
        c = index.columns

        def column(name: str) -> list[Any]:
            return [r[name] for r in rows]

        vecs = column("vec")
        if any(v is not None for v in vecs):
            matrix = matrix_from_sent(vecs)
            index._ensure_dim(matrix.shape[1])
            index.vecs[:n] = matrix
        c.has_vec[:n] = [v is not None for v in vecs]
        c.alive[:n] = True
        occ_us = np.array(column("occ_us"), dtype=np.int64)
        c.occ_us[:n] = occ_us
        c.occ[:n] = occ_us / 1e6
        c.eday[:n] = [NO_DAY if d is None else d for d in column("eday")]
        c.companion[:n] = [index._code(companion) for companion in column("companion_id")]
        c.explicit[:n] = [k == "explicit" for k in column("kind")]
        c.assistant[:n] = [s == "assistant" for s in column("speaker")]
        c.superseded[:n] = [s is not None for s in column("superseded_at")]
        sessions = index._sessions
        c.session[:n] = [
            -1 if not s else sessions.setdefault(s, len(sessions)) for s in column("session")
        ]
        c.importance[:n] = column("importance")
        c.access[:n] = column("access_count")
        c.dl[:n] = [d or 0 for d in column("dl")]
        index.fields = RowFields.of(rows)
        index.pos = {memory_id: p for p, memory_id in enumerate(index.fields.ids)}
        if n:
            c.id_hi[:n], c.id_lo[:n] = id_keys(index.fields.ids)
        order = np.argsort(occ_us, kind="stable")
        index.time_order = order.astype(np.int64)
        index.occ_sorted = occ_us[order]
        counts: list[int] = []
        for word, positions in postings:
            index.vocab[word] = len(index.vocab)
            index._postings.new(np.asarray(positions, dtype=np.int32))
            counts.append(len(positions))
        index.df = np.array(counts, dtype=np.int64)
        return index

    def _reserve(self, extra: int) -> None:
        need = self.n + extra
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap, 64)
        self.columns = self.columns.grown(cap, self.n)
        vecs = np.zeros((cap, self.dim), dtype=np.float32)
        vecs[: self.n] = self.vecs[: self.n]
        self.vecs = vecs
        self._cap = cap

    def _ensure_dim(self, dim: int) -> None:
        if dim == self.dim:
            return
        if self.dim and self.columns.has_vec[: self.n].any():
            # A different model's vectors: the old ones are not comparable any more.
            self.columns.has_vec[: self.n] = False
        self.dim = dim
        self.vecs = np.zeros((self._cap, dim), dtype=np.float32)

    def _code(self, companion_id: uuid.UUID | None) -> int:
        code = self._companions.get(companion_id)
        if code is None:
            code = self._companions[companion_id] = len(self.companion_ids)
            self.companion_ids.append(companion_id)
        return code

    def _set_row(self, p: int, row: Mapping[str, Any], *, with_vector: bool = True) -> None:
        c = self.columns
        c.alive[p] = True
        c.occ_us[p] = row["occ_us"]
        c.occ[p] = row["occ_us"] / 1e6
        c.eday[p] = NO_DAY if row["eday"] is None else row["eday"]
        c.companion[p] = self._code(row["companion_id"])
        c.explicit[p] = row["kind"] == "explicit"
        c.assistant[p] = row["speaker"] == "assistant"
        c.superseded[p] = row["superseded_at"] is not None
        session = row["session"]
        c.session[p] = (
            -1 if not session else self._sessions.setdefault(session, len(self._sessions))
        )
        c.importance[p] = row["importance"]
        c.access[p] = row["access_count"]
        c.dl[p] = row["dl"] or 0
        self.fields.put(p, row)
        if with_vector:
            raw = row["vec"]
            if raw is None:
                c.has_vec[p] = False
                if self.dim:
                    self.vecs[p] = 0.0
            else:
                vector = matrix_from_sent([raw])[0]
                self._ensure_dim(vector.shape[0])
                self.vecs[p] = vector
                c.has_vec[p] = True
        self._memories.pop(p, None)

    # --- changes -----------------------------------------------------------------------------

    def apply(
        self,
        rows: Sequence[Mapping[str, Any]],
        tombstones: Sequence[tuple[uuid.UUID, int]],
        horizon: int,
    ) -> int:
        """Take in changed rows and deleted ids read at `horizon`; returns rows taken in.

        Each call must carry a read taken after the previous call's (`LocalIndexes` runs one
        sync per index at a time): a row is the current version as of that read, whatever its
        `rev`. Transaction ids are handed out when a transaction first writes, not when it
        commits, so a newer version can carry a smaller `rev`; comparing them would keep a
        stale one. Memory ids are never reused, so a deleted id stays deleted.
        """
        taken = 0
        appended: list[int] = []
        c = self.columns
        for row in rows:
            memory_id = row["id"]
            if memory_id in self.gone:
                continue
            p = self.pos.get(memory_id)
            if p is not None:
                if self.fields.content[p] == row["content"] and c.occ_us[p] == row["occ_us"]:
                    # Same words and time (a use counted, a fact superseded): change in place.
                    self._set_row(p, row)
                    taken += 1
                    continue
                self._retire(p)
            p = self.n
            self._reserve(1)
            self.n += 1
            self._set_row(p, row)
            c = self.columns  # `_reserve` may have grown it
            c.id_hi[p], c.id_lo[p] = (int(x[0]) for x in id_keys([memory_id]))
            for word in dict.fromkeys(row["lexemes"] or ()):
                w = self.vocab.get(word)
                if w is None:
                    w = self.vocab[word] = len(self.vocab)
                    self._postings.new()
                    self.df = np.append(self.df, 0)
                self._postings.add(w, p)
                self.df[w] += 1
            self.pos[memory_id] = p
            appended.append(p)
            taken += 1
        if appended:
            new = np.array(appended, dtype=np.int64)
            new = new[np.argsort(c.occ_us[new], kind="stable")]
            at = np.searchsorted(self.occ_sorted, c.occ_us[new], side="right")
            self.occ_sorted = np.insert(self.occ_sorted, at, c.occ_us[new])
            self.time_order = np.insert(self.time_order, at, new)
        for memory_id, _ in tombstones:
            self.gone.add(memory_id)
            p = self.pos.get(memory_id)
            if p is not None:
                self._retire(p)
        self.horizon = max(self.horizon, horizon)
        return taken

    def _retire(self, p: int) -> None:
        self.columns.alive[p] = False
        self.pos.pop(self.fields.ids[p], None)
        self._memories.pop(p, None)
        self.dead += 1

    # --- reading -----------------------------------------------------------------------------

    @property
    def docs(self) -> int:
        """Memories of the user held now (all companions, history included)."""
        return self.n - self.dead

    @property
    def nbytes(self) -> int:
        return int(self.vecs.nbytes) + self.columns.nbytes

    def scope(self, companion_id: uuid.UUID | None, include_assistant: bool) -> np.ndarray:
        """Rows a search may return: current, this companion's or shared, no companion replies
        unless asked for (the same rule as the SQL path)."""
        n, c = self.n, self.columns
        companion = c.companion[:n]
        mask = c.alive[:n] & ~c.superseded[:n]
        code = self._companions.get(companion_id, -1) if companion_id is not None else 0
        mask &= (companion == 0) | (companion == code) if code > 0 else (companion == 0)
        if not include_assistant:
            mask &= ~c.assistant[:n]
        return mask

    def similarities(self, query: np.ndarray) -> np.ndarray:
        """Dot product (cosine: vectors are normalized) of every position with `query`."""
        n = self.n
        out = np.zeros(n, dtype=np.float32)
        if not self.dim or query.shape[0] != self.dim:
            return out
        for start in range(0, n, _DOT_BLOCK):
            end = min(n, start + _DOT_BLOCK)
            np.dot(self.vecs[start:end], query, out=out[start:end])
        return out

    def word(self, lexeme: str) -> int | None:
        return self.vocab.get(lexeme)

    def postings(self, word: int) -> np.ndarray:
        return self._postings.get(word)

    def around(self, t_us: int, gap_us: int) -> np.ndarray:
        """Positions said within `gap_us` of `t_us` (either side, inclusive), oldest first."""
        lo = int(np.searchsorted(self.occ_sorted, t_us - gap_us, side="left"))
        hi = int(np.searchsorted(self.occ_sorted, t_us + gap_us, side="right"))
        return self.time_order[lo:hi]

    def memory(self, p: int) -> Memory:
        memory = self._memories.get(p)
        if memory is None:
            c, f = self.columns, self.fields
            source = f.source[p]
            if isinstance(source, str):
                source = json.loads(source)
            memory = self._memories[p] = Memory(
                id=f.ids[p],
                user_id=self.user_id,
                companion_id=self.companion_ids[int(c.companion[p])],
                kind=f.kind[p],
                speaker=f.speaker[p],
                category=f.category[p],
                key=f.key[p],
                value=f.value[p],
                content=f.content[p],
                importance=float(c.importance[p]),
                occurred_at=f.occurred_at[p],
                event_date=f.event_date[p],
                created_at=f.created_at[p],
                superseded_at=f.superseded_at[p],
                access_count=int(c.access[p]),
                last_accessed_at=f.last_accessed_at[p],
                source=dict(source or {}),
            )
        return memory


def day_number(when: date | datetime) -> int:
    """Days since 1970-01-01 (a datetime counts by its UTC date)."""
    if isinstance(when, datetime):
        when = when.date()
    return (when - date(1970, 1, 1)).days
