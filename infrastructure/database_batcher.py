"""Coalesces background writes into few round trips, retries them, and never loses them.

Callers `register` a write kind (an idempotent statement with a name, a version and typed
parameters) once and `enqueue` argument tuples off the critical path. A tracked flush loop
writes the queue every `batch_flush_interval_ms` (or as soon as `batch_max_size` items wait),
each batch through the `BatchWriter` (one transaction, retries, refused items kept in
`rejected.jsonl`). A batch that still fails for a transient reason goes to the disk spool and
is replayed, by kind, at the next `start()` (or once the database is healthy again). A write
the caller must be sure of while the database is away (a person's forget) goes straight to the
spool with `spool`.

At the end of a job `finish_by(deadline)` bounds every write, the one under way included, so
that what the database has not taken in time is spooled before the process is killed.
`erase_user` and `export_user` cover one person's pending writes, in memory and on disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from core.config import Settings
from core.deadline import Deadline
from core.errors import InvalidInput, StorageUnavailable
from infrastructure.batch_spool import BatchSpool
from infrastructure.batch_writer import BatchItem, BatchWriter, ops_of
from infrastructure.connection_pool import TRY_AGAIN, ConnectionPool
from infrastructure.db_errors import error_name
from infrastructure.spool import Spool
from infrastructure.write_kinds import WriteKind, WriteKinds

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Past this many waiting items, new ones go to disk instead of memory.
DEFAULT_HIGH_WATER = 50_000
# How soon after a spill this process tries its own spool files again once writes succeed.
RESPOOL_REPLAY_INTERVAL_S = 30.0
# At the end of a job (`finish_by`), the time kept after the last write attempt (and after the
# job's other work) to write what the database did not take to disk.
SPOOL_RESERVE_S = 1.0


class DatabaseBatcher:
    """Write-behind queue over the shared pool, with retries, a disk spool and stats.

    Call `enqueue` from the event loop's thread. Statements must be idempotent (an insert with
    `ON CONFLICT DO NOTHING` on a client-generated uuid, or an upsert): a retried or replayed
    batch may reach the database twice.

    Args:
        pool: the shared connection pool.
        settings: `batch_max_size`, `batch_flush_interval_ms`, `batch_max_attempts`, the
            spool's directory and bounds (`batch_spool_*`, `batch_kept_max_bytes`), and
            `db_command_timeout_s` (how long `erase_user` waits for a batch under way).
        high_water: queue length past which new items are spooled instead of kept in memory.
    """

    spool_reserve_s = SPOOL_RESERVE_S

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        settings: Settings,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> None:
        self._settings = settings
        self._kinds = WriteKinds()
        spool = Spool(
            settings.batch_spool_dir,
            max_bytes=settings.batch_spool_max_bytes,
            kept_max_bytes=settings.batch_kept_max_bytes,
            max_age=timedelta(days=settings.batch_spool_max_age_days),
        )
        self._spool = BatchSpool(spool, self._kinds)
        self._writer = BatchWriter(
            pool=pool,
            spool=spool,
            max_attempts=settings.batch_max_attempts,
            on_error=self._note_error,
        )
        self._high_water = max(high_water, settings.batch_max_size)
        self._queue: deque[BatchItem] = deque()
        self._overflow: list[BatchItem] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._overflow_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._state = "new"
        self._taken = 0
        self._spooled_since_replay = False
        self._last_replay = 0.0
        self._enqueued = 0
        self._last_error: str | None = None

    # --- public API --------------------------------------------------------------------------

    def register(self, kind: WriteKind, *, older: Sequence[WriteKind] = ()) -> None:
        """Accept writes of `kind`; `older` versions of it are only ever replayed (lines spooled
        before an upgrade). Registering the same kind again changes nothing.

        Raises:
            InvalidInput: the op is registered with another statement or version.
        """
        self._kinds.register(kind, older=older)

    def enqueue(self, op: str, args: tuple[Any, ...]) -> None:
        """Queue one write; O(1), never blocks, never raises for database trouble.

        Raises:
            InvalidInput: the op is not registered, or the arguments do not fit its parameters
                (bugs in the caller, which no retry could fix).
        """
        item = self._item(op, args)
        self._enqueued += 1
        if self._state == "closed":
            logger.warning("batcher is closed; spooling a late write (op=%s)", op)
            self._spool.write_now([item])
            return
        if len(self._queue) >= self._high_water:
            self._overflow.append(item)
            self._schedule_overflow_spool()
            return
        self._queue.append(item)
        if len(self._queue) >= self._settings.batch_max_size:
            self._wake.set()

    async def spool(
        self,
        op: str,
        args: tuple[Any, ...],
        *,
        then: Sequence[tuple[str, tuple[Any, ...]]] = (),
    ) -> None:
        """Put one write straight in the spool (on disk, synced), replayed once the database
        is back: for a write the caller has to be sure of now while the database is away (a
        person's "forget"). Erasures cover it like any spooled write.

        Args:
            then: writes (op, args) that belong with it: kept in the same spool write, or
                not at all, and replayed with it.

        Raises:
            InvalidInput: as `enqueue`.
            StorageUnavailable: the disk did not take it; nothing was kept.
        """
        items = [self._item(op, args), *(self._item(o, a) for o, a in then)]
        self._enqueued += len(items)
        if not await self._spool.write(items):
            raise StorageUnavailable(
                "the write could not be kept on disk either", suggestion=TRY_AGAIN
            )
        self._spooled_since_replay = True

    def _item(self, op: str, args: tuple[Any, ...]) -> BatchItem:
        kind = self._kinds.current(op)
        if kind is None:
            raise InvalidInput(
                f"batch op {op!r} is not registered",
                suggestion="call batcher.register(WriteKind.of(...)) at start-up",
            )
        mismatch = kind.mismatch(args)
        if mismatch is not None:
            raise InvalidInput(
                f"batch op {op!r} {mismatch}",
                suggestion="pass one value of the declared type per $n placeholder",
            )
        return BatchItem(kind, tuple(args), time.monotonic(), datetime.now(UTC))

    async def start(self) -> None:
        """Start the flush loop, then apply the spool's bounds and replay what earlier runs
        left in it (register every kind first: lines of unknown kinds are set aside)."""
        if self._state != "new":
            return
        self._state = "running"
        self._task = asyncio.create_task(self._run(), name="database-batcher-flush-loop")
        await self._spool.prune()
        await self._replay()

    def finish_by(self, deadline: Deadline) -> None:
        """The job ends at `deadline`: from now on every write, the one under way included,
        ends `spool_reserve_s` before it; what is not written by then, or once a write has
        failed, is spooled. (Work that queues writes should end by then too.)"""
        self._writer.cut_off(deadline.earlier(self.spool_reserve_s))

    async def flush(self) -> None:
        """Write (or, past `finish_by`'s cutoff, spool) everything queued so far and wait for
        it; spilled overflow goes to disk."""
        await self._flush_pending()
        await self._settle_overflow()

    async def aclose(self, deadline: Deadline | None = None) -> None:
        """Stop the loop and drain everything, including items enqueued while draining; with
        `deadline`, what is not written `spool_reserve_s` before it is spooled."""
        if self._state == "closed":
            return
        if deadline is not None:
            self.finish_by(deadline)
        self._state = "closing"
        self._wake.set()
        try:
            if self._task is not None and not self._task.done():
                await asyncio.wait([self._task])
            while self._queue or self._overflow or self._background:
                async with self._lock:
                    while self._queue:
                        await self._write_next_batch()
                await self._settle_overflow()
                if self._background:
                    await asyncio.wait(set(self._background))
        except asyncio.CancelledError:
            leftovers = [*self._queue, *self._overflow]
            self._queue.clear()
            self._overflow.clear()
            self._spool.write_now(leftovers)
            raise
        finally:
            # No await between the last emptiness check and this: later enqueues see "closed".
            self._state = "closed"
        counters = self._spool.counters
        logger.info(
            "batcher closed (written=%s, spooled=%s, rejected=%s, lost=%s)",
            self._writer.written, counters["spooled"], self._writer.rejected, counters["lost"],
        )

    async def erase_user(self, user_id: uuid.UUID, *, companion_id: uuid.UUID | None = None) -> int:
        """Erase the user's pending writes (of one companion, or all with None): the queued
        ones, the spooled ones, the refused and set-aside ones; returns how many.

        From the call on, no write of the user queued before it is written or replayed by
        this process, and other processes' replays drop them too. Returns once a batch under
        way has ended (written or spooled), so a delete the caller runs next comes after it.

        Raises:
            StorageUnavailable: a batch under way did not end within DB_COMMAND_TIMEOUT_S
                (nothing queued is written meanwhile; call again).
        """
        erasure = self._spool.note_erasure(user_id, companion_id)
        count = self._drop_queued(erasure.covers)
        try:
            async with asyncio.timeout(self._settings.db_command_timeout_s), self._lock:
                # A failed batch may have come back to the queue meanwhile.
                count += self._drop_queued(erasure.covers)
        except TimeoutError:
            raise StorageUnavailable(
                "pending writes are still being sent to the database", suggestion=TRY_AGAIN
            ) from None
        task = self._overflow_task
        if task is not None and not task.done():
            await asyncio.wait([task])
        count += await self._spool.erase(erasure)
        logger.info("batcher erased %s pending writes of one user", count)
        return count

    async def export_user(self, user_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
        """The user's writes not in the database: queued in memory, spooled, refused by the
        database, set aside by a replay. JSON-safe; vectors appear by their size."""
        queued = [
            self._spool.describe(item) for item in [*self._queue, *self._overflow]
            if item.kind.owner(item.args)[0] == user_id
        ]
        return {"queued": queued, **await self._spool.export(user_id)}

    def stats(self) -> dict[str, Any]:
        """Counters since construction; no values, only counts, op count and an error type.

        round_trips counts every statement sent (retries included); failures counts writes or
        batches that failed for good (then spooled, or split up and the bad item rejected);
        rejected counts items the database refused (kept in rejected.jsonl); replayed counts
        items read back from the spool; set_aside counts spool lines replay would not run
        (kept in set_aside.jsonl); spool_dropped counts records past the spool's bounds;
        erased counts pending writes erased for a user; lost counts items neither database nor
        disk would take.
        """
        writer = self._writer
        oldest_ms = 0.0
        if self._queue:
            oldest_ms = round((time.monotonic() - self._queue[0].enqueued_at) * 1000, 1)
        spool_dropped = self._spool.counters["spool_dropped"] + writer.dropped
        return {
            "state": self._state,
            "registered_ops": len(self._kinds),
            "items_enqueued": self._enqueued,
            "items_written": writer.written,
            "flushes": writer.flushes,
            "round_trips": writer.round_trips,
            "round_trips_saved": max(0, writer.written - writer.round_trips),
            "retries": writer.retries,
            "failures": writer.failures,
            "rejected": writer.rejected,
            **self._spool.counters,
            "spool_dropped": spool_dropped,
            "queue_depth": len(self._queue),
            "overflow_depth": len(self._overflow),
            "oldest_item_age_ms": oldest_ms,
            "last_error": self._last_error or self._spool.last_error,
        }

    # --- flush loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        interval = self._settings.batch_flush_interval_ms / 1000
        while self._state == "running":
            try:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=interval)
                except TimeoutError:
                    pass
                self._wake.clear()
                if self._state != "running":
                    break
                await self._flush_pending()
                if self._replay_due():
                    await self._replay()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # One bad flush must not end background writing for the rest of the process.
                self._last_error = error_name(exc)
                logger.exception("batcher flush loop iteration failed; continuing")
                await asyncio.sleep(interval)

    def _replay_due(self) -> bool:
        return (
            self._spooled_since_replay
            and self._writer.healthy
            and not self._writer.cut
            and not self._queue
            and time.monotonic() - self._last_replay >= RESPOOL_REPLAY_INTERVAL_S
        )

    async def _flush_pending(self) -> None:
        async with self._lock:
            # Bounded: items arriving during this flush wait for the next one.
            target = self._taken + len(self._queue)
            while self._queue and self._taken < target:
                await self._write_next_batch()

    async def _write_next_batch(self) -> None:
        count = min(self._settings.batch_max_size, len(self._queue))
        items = [self._queue.popleft() for _ in range(count)]
        self._taken += count
        await self._write_items(items)

    def _drop_queued(
        self, erased: Callable[[uuid.UUID | None, uuid.UUID | None, datetime | None], bool]
    ) -> int:
        """Take out of memory every queued item `erased(user, companion, at)` accepts."""
        before = len(self._queue) + len(self._overflow)

        def keep(item: BatchItem) -> bool:
            user_id, companion_id = item.kind.owner(item.args)
            return not erased(user_id, companion_id, item.at)

        self._queue = deque(i for i in self._queue if keep(i))
        self._overflow = [i for i in self._overflow if keep(i)]
        dropped = before - len(self._queue) - len(self._overflow)
        self._spool.counters["erased"] += dropped
        return dropped

    # --- writing -----------------------------------------------------------------------------

    async def _write_items(self, items: list[BatchItem]) -> None:
        """Write, reject or spool every item; the caller holds the lock."""
        if not items:
            return
        if self._writer.cut:
            # Past the job's cutoff, or the database failed during shutdown: the time left is
            # for the disk.
            await self._spool_or_keep(items)
            return
        try:
            unwritten = await self._writer.write(items)
        except asyncio.CancelledError:
            # A shutdown timeout must not lose what was in flight; replays are idempotent.
            self._spool_now(items)
            raise
        if unwritten:
            await self._spool_or_keep(unwritten)

    def _note_error(self, name: str) -> None:
        self._last_error = name

    # --- spool -------------------------------------------------------------------------------

    async def _spool_or_keep(self, items: list[BatchItem]) -> None:
        if await self._spool.write(items):
            self._spooled_since_replay = True
            return
        if self._state == "running" or self._state == "new":
            # Neither database nor disk took them: keep them in memory for the next flush.
            self._queue.extendleft(reversed(items))
            return
        self._spool.counters["lost"] += len(items)
        logger.error("batcher is closing and lost %s writes (ops=%s)", len(items), ops_of(items))

    def _spool_now(self, items: Sequence[BatchItem]) -> None:
        """Last-resort spooling from sync or cancelled code paths (blocks briefly)."""
        if self._spool.write_now(items):
            self._spooled_since_replay = True

    def _schedule_overflow_spool(self) -> None:
        if self._overflow_task is not None and not self._overflow_task.done():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: flush(), start() or aclose() spool it
        self._overflow_task = self._track(self._spool_overflow())

    async def _settle_overflow(self) -> None:
        """Spool the overflow now and wait for a spill already under way."""
        await self._spool_overflow()
        task = self._overflow_task
        if task is not None and not task.done():
            await asyncio.wait([task])

    async def _spool_overflow(self) -> None:
        while self._overflow:
            items, self._overflow = self._overflow, []
            if not await self._spool.write(items):
                self._queue.extend(items)  # memory over loss; the queue is past its mark
                return
            self._spooled_since_replay = True

    def _track(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self._last_error = type(exc).__name__
            logger.error("batcher background task failed (%s)", type(exc).__name__)

    async def _replay(self) -> None:
        """Write back every spool file this process can claim; each file goes to one process.
        Only registered statements run; unrecognized lines are set aside and reported."""
        self._last_replay = time.monotonic()
        self._spooled_since_replay = False
        try:
            claimed = await self._spool.claim()
        except OSError as exc:
            self._last_error = type(exc).__name__
            logger.error("batcher could not read its spool directory (%s)", type(exc).__name__)
            return
        total = 0
        for claim in claimed:
            await self._spool.refresh_erasures()
            items = await self._spool.read(claim, time.monotonic())
            size = self._settings.batch_max_size
            for start in range(0, len(items), size):
                await self._spool.refresh_erasures()
                async with self._lock:
                    # An erasure may have come while the previous chunk was written.
                    chunk = [i for i in items[start:start + size] if not self._erased(i)]
                    self._spool.counters["replayed"] += len(chunk)
                    total += len(chunk)
                    await self._write_items(chunk)
            await self._spool.finish(claim)
        if claimed:
            logger.info("batcher replayed %s writes from %s spool files", total, len(claimed))

    def _erased(self, item: BatchItem) -> bool:
        if self._spool.is_erased(item):
            self._spool.counters["erased"] += 1
            return True
        return False
