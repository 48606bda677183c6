"""Append-only JSON-lines files beside the spool, never replayed: writes the database refused
(`rejected.jsonl`), spool lines replay did not recognize (`set_aside.jsonl`), and the record of
erasures (`erasures.jsonl`).

Owner-only (0600), bounded in size and age: the oldest records past a bound are dropped and
the number dropped is returned, for the caller to report. Appends and rewrites hold an
exclusive `flock`, so processes sharing the directory never lose each other's lines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FILE_MODE = 0o600


def open_private(path: Path, flags: int) -> int:
    """Open (or create) `path` for this user only, tightening a file made with looser modes."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _locked(path: Path, flags: int) -> Iterator[int]:
    fd = open_private(path, flags)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


class KeptFile:
    """One append-only JSON-lines file of records, each with a time stamp under `stamp_key`.

    Args:
        path: the file (its directory must exist).
        stamp_key: the ISO time field of each record, used for the age bound.
        max_bytes: past this size, the oldest records are dropped (down to half of it).
        max_age: records older than this are dropped by `prune`.
    """

    def __init__(
        self, path: Path, *, stamp_key: str, max_bytes: int, max_age: timedelta
    ) -> None:
        self.path = path
        self._stamp_key = stamp_key
        self._max_bytes = max_bytes
        self._max_age = max_age

    def append(self, record: dict[str, Any]) -> int:
        """Add one record; returns how many old records the size bound dropped."""
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        with _locked(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd:
            os.write(fd, line)
            if os.fstat(fd).st_size <= self._max_bytes:
                return 0
            return self._rewrite(fd, lambda _line, _record: True, budget=self._max_bytes // 2)

    def records(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Every line, with its record (None for a line that is not a JSON object)."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return [(line, _record(line)) for line in text.splitlines() if line.strip()]

    def remove(self, matches: Callable[[str, dict[str, Any] | None], bool]) -> int:
        """Drop every record `matches` accepts; returns how many were dropped."""
        if not self.path.exists():
            return 0
        with _locked(self.path, os.O_RDWR | os.O_CREAT) as fd:
            return self._rewrite(fd, lambda line, record: not matches(line, record))

    def prune(self, now: datetime | None = None) -> int:
        """Drop records past the age bound (and past the size bound); returns how many."""
        if not self.path.exists():
            return 0
        oldest = (now or datetime.now(UTC)) - self._max_age

        def young(_line: str, record: dict[str, Any] | None) -> bool:
            stamp = _stamp(record, self._stamp_key)
            return stamp is None or stamp >= oldest

        with _locked(self.path, os.O_RDWR | os.O_CREAT) as fd:
            return self._rewrite(fd, young, budget=self._max_bytes)

    def _rewrite(
        self,
        fd: int,
        keep: Callable[[str, dict[str, Any] | None], bool],
        *,
        budget: int | None = None,
    ) -> int:
        """Rewrite the locked file in place with the kept lines (the newest within `budget`
        bytes); returns how many lines were dropped."""
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        lines = [ln for ln in b"".join(chunks).decode("utf-8", "replace").splitlines() if ln]
        kept = [ln for ln in lines if keep(ln, _record(ln))]
        if budget is not None:
            size, newest = 0, []
            for line in reversed(kept):
                size += len(line.encode("utf-8")) + 1
                if size > budget:
                    break
                newest.append(line)
            kept = newest[::-1]
        if len(kept) == len(lines):
            return 0
        data = "".join(line + "\n" for line in kept).encode("utf-8")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)
        return len(lines) - len(kept)


def _record(line: str) -> dict[str, Any] | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _stamp(record: dict[str, Any] | None, key: str) -> datetime | None:
    if record is None or not isinstance(record.get(key), str):
        return None
    try:
        moment = datetime.fromisoformat(record[key])
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
