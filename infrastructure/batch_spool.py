"""The batcher's side of the disk spool: spooling queued writes, reading spooled ones back by
write kind, setting aside lines it does not recognize, the bounds, and one person's entries.

Replay runs only registered statements. A line is set aside (kept in `set_aside.jsonl`, never
run, logged and counted) when its op or version is unknown, its statement's fingerprint is not
the registered one's (SQL changed without a new version), its arguments do not fit the kind,
or its owner fields do not match its arguments. A line of a user whose data was erased after
the line was queued is dropped (the erasure is recorded on disk, so a process replaying a file
it claimed before the erasure drops it too).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from infrastructure.batch_writer import BatchItem, ops_of
from infrastructure.spool import BadLine, ClaimedFile, Spool, belongs_to
from infrastructure.spool_codec import SpoolCodecError, SpoolEntry, dumps_entry, encode_value
from infrastructure.write_kinds import WriteKind, WriteKinds

logger = logging.getLogger(__name__)

_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Erasure:
    """Every write of `user_id` (of `companion_id`, or all with None) queued before `at` is
    erased."""

    user_id: uuid.UUID
    companion_id: uuid.UUID | None
    at: datetime

    def covers(self, user_id: uuid.UUID | None, companion_id: uuid.UUID | None,
               at: datetime | None) -> bool:
        if user_id != self.user_id:
            return False
        if self.companion_id is not None and companion_id != self.companion_id:
            return False
        return at is None or at <= self.at


def resolve(entry: SpoolEntry, kinds: WriteKinds) -> tuple[WriteKind | None, str]:
    """The registered kind a spooled entry may run as, or None and why not."""
    if entry.version is None:
        kind = kinds.by_digest(entry.op, entry.digest)
        missing = "a statement of the first spool format that is not registered"
    else:
        kind = kinds.find(entry.op, entry.version)
        missing = f"version {entry.version} of the op is not registered"
    if kind is None:
        return None, missing if kinds.current(entry.op) is not None else "unknown op"
    if kind.digest != entry.digest:
        return None, "the registered statement differs (changed without a new version)"
    mismatch = kind.mismatch(entry.args)
    if mismatch is not None:
        return None, f"arguments do not fit: {mismatch}"
    if entry.version is not None and kind.owner(entry.args) != (entry.user_id, entry.companion_id):
        return None, "its user or companion does not match its arguments"
    return kind, ""


class BatchSpool:
    """Spools, reads back, bounds and erases; keeps the spool's counters for `stats()`.

    Args:
        spool: the spool directory.
        kinds: the batcher's registered write kinds.
    """

    def __init__(self, spool: Spool, kinds: WriteKinds) -> None:
        self.spool = spool
        self._kinds = kinds
        self._erasures: list[Erasure] = []
        self._erasures_seen = (0, 0)
        self.counters = {
            "spooled": 0, "replayed": 0, "set_aside": 0, "spool_dropped": 0, "erased": 0,
            "lost": 0,
        }
        self.last_error: str | None = None

    # --- writing --------------------------------------------------------------------------------

    async def write(self, items: Sequence[BatchItem]) -> bool:
        """Spool `items` (blocking I/O in a thread); False when the disk would not take them."""
        if not items:
            return True
        try:
            await asyncio.to_thread(self.spool.write, [i.entry() for i in items])
        except (OSError, SpoolCodecError) as exc:
            return self._failed(items, exc, lost=False)
        self._spooled(items)
        return True

    def write_now(self, items: Sequence[BatchItem]) -> bool:
        """Spool from sync or cancelled code paths (blocks briefly); counts what is lost."""
        if not items:
            return True
        try:
            self.spool.write([i.entry() for i in items])
        except (OSError, SpoolCodecError) as exc:
            return self._failed(items, exc, lost=True)
        self._spooled(items)
        return True

    def _spooled(self, items: Sequence[BatchItem]) -> None:
        self.counters["spooled"] += len(items)
        logger.warning("batcher spooled %s writes to disk (ops=%s)", len(items), ops_of(items))

    def _failed(self, items: Sequence[BatchItem], exc: BaseException, *, lost: bool) -> bool:
        self.last_error = type(exc).__name__
        if lost:
            self.counters["lost"] += len(items)
        logger.error(
            "batcher could not spool %s writes (%s, ops=%s)%s",
            len(items), type(exc).__name__, ops_of(items), "; they are lost" if lost else "",
        )
        return False

    # --- reading back ---------------------------------------------------------------------------

    async def claim(self) -> list[ClaimedFile]:
        return await asyncio.to_thread(self.spool.claim)

    async def read(self, claim: ClaimedFile, now: float) -> list[BatchItem]:
        """The runnable writes of a claimed file; the rest is set aside and reported."""
        entries, bad = await asyncio.to_thread(self.spool.read, claim)
        items: list[BatchItem] = []
        for entry in entries:
            kind, reason = resolve(entry, self._kinds)
            if kind is None:
                bad.append(BadLine(dumps_entry(entry), f"{reason} (op {entry.op})"))
                continue
            # A line without a time (first format) counts as older than any erasure.
            items.append(BatchItem(kind, entry.args, now, entry.at or _LONG_AGO))
        if bad:
            await asyncio.to_thread(self._set_aside, bad)
        return items

    def _set_aside(self, bad: Sequence[BadLine]) -> None:
        dropped = 0
        for line in bad:
            dropped += self.spool.write_set_aside(line)
        self.counters["set_aside"] += len(bad)
        self.last_error = "SpoolLineSetAside"
        reasons = sorted({line.reason for line in bad})
        logger.error(
            "batcher set aside %s spool lines it will not run (kept in %s): %s",
            len(bad), self.spool.set_aside.path.name, "; ".join(reasons)[:500],
        )
        self._report_dropped({"set_aside": dropped})

    async def finish(self, claim: ClaimedFile) -> None:
        await asyncio.to_thread(self.spool.finish, claim)

    # --- bounds ---------------------------------------------------------------------------------

    async def prune(self) -> None:
        """Apply the spool's size and age bounds; whatever they drop is reported."""
        try:
            dropped = await asyncio.to_thread(self.spool.prune)
        except OSError as exc:
            self.last_error = type(exc).__name__
            logger.error("batcher could not prune its spool (%s)", type(exc).__name__)
            return
        self._report_dropped(dropped)

    def _report_dropped(self, dropped: dict[str, int]) -> None:
        for what, count in dropped.items():
            if count:
                self.counters["spool_dropped"] += count
                logger.error(
                    "batcher dropped %s %s spool records past the spool's size or age bound "
                    "(BATCH_SPOOL_MAX_BYTES, BATCH_KEPT_MAX_BYTES, BATCH_SPOOL_MAX_AGE_DAYS)",
                    count, what,
                )

    # --- one person's entries -------------------------------------------------------------------

    def is_erased(self, item: BatchItem) -> bool:
        """Whether `item` belongs to a user whose writes were erased after it was queued."""
        user_id, companion_id = item.kind.owner(item.args)
        return user_id is not None and any(
            e.covers(user_id, companion_id, item.at) for e in self._erasures
        )

    def note_erasure(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> Erasure:
        """From now on, no write of the user queued before now is replayed by this process."""
        erasure = Erasure(user_id, companion_id, datetime.now(UTC))
        self._erasures.append(erasure)
        return erasure

    async def erase(self, erasure: Erasure) -> int:
        """Record the erasure on disk (for other processes' replays), then remove the user's
        entries from the pending, rejected and set-aside files; returns how many."""
        return await asyncio.to_thread(self._erase_files, erasure)

    def _erase_files(self, erasure: Erasure) -> int:
        spool = self.spool
        spool.ensure()
        spool.erasures.append({
            "user": str(erasure.user_id),
            "companion": str(erasure.companion_id) if erasure.companion_id else None,
            "at": erasure.at.isoformat(),
        })
        user_id, companion_id = erasure.user_id, erasure.companion_id
        count = spool.erase_pending(user_id, companion_id)
        count += spool.rejected.remove(lambda line, _r: belongs_to(line, user_id, companion_id))
        count += spool.set_aside.remove(
            lambda _line, r: r is not None
            and belongs_to(str(r.get("line", "")), user_id, companion_id)
        )
        self.counters["erased"] += count
        return count

    async def export(self, user_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
        """The user's pending, refused and set-aside entries, JSON-safe."""
        return await asyncio.to_thread(self._export_files, user_id)

    def _export_files(self, user_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
        spool = self.spool
        pending = [self.describe(e) for e in spool.pending_of(user_id)]
        rejected = [
            record for line, record in spool.rejected.records()
            if record is not None and belongs_to(line, user_id, None)
        ]
        set_aside = [
            record for _line, record in spool.set_aside.records()
            if record is not None and belongs_to(str(record.get("line", "")), user_id, None)
        ]
        return {"pending": pending, "rejected": rejected, "set_aside": set_aside}

    def describe(self, entry: SpoolEntry | BatchItem) -> dict[str, Any]:
        """An entry for an export: its kind, when it was queued, its values by name."""
        kind: WriteKind | None = (
            entry.kind if isinstance(entry, BatchItem) else resolve(entry, self._kinds)[0]
        )
        op = entry.op
        named: dict[str, Any] = (
            kind.named(entry.args) if kind is not None
            else {f"${i + 1}": v for i, v in enumerate(entry.args)}
        )
        return {
            "op": op,
            "queued_at": entry.at.isoformat() if entry.at is not None else None,
            "values": {name: _exported(v) for name, v in named.items()},
        }

    async def refresh_erasures(self) -> None:
        """Learn the erasures other processes recorded since the last look."""
        await asyncio.to_thread(self._load_erasures)

    def _load_erasures(self) -> None:
        try:
            st = self.spool.erasures.path.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._erasures_seen:
            return
        self._erasures_seen = stamp
        records = self.spool.erasures.records()
        known = set(self._erasures)
        for _line, record in records:
            if record is None:
                continue
            try:
                companion = record.get("companion")
                erasure = Erasure(
                    uuid.UUID(record["user"]),
                    uuid.UUID(companion) if companion else None,
                    datetime.fromisoformat(record["at"]),
                )
            except (KeyError, TypeError, ValueError):
                continue
            if erasure not in known:
                known.add(erasure)
                self._erasures.append(erasure)


def _exported(value: Any) -> Any:
    """A value as an export shows it: vectors by their size (they are derived from the text),
    everything else as the spool codec writes it."""
    if hasattr(value, "shape") and getattr(value, "ndim", 0) == 1:
        return {"vector_dimensions": int(value.shape[0])}
    return encode_value(value)
