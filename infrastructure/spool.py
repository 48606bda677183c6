"""The batcher's disk spool: writes that could not reach Postgres, kept as JSON lines.

Each spool file is complete before it becomes visible (written as a hidden `.part`, then
renamed), so a reader never sees half a file. A reader claims a file by renaming it to a name
only it knows; `rename` is atomic, so two processes starting at once never replay the same
file. Values keep their Python types through a small type-tagged codec.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPOOL_PREFIX = "spool-"
SPOOL_SUFFIX = ".jsonl"
PART_SUFFIX = ".part"
CLAIM_MARK = ".claimed-"
CORRUPT_SUFFIX = ".corrupt"
REJECTED_FILE = "rejected.jsonl"

# A claim or a half-written file this old belongs to a process that died while holding it.
STALE_AFTER_S = 600.0


class SpoolCodecError(ValueError):
    """A value the codec cannot represent, or a line that is not a valid spool entry."""


def encode_value(value: Any) -> Any:
    """Turn one statement argument into JSON-safe data, tagging types JSON lacks."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    # datetime is a subclass of date, so it must be tested first.
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, dtime):
        return {"$time": value.isoformat()}
    if isinstance(value, timedelta):
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        return {"$ndarray": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return encode_value(value.item())
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode_value(v) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise SpoolCodecError("only dicts with str keys can be spooled")
        return {"$dict": {k: encode_value(v) for k, v in value.items()}}
    raise SpoolCodecError(f"cannot spool a value of type {type(value).__name__}")


def decode_value(data: Any) -> Any:
    """Inverse of `encode_value`."""
    if isinstance(data, list):
        return [decode_value(v) for v in data]
    if not isinstance(data, dict):
        return data
    # Every JSON object the encoder writes is a tag; plain dicts travel inside "$dict".
    try:
        if "$uuid" in data:
            return uuid.UUID(data["$uuid"])
        if "$datetime" in data:
            return datetime.fromisoformat(data["$datetime"])
        if "$date" in data:
            return date.fromisoformat(data["$date"])
        if "$time" in data:
            return dtime.fromisoformat(data["$time"])
        if "$timedelta" in data:
            days, seconds, micros = data["$timedelta"]
            return timedelta(days=days, seconds=seconds, microseconds=micros)
        if "$decimal" in data:
            return Decimal(data["$decimal"])
        if "$bytes" in data:
            return base64.b64decode(data["$bytes"])
        if "$ndarray" in data:
            return np.array(data["$ndarray"], dtype=np.dtype(data["dtype"]))
        if "$tuple" in data:
            return tuple(decode_value(v) for v in data["$tuple"])
        if "$dict" in data:
            return {k: decode_value(v) for k, v in data["$dict"].items()}
    except (TypeError, ValueError, KeyError) as exc:
        raise SpoolCodecError(f"malformed tagged value ({type(exc).__name__})") from None
    raise SpoolCodecError("unknown tag in spooled value")


def check_spoolable(args: Sequence[Any]) -> None:
    """Cheap up-front check (top level only) so a write that must be spooled later can be."""
    for value in args:
        if not isinstance(value, _SPOOLABLE_TYPES):
            raise SpoolCodecError(f"cannot spool a value of type {type(value).__name__}")


_SPOOLABLE_TYPES = (
    type(None), bool, str, int, float, uuid.UUID, date, dtime, timedelta, Decimal, bytes,
    bytearray, memoryview, np.ndarray, np.generic, list, tuple, dict,
)


@dataclass(frozen=True)
class SpoolEntry:
    """One write: the op name (for logs and stats), the statement it was made for, its args."""

    op: str
    sql: str
    args: tuple[Any, ...]


def dumps_entry(entry: SpoolEntry) -> str:
    return json.dumps(
        {
            "v": FORMAT_VERSION,
            "op": entry.op,
            "sql": entry.sql,
            "args": [encode_value(a) for a in entry.args],
        },
        separators=(",", ":"),
    )


def loads_entry(line: str) -> SpoolEntry:
    try:
        data = json.loads(line)
        if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION:
            raise SpoolCodecError("unsupported spool line version")
        op, sql, args = data["op"], data["sql"], data["args"]
        if not isinstance(op, str) or not isinstance(sql, str) or not isinstance(args, list):
            raise SpoolCodecError("spool line has the wrong shape")
    except (json.JSONDecodeError, KeyError) as exc:
        raise SpoolCodecError(f"unreadable spool line ({type(exc).__name__})") from None
    return SpoolEntry(op=op, sql=sql, args=tuple(decode_value(a) for a in args))


@dataclass(frozen=True)
class ClaimedFile:
    """A spool file this process now owns: read it, write its entries, then `finish` it."""

    path: Path


class Spool:
    """A directory of JSON-lines files holding writes to retry later.

    All methods do blocking file I/O; call them through `asyncio.to_thread` on the event loop.

    Args:
        directory: where the files live; created on first write.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, entries: Sequence[SpoolEntry]) -> Path | None:
        """Write entries as one new file, visible only once complete and on disk."""
        if not entries:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{SPOOL_PREFIX}{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SPOOL_SUFFIX}"
        final = self.directory / name
        part = self.directory / f".{name}{PART_SUFFIX}"
        lines = "".join(dumps_entry(e) + "\n" for e in entries)
        with open(part, "w", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(part, final)
        return final

    def write_rejected(self, entry: SpoolEntry, error_type: str) -> None:
        """Keep a write the database refused for good, for a person to inspect; never replayed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        record = json.loads(dumps_entry(entry))
        record["error"] = error_type
        record["rejected_at"] = datetime.now(UTC).isoformat()
        # One write() per line in append mode keeps concurrent writers' lines whole.
        with open(self.directory / REJECTED_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")

    def pending_files(self) -> list[Path]:
        """Spool files waiting to be replayed (not claimed by anyone)."""
        if not self.directory.is_dir():
            return []
        return sorted(
            p for p in self.directory.iterdir()
            if p.name.startswith(SPOOL_PREFIX) and p.name.endswith(SPOOL_SUFFIX)
        )

    def claim(self) -> list[ClaimedFile]:
        """Take ownership of every replayable file; files another process got first are skipped."""
        if not self.directory.is_dir():
            return []
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        now = time.time()
        claimed: list[ClaimedFile] = []
        for path in sorted(self.directory.iterdir()):
            name = path.name
            if name.startswith(SPOOL_PREFIX) and name.endswith(SPOOL_SUFFIX):
                source_name = name
            elif CLAIM_MARK in name and not name.endswith(CORRUPT_SUFFIX):
                # Another process claimed it and died before finishing.
                if not _older_than(path, now, STALE_AFTER_S):
                    continue
                source_name = name.split(CLAIM_MARK, 1)[0]
            elif name.startswith("." + SPOOL_PREFIX) and name.endswith(PART_SUFFIX):
                # A writer died mid-file; its complete lines are still worth replaying.
                if not _older_than(path, now, STALE_AFTER_S):
                    continue
                source_name = name[1:].removesuffix(PART_SUFFIX)
            else:
                continue
            target = self.directory / f"{source_name}{CLAIM_MARK}{token}"
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue
            # rename keeps the old mtime; refresh it so the claim does not look stale at once.
            try:
                os.utime(target)
            except FileNotFoundError:
                continue
            claimed.append(ClaimedFile(target))
        return claimed

    def read(self, claimed: ClaimedFile) -> tuple[list[SpoolEntry], int]:
        """Entries of a claimed file and the number of lines that could not be decoded."""
        entries: list[SpoolEntry] = []
        corrupt = 0
        try:
            text = claimed.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return [], 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                entries.append(loads_entry(line))
            except SpoolCodecError:
                corrupt += 1
        return entries, corrupt

    def finish(self, claimed: ClaimedFile, *, corrupt: bool) -> None:
        """Every entry was written, rejected or re-spooled: drop the file (or keep it aside)."""
        try:
            if corrupt:
                os.rename(claimed.path, claimed.path.with_name(claimed.path.name + CORRUPT_SUFFIX))
            else:
                claimed.path.unlink()
        except FileNotFoundError:
            pass


def _older_than(path: Path, now: float, seconds: float) -> bool:
    try:
        return now - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False
