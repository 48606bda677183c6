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

from core.memory_records import Memory
from rag_system.batch import id_keys, matrix_from_sent

NO_DAY = -(2**31)
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
        dead: retired positions (a full reload drops them).
    """

    _ARRAYS = {
        "alive": bool, "has_vec": bool, "occ_us": np.int64, "occ": np.float64,
        "eday": np.int32, "companion": np.int32, "explicit": bool, "assistant": bool,
        "superseded": bool, "session": np.int32, "importance": np.float64,
        "access": np.float64, "dl": np.int32, "id_hi": np.uint64,
        "id_lo": np.uint64,
    }
    _LISTS = ("ids", "occurred_at", "event_date", "created_at", "superseded_at",
              "last_accessed_at", "kind", "speaker", "category", "key", "value", "content",
              "source")

    def __init__(self, user_id: uuid.UUID, horizon: int) -> None:
        self.user_id = user_id
        self.horizon = horizon
        self.loaded_at = time.monotonic()
        self.used_at = self.loaded_at
        self.n = 0
        self.dead = 0
        self.dim = 0
        self._cap = 0
        for name, dtype in self._ARRAYS.items():
            setattr(self, name, np.zeros(0, dtype=dtype))
        self.vecs = np.zeros((0, 0), dtype=np.float32)
        for name in self._LISTS:
            setattr(self, name, [])
        self.companion_ids: list[uuid.UUID | None] = [None]
        self._companions: dict[uuid.UUID | None, int] = {None: 0}
        self._sessions: dict[str, int] = {}
        self.vocab: dict[str, int] = {}
        self.df = np.zeros(0, dtype=np.int64)
        self._postings = _Postings()
        self.pos: dict[uuid.UUID, int] = {}
        self.gone: set[uuid.UUID] = set()
        self.time_order = np.zeros(0, dtype=np.int64)
        self.occ_sorted = np.zeros(0, dtype=np.int64)
        self._memories: dict[int, Memory] = {}
        # One sync at a time: `apply` relies on each read being newer than the last.
        self.sync_lock = asyncio.Lock()

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

        def column(name: str) -> list[Any]:
            return [r[name] for r in rows]

        vecs = column("vec")
        if any(v is not None for v in vecs):
            matrix = matrix_from_sent(vecs)
            index._ensure_dim(matrix.shape[1])
            index.vecs[:n] = matrix
        index.has_vec[:n] = [v is not None for v in vecs]
        index.alive[:n] = True
        occ_us = np.array(column("occ_us"), dtype=np.int64)
        index.occ_us[:n] = occ_us
        index.occ[:n] = occ_us / 1e6
        index.eday[:n] = [NO_DAY if d is None else d for d in column("eday")]
        index.companion[:n] = [index._code(c) for c in column("companion_id")]
        index.explicit[:n] = [k == "explicit" for k in column("kind")]
        index.assistant[:n] = [s == "assistant" for s in column("speaker")]
        index.superseded[:n] = [s is not None for s in column("superseded_at")]
        sessions = index._sessions
        index.session[:n] = [
            -1 if not s else sessions.setdefault(s, len(sessions)) for s in column("session")
        ]
        index.importance[:n] = column("importance")
        index.access[:n] = column("access_count")
        index.dl[:n] = [d or 0 for d in column("dl")]
        for name in cls._LISTS:
            getattr(index, name)[:n] = column("id" if name == "ids" else name)
        index.pos = {memory_id: p for p, memory_id in enumerate(index.ids[:n])}
        if n:
            index.id_hi[:n], index.id_lo[:n] = id_keys(index.ids[:n])
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
        for name in self._ARRAYS:
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)
        vecs = np.zeros((cap, self.dim), dtype=np.float32)
        vecs[: self.n] = self.vecs[: self.n]
        self.vecs = vecs
        for name in self._LISTS:
            getattr(self, name).extend([None] * (cap - len(getattr(self, name))))
        self._cap = cap

    def _ensure_dim(self, dim: int) -> None:
        if dim == self.dim:
            return
        if self.dim and self.has_vec[: self.n].any():
            # A different model's vectors: the old ones are not comparable any more.
            self.has_vec[: self.n] = False
        self.dim = dim
        self.vecs = np.zeros((self._cap, dim), dtype=np.float32)

    def _code(self, companion_id: uuid.UUID | None) -> int:
        code = self._companions.get(companion_id)
        if code is None:
            code = self._companions[companion_id] = len(self.companion_ids)
            self.companion_ids.append(companion_id)
        return code

    def _set_row(self, p: int, row: Mapping[str, Any], *, with_vector: bool = True) -> None:
        self.alive[p] = True
        self.occ_us[p] = row["occ_us"]
        self.occ[p] = row["occ_us"] / 1e6
        self.eday[p] = NO_DAY if row["eday"] is None else row["eday"]
        self.companion[p] = self._code(row["companion_id"])
        self.explicit[p] = row["kind"] == "explicit"
        self.assistant[p] = row["speaker"] == "assistant"
        self.superseded[p] = row["superseded_at"] is not None
        session = row["session"]
        self.session[p] = (
            -1 if not session else self._sessions.setdefault(session, len(self._sessions))
        )
        self.importance[p] = row["importance"]
        self.access[p] = row["access_count"]
        self.dl[p] = row["dl"] or 0
        for name in self._LISTS:
            getattr(self, name)[p] = row[name] if name != "ids" else row["id"]
        if with_vector:
            raw = row["vec"]
            if raw is None:
                self.has_vec[p] = False
                if self.dim:
                    self.vecs[p] = 0.0
            else:
                vector = matrix_from_sent([raw])[0]
                self._ensure_dim(vector.shape[0])
                self.vecs[p] = vector
                self.has_vec[p] = True
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
        for row in rows:
            memory_id = row["id"]
            if memory_id in self.gone:
                continue
            p = self.pos.get(memory_id)
            if p is not None:
                if self.content[p] == row["content"] and self.occ_us[p] == row["occ_us"]:
                    # Same words and time (a use counted, a fact superseded): change in place.
                    self._set_row(p, row)
                    taken += 1
                    continue
                self._retire(p)
            p = self.n
            self._reserve(1)
            self.n += 1
            self._set_row(p, row)
            self.id_hi[p], self.id_lo[p] = (int(x[0]) for x in id_keys([memory_id]))
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
            new = new[np.argsort(self.occ_us[new], kind="stable")]
            at = np.searchsorted(self.occ_sorted, self.occ_us[new], side="right")
            self.occ_sorted = np.insert(self.occ_sorted, at, self.occ_us[new])
            self.time_order = np.insert(self.time_order, at, new)
        for memory_id, _ in tombstones:
            self.gone.add(memory_id)
            p = self.pos.get(memory_id)
            if p is not None:
                self._retire(p)
        self.horizon = max(self.horizon, horizon)
        return taken

    def _retire(self, p: int) -> None:
        self.alive[p] = False
        self.pos.pop(self.ids[p], None)
        self._memories.pop(p, None)
        self.dead += 1

    # --- reading -----------------------------------------------------------------------------

    @property
    def docs(self) -> int:
        """Memories of the user held now (all companions, history included)."""
        return self.n - self.dead

    @property
    def nbytes(self) -> int:
        return int(self.vecs.nbytes + sum(getattr(self, a).nbytes for a in self._ARRAYS))

    def scope(self, companion_id: uuid.UUID | None, include_assistant: bool) -> np.ndarray:
        """Rows a search may return: current, this companion's or shared, no companion replies
        unless asked for (the same rule as the SQL path)."""
        n = self.n
        companion = self.companion[:n]
        mask = self.alive[:n] & ~self.superseded[:n]
        code = self._companions.get(companion_id, -1) if companion_id is not None else 0
        mask &= (companion == 0) | (companion == code) if code > 0 else (companion == 0)
        if not include_assistant:
            mask &= ~self.assistant[:n]
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
            source = self.source[p]
            if isinstance(source, str):
                source = json.loads(source)
            memory = self._memories[p] = Memory(
                id=self.ids[p],
                user_id=self.user_id,
                companion_id=self.companion_ids[int(self.companion[p])],
                kind=self.kind[p],
                speaker=self.speaker[p],
                category=self.category[p],
                key=self.key[p],
                value=self.value[p],
                content=self.content[p],
                importance=float(self.importance[p]),
                occurred_at=self.occurred_at[p],
                event_date=self.event_date[p],
                created_at=self.created_at[p],
                superseded_at=self.superseded_at[p],
                access_count=int(self.access[p]),
                last_accessed_at=self.last_accessed_at[p],
                source=dict(source or {}),
            )
        return memory


def day_number(when: date | datetime) -> int:
    """Days since 1970-01-01 (a datetime counts by its UTC date)."""
    if isinstance(when, datetime):
        when = when.date()
    return (when - date(1970, 1, 1)).days
