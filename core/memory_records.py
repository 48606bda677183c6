"""Rows of `memories` as values: the `Memory` and `Episode` data classes and how text compares.

`MEMORY_COLUMNS` is the select list every reader uses with `Memory.from_record`; the normalizers
decide when two keys or two texts count as the same (supersession, dedupe).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg

SPEAKERS = ("user", "assistant", "system")
MEMORY_COLUMNS = (
    "id, user_id, companion_id, kind, speaker, category, key, value, content, importance, "
    "occurred_at, event_date, created_at, superseded_at, access_count, last_accessed_at, source"
)
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize_key(raw: str) -> str:
    """Keys compare without case, spacing or punctuation: "Favorite Food" == "favorite_food"."""
    text = unicodedata.normalize("NFKC", raw).casefold()
    return re.sub(r"[\W_]+", "_", text).strip("_")


def normalize_text(text: str) -> str:
    """The form two texts are compared in: case, punctuation and spacing do not count."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def content_hash(text: str) -> str:
    """Hash of the normalized text, so near-identical turns ("OK." / "ok") dedupe."""
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()[:32]


def explicit_content(key: str, value: str) -> str:
    """The searchable sentence an explicit memory is stored as: "favorite food: sushi"."""
    return f"{key.replace('_', ' ')}: {value}"


@dataclass(frozen=True)
class Memory:
    """One row of `memories`, explicit or episodic.

    Attributes:
        kind: 'explicit' (category/key/value) or 'episodic' (a logged turn).
        speaker: who said it; 'assistant' rows are the companion's own replies, never facts
            about the user.
        content: the searchable text ("favorite food: sushi", or the turn itself).
        event_date: the day the memory is about, when it names one.
        superseded_at: set once a newer value of the same key replaced this one.
        source: where it came from (session, message ids, "tool", "consolidation").
    """

    id: uuid.UUID
    user_id: uuid.UUID
    companion_id: uuid.UUID | None
    kind: str
    speaker: str
    category: str | None
    key: str | None
    value: str | None
    content: str
    importance: float
    occurred_at: datetime
    event_date: date | None
    created_at: datetime
    superseded_at: datetime | None
    access_count: int
    last_accessed_at: datetime | None
    source: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, row: asyncpg.Record | dict[str, Any]) -> Memory:
        """Build from a row selected with `MEMORY_COLUMNS` (jsonb arrives as text)."""
        source = row["source"]
        if isinstance(source, str):
            source = json.loads(source)
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            companion_id=row["companion_id"],
            kind=row["kind"],
            speaker=row["speaker"],
            category=row["category"],
            key=row["key"],
            value=row["value"],
            content=row["content"],
            importance=float(row["importance"]),
            occurred_at=row["occurred_at"],
            event_date=row["event_date"],
            created_at=row["created_at"],
            superseded_at=row["superseded_at"],
            access_count=int(row["access_count"]),
            last_accessed_at=row["last_accessed_at"],
            source=dict(source or {}),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (ids and times as strings) for caches and exports."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if isinstance(value, uuid.UUID | datetime | date):
                out[name] = str(value) if isinstance(value, uuid.UUID) else value.isoformat()
            else:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Memory:
        def opt_uuid(v: str | None) -> uuid.UUID | None:
            return uuid.UUID(v) if v else None

        def opt_dt(v: str | None) -> datetime | None:
            return datetime.fromisoformat(v) if v else None

        return cls(
            id=uuid.UUID(data["id"]),
            user_id=uuid.UUID(data["user_id"]),
            companion_id=opt_uuid(data["companion_id"]),
            kind=data["kind"],
            speaker=data["speaker"],
            category=data["category"],
            key=data["key"],
            value=data["value"],
            content=data["content"],
            importance=float(data["importance"]),
            occurred_at=datetime.fromisoformat(data["occurred_at"]),
            event_date=date.fromisoformat(data["event_date"]) if data["event_date"] else None,
            created_at=datetime.fromisoformat(data["created_at"]),
            superseded_at=opt_dt(data["superseded_at"]),
            access_count=int(data["access_count"]),
            last_accessed_at=opt_dt(data["last_accessed_at"]),
            source=dict(data["source"] or {}),
        )


@dataclass(frozen=True)
class Episode:
    """One turn to import in bulk (benchmarks, migrations): who said what, and when."""

    speaker: str
    text: str
    occurred_at: datetime
    source: dict[str, Any] = field(default_factory=dict)
