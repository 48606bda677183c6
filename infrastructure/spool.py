"""The batcher's disk spool: writes that could not reach Postgres, kept as JSON lines.

Each spool file is complete before it becomes visible (written as a hidden `.part`, then
renamed), so a reader never sees half a file. A reader claims a file by renaming it to a name
only it knows; `rename` is atomic, so two processes starting at once never replay the same
file. Lines name a write kind, never SQL (`spool_codec`).

The files hold conversation text: the directory is 0700 and every file 0600 (also when they
were made with looser modes), and pending files are bounded in total size and age; what a
bound drops is counted and returned for the caller to report. Beside the pending files live
the kept files (`spool_kept`): refused writes, lines replay did not recognize, erasures.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from infrastructure.spool_codec import SpoolCodecError, SpoolEntry, dumps_entry, loads_entry
from infrastructure.spool_kept import FILE_MODE, KeptFile, open_private

logger = logging.getLogger(__name__)

SPOOL_PREFIX = "spool-"
SPOOL_SUFFIX = ".jsonl"
PART_SUFFIX = ".part"
CLAIM_MARK = ".claimed-"
REJECTED_FILE = "rejected.jsonl"
SET_ASIDE_FILE = "set_aside.jsonl"
ERASURES_FILE = "erasures.jsonl"
DIR_MODE = 0o700

# A claim or a half-written file this old belongs to a process that died while holding it.
STALE_AFTER_S = 600.0
DEFAULT_MAX_BYTES = 512 * 2**20
DEFAULT_KEPT_MAX_BYTES = 16 * 2**20
DEFAULT_MAX_AGE = timedelta(days=30)


@dataclass(frozen=True)
class BadLine:
    """A spool line that is not a write this process can run, and why."""

    line: str
    reason: str


@dataclass(frozen=True)
class ClaimedFile:
    """A spool file this process now owns: read it, write its entries, then `finish` it."""

    path: Path


class Spool:
    """A directory of JSON-lines files holding writes to retry later.

    All methods do blocking file I/O; call them through `asyncio.to_thread` on the event loop.

    Args:
        directory: where the files live; created (0700) on first use.
        max_bytes: total size of pending files; past it the oldest files are dropped.
        kept_max_bytes: size of each kept file (rejected, set aside).
        max_age: pending files and kept records older than this are dropped.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        kept_max_bytes: int = DEFAULT_KEPT_MAX_BYTES,
        max_age: timedelta = DEFAULT_MAX_AGE,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_age = max_age

        def kept(name: str, stamp_key: str) -> KeptFile:
            return KeptFile(
                directory / name, stamp_key=stamp_key, max_bytes=kept_max_bytes, max_age=max_age
            )

        self.rejected = kept(REJECTED_FILE, "rejected_at")
        self.set_aside = kept(SET_ASIDE_FILE, "set_aside_at")
        self.erasures = kept(ERASURES_FILE, "at")
        self._checked = False

    # --- the directory --------------------------------------------------------------------

    def ensure(self) -> Path:
        """The directory, created 0700; on first use also tightens an existing directory and
        its files to owner-only."""
        if self._checked and self.directory.is_dir():
            return self.directory
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        try:
            if stat.S_IMODE(self.directory.stat().st_mode) != DIR_MODE:
                os.chmod(self.directory, DIR_MODE)
            for path in self.directory.iterdir():
                if path.is_file() and path.stat().st_mode & 0o077:
                    os.chmod(path, FILE_MODE)
        except PermissionError:
            logger.error("spool directory has loose permissions this user cannot change")
        self._checked = True
        return self.directory

    # --- pending files ----------------------------------------------------------------------

    def write(self, entries: Sequence[SpoolEntry]) -> Path | None:
        """Write entries as one new file, visible only once complete and on disk."""
        if not entries:
            return None
        directory = self.ensure()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{SPOOL_PREFIX}{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SPOOL_SUFFIX}"
        return self._write_file(directory / name, [dumps_entry(e) for e in entries])

    def _write_file(self, final: Path, lines: Sequence[str]) -> Path:
        part = final.with_name(f".{final.name}{PART_SUFFIX}")
        fd = open_private(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, "".join(line + "\n" for line in lines).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(part, final)
        return final

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
        self.ensure()
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        now = time.time()
        claimed: list[ClaimedFile] = []
        for path in sorted(self.directory.iterdir()):
            source_name = _replayable_name(path, now)
            if source_name is None:
                continue
            target = self.directory / f"{source_name}{CLAIM_MARK}{token}"
            try:
                os.rename(path, target)
                # rename keeps the old mtime; refresh it so the claim does not look stale at once.
                os.utime(target)
            except FileNotFoundError:
                continue
            claimed.append(ClaimedFile(target))
        return claimed

    def read(self, claimed: ClaimedFile) -> tuple[list[SpoolEntry], list[BadLine]]:
        """Entries of a claimed file, and the lines that could not be decoded."""
        entries: list[SpoolEntry] = []
        bad: list[BadLine] = []
        for line in _lines(claimed.path):
            try:
                entries.append(loads_entry(line))
            except SpoolCodecError as exc:
                bad.append(BadLine(line, str(exc)))
        return entries, bad

    def finish(self, claimed: ClaimedFile) -> None:
        """Every entry was written, rejected, set aside or re-spooled: drop the file."""
        try:
            claimed.path.unlink()
        except FileNotFoundError:
            pass

    # --- one person's entries ---------------------------------------------------------------

    def erase_pending(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> int:
        """Remove the user's entries (of one companion, or all with None) from every pending
        file no other process holds; returns how many were removed."""
        erased = 0
        for claim in self.claim():
            source = claim.path.with_name(claim.path.name.split(CLAIM_MARK, 1)[0])
            kept: list[str] = []
            for line in _lines(claim.path):
                if belongs_to(line, user_id, companion_id):
                    erased += 1
                else:
                    kept.append(line)
            if kept:
                # The same name keeps the file's place in the replay order.
                self._write_file(source, kept)
            self.finish(claim)
        return erased

    def pending_of(self, user_id: uuid.UUID) -> list[SpoolEntry]:
        """The user's entries in pending files (not those claimed by a replay under way)."""
        found = []
        for path in self.pending_files():
            for line in _lines(path):
                if str(user_id) not in line:
                    continue
                try:
                    entry = loads_entry(line)
                except SpoolCodecError:
                    continue
                if entry.user_id == user_id:
                    found.append(entry)
        return found

    # --- bounds -------------------------------------------------------------------------------

    def prune(self) -> dict[str, int]:
        """Apply the age and size bounds; returns what each dropped (entries or records)."""
        dropped = {"pending": 0, "rejected": 0, "set_aside": 0}
        if not self.directory.is_dir():
            return dropped
        self.ensure()
        now = time.time()
        files = [(p, p.stat()) for p in self.pending_files()]
        total = sum(st.st_size for _, st in files)
        for path, st in files:  # oldest first
            too_old = now - st.st_mtime > self.max_age.total_seconds()
            if not too_old and total <= self.max_bytes:
                continue
            count = len(_lines(path))
            try:
                path.unlink()
            except FileNotFoundError:
                continue  # claimed by a replay meanwhile
            dropped["pending"] += count
            total -= st.st_size
        dropped["rejected"] = self.rejected.prune()
        dropped["set_aside"] = self.set_aside.prune()
        self.erasures.prune()
        return dropped

    # --- kept files ---------------------------------------------------------------------------

    def write_rejected(self, entry: SpoolEntry, error_type: str) -> int:
        """Keep a write the database refused for good, for a person to inspect; never replayed.
        Returns how many old records the size bound dropped."""
        self.ensure()
        record = json.loads(dumps_entry(entry))
        record.update(error=error_type, rejected_at=datetime.now(UTC).isoformat())
        return self.rejected.append(record)

    def write_set_aside(self, bad: BadLine) -> int:
        """Keep a spool line replay will not run; returns how many old records were dropped."""
        self.ensure()
        return self.set_aside.append(
            {"set_aside_at": datetime.now(UTC).isoformat(), "reason": bad.reason,
             "line": bad.line}
        )


def belongs_to(line: str, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> bool:
    """Whether a spool line is the user's (and of `companion_id`, unless None). A line that
    cannot be read counts as the user's when it mentions the user's id at all."""
    if str(user_id) not in line:
        return False
    try:
        entry = loads_entry(line)
    except SpoolCodecError:
        return True
    if entry.user_id is None:
        return True  # a line of the first format: it names the user somewhere
    if entry.user_id != user_id:
        return False
    return companion_id is None or entry.companion_id == companion_id


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def _replayable_name(path: Path, now: float) -> str | None:
    """The spool file name `path` stands for, when it may be claimed now."""
    name = path.name
    if name.startswith(SPOOL_PREFIX) and name.endswith(SPOOL_SUFFIX):
        return name
    if CLAIM_MARK in name:
        # Another process claimed it and died before finishing.
        return name.split(CLAIM_MARK, 1)[0] if _older_than(path, now, STALE_AFTER_S) else None
    if name.startswith("." + SPOOL_PREFIX) and name.endswith(PART_SUFFIX):
        # A writer died mid-file; its complete lines are still worth replaying.
        if not _older_than(path, now, STALE_AFTER_S):
            return None
        return name[1:].removesuffix(PART_SUFFIX)
    return None


def _older_than(path: Path, now: float, seconds: float) -> bool:
    try:
        return now - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False
