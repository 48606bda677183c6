"""The columns of the in-process index (`local_index.UserIndex`), one entry per position.

`Columns` holds what searching reads, as numpy arrays that grow together; `RowFields` holds the
rest of each row, as lists, for building the few `Memory` objects a search returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

# `Columns.eday` of a memory that names no day.
NO_DAY = -(2**31)

Bool = npt.NDArray[np.bool_]
Int32 = npt.NDArray[np.int32]
Int64 = npt.NDArray[np.int64]
UInt64 = npt.NDArray[np.uint64]
Float64 = npt.NDArray[np.float64]


@dataclass
class Columns:
    """What searching reads of each position, one numpy array per field.

    Arrays are `capacity` long; positions past the index's `n` are unused.

    Attributes:
        alive: not retired (a newer version or a delete replaced it).
        has_vec: holds a stored embedding (in `UserIndex.vecs`).
        occ_us / occ: when it was said, epoch microseconds / seconds.
        eday: its event date as days since 1970-01-01, `NO_DAY` when it names none.
        companion: its companion as a small integer (0 = shared at the user level).
        explicit / assistant / superseded: a saved fact; the companion's own reply; replaced.
        session: its conversation as a small integer, -1 when unknown.
        importance / access: the stored priors.
        dl: its length in words (ties in keyword ranking break on it, as in SQL).
        id_hi / id_lo: its id as two sortable integers.
    """

    alive: Bool
    has_vec: Bool
    occ_us: Int64
    occ: Float64
    eday: Int32
    companion: Int32
    explicit: Bool
    assistant: Bool
    superseded: Bool
    session: Int32
    importance: Float64
    access: Float64
    dl: Int32
    id_hi: UInt64
    id_lo: UInt64

    @classmethod
    def zeros(cls, capacity: int) -> Columns:
        def of(dtype: type[np.generic]) -> npt.NDArray[Any]:
            return np.zeros(capacity, dtype=dtype)

        return cls(
            alive=of(np.bool_), has_vec=of(np.bool_), occ_us=of(np.int64), occ=of(np.float64),
            eday=of(np.int32), companion=of(np.int32), explicit=of(np.bool_),
            assistant=of(np.bool_), superseded=of(np.bool_), session=of(np.int32),
            importance=of(np.float64), access=of(np.float64), dl=of(np.int32),
            id_hi=of(np.uint64), id_lo=of(np.uint64),
        )

    def grown(self, capacity: int, used: int) -> Columns:
        """The same columns `capacity` long, holding the first `used` positions."""
        arrays: dict[str, npt.NDArray[Any]] = {}
        for column in fields(self):
            old: npt.NDArray[Any] = getattr(self, column.name)
            arrays[column.name] = np.zeros(capacity, dtype=old.dtype)
            arrays[column.name][:used] = old[:used]
        return replace(self, **arrays)

    @property
    def nbytes(self) -> int:
        return sum(int(getattr(self, column.name).nbytes) for column in fields(self))


@dataclass
class RowFields:
    """What a `Memory` needs beyond the columns, one list per field, as long as the index."""

    ids: list[uuid.UUID] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    speaker: list[str] = field(default_factory=list)
    category: list[str | None] = field(default_factory=list)
    key: list[str | None] = field(default_factory=list)
    value: list[str | None] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    occurred_at: list[datetime] = field(default_factory=list)
    event_date: list[date | None] = field(default_factory=list)
    created_at: list[datetime] = field(default_factory=list)
    superseded_at: list[datetime | None] = field(default_factory=list)
    last_accessed_at: list[datetime | None] = field(default_factory=list)
    # jsonb, as text or already decoded.
    source: list[str | dict[str, Any] | None] = field(default_factory=list)

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]]) -> RowFields:
        """From loaded rows, in position order."""
        return cls(**{name: [r[key] for r in rows] for name, key in _ROW_KEYS})

    def put(self, p: int, row: Mapping[str, Any]) -> None:
        """Set position `p` (the next new one, or one that exists) from `row`."""
        for name, key in _ROW_KEYS:
            values: list[Any] = getattr(self, name)
            if p == len(values):
                values.append(row[key])
            else:
                values[p] = row[key]


# (field, column of the loaded row) for each of `RowFields`.
_ROW_KEYS = tuple(
    (column.name, "id" if column.name == "ids" else column.name) for column in fields(RowFields)
)
