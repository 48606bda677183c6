"""Coalesces background writes into few round trips, retries them, and never loses them.

Callers `register` an idempotent statement once and `enqueue` argument tuples off the critical
path. A tracked flush loop writes the queue every `batch_flush_interval_ms` (or as soon as
`batch_max_size` items wait), each batch through the `BatchWriter` (one transaction, retries,
refused items set aside in `rejected.jsonl`). A batch that still fails for a transient reason
goes to the disk spool and is replayed at the next `start()` (or once the database is healthy
again).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from core.config import Settings
from core.errors import InvalidInput
from infrastructure.batch_writer import BatchItem, BatchWriter, ops_of
from infrastructure.connection_pool import ConnectionPool
from infrastructure.db_errors import error_name
from infrastructure.spool import Spool, SpoolCodecError, SpoolEntry, check_spoolable

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Past this many waiting items, new ones go to disk instead of memory.
DEFAULT_HIGH_WATER = 50_000
# How soon after a spill this process tries its own spool files again once writes succeed.
RESPOOL_REPLAY_INTERVAL_S = 30.0

_PLACEHOLDER = re.compile(r"\$(\d+)")


class DatabaseBatcher:
    """Write-behind queue over the shared pool, with retries, a disk spool and stats.

    Call `enqueue` from the event loop's thread. Statements must be idempotent (an insert with
    `ON CONFLICT DO NOTHING` on a client-generated uuid, or an upsert): a retried or replayed
    batch may reach the database twice.

    Args:
        pool: the shared connection pool.
        settings: `batch_max_size`, `batch_flush_interval_ms`, `batch_max_attempts` and
            `batch_spool_dir` are used.
        high_water: queue length past which new items are spooled instead of kept in memory.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        settings: Settings,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> None:
        self._settings = settings
        self._spool = Spool(settings.batch_spool_dir)
        self._writer = BatchWriter(
            pool=pool,
            spool=self._spool,
            max_attempts=settings.batch_max_attempts,
            on_error=self._note_error,
        )
        self._high_water = max(high_water, settings.batch_max_size)
        self._statements: dict[str, tuple[str, int]] = {}
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
        self._spooled = 0
        self._replayed = 0
        self._lost = 0
        self._last_error: str | None = None

    # --- public API --------------------------------------------------------------------------

    def register(self, op: str, sql: str) -> None:
        """Name an idempotent statement taking $1..$n; enqueue() then sends its arguments."""
        if not op or not isinstance(op, str):
            raise InvalidInput("batch op names must be non-empty strings")
        known = self._statements.get(op)
        if known is not None and known[0] != sql:
            raise InvalidInput(
                f"batch op {op!r} is already registered with another statement",
                suggestion="register each op once, or give the new statement its own name",
            )
        arity = max((int(n) for n in _PLACEHOLDER.findall(sql)), default=0)
        self._statements[op] = (sql, arity)

    def enqueue(self, op: str, args: tuple[Any, ...]) -> None:
        """Queue one write; O(1), never blocks, never raises for database trouble.

        Raises:
            InvalidInput: the op is not registered, or the arguments do not fit it (bugs in the
                caller, which no retry could fix).
        """
        statement = self._statements.get(op)
        if statement is None:
            raise InvalidInput(
                f"batch op {op!r} is not registered",
                suggestion="call batcher.register(op, sql) at start-up",
            )
        sql, arity = statement
        if len(args) != arity:
            raise InvalidInput(
                f"batch op {op!r} takes {arity} arguments, got {len(args)}",
                suggestion="pass one value per $n placeholder",
            )
        try:
            check_spoolable(args)
        except SpoolCodecError as exc:
            raise InvalidInput(
                f"batch op {op!r}: {exc}",
                suggestion="pass str/int/float/bool/None, UUID, datetime/date, or a vector",
            ) from None
        item = BatchItem(op, sql, tuple(args), time.monotonic())
        self._enqueued += 1
        if self._state == "closed":
            logger.warning("batcher is closed; spooling a late write (op=%s)", op)
            self._spool_sync([item])
            return
        if len(self._queue) >= self._high_water:
            self._overflow.append(item)
            self._schedule_overflow_spool()
            return
        self._queue.append(item)
        if len(self._queue) >= self._settings.batch_max_size:
            self._wake.set()

    async def start(self) -> None:
        """Start the flush loop, then replay what earlier runs left in the spool."""
        if self._state != "new":
            return
        self._state = "running"
        self._task = asyncio.create_task(self._run(), name="database-batcher-flush-loop")
        await self._replay()

    async def flush(self) -> None:
        """Write everything queued so far and wait for it (spilled overflow goes to disk)."""
        await self._flush_pending()
        await self._settle_overflow()

    async def aclose(self) -> None:
        """Stop the loop and drain everything, including items enqueued while draining."""
        if self._state == "closed":
            return
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
            self._spool_sync(leftovers)
            raise
        finally:
            # No await between the last emptiness check and this: later enqueues see "closed".
            self._state = "closed"
        logger.info(
            "batcher closed (written=%s, spooled=%s, rejected=%s)",
            self._writer.written, self._spooled, self._writer.rejected,
        )

    def stats(self) -> dict[str, Any]:
        """Counters since construction; no values, only counts, op count and an error type.

        round_trips counts every statement sent (retries included); failures counts writes or
        batches that failed for good (then spooled, or split up and the bad item rejected);
        rejected counts items the database refused (kept in rejected.jsonl); replayed counts
        items read back from the spool; lost counts items neither database nor disk would take.
        """
        writer = self._writer
        oldest_ms = 0.0
        if self._queue:
            oldest_ms = round((time.monotonic() - self._queue[0].enqueued_at) * 1000, 1)
        return {
            "state": self._state,
            "registered_ops": len(self._statements),
            "items_enqueued": self._enqueued,
            "items_written": writer.written,
            "flushes": writer.flushes,
            "round_trips": writer.round_trips,
            "round_trips_saved": max(0, writer.written - writer.round_trips),
            "retries": writer.retries,
            "failures": writer.failures,
            "rejected": writer.rejected,
            "spooled": self._spooled,
            "replayed": self._replayed,
            "lost": self._lost,
            "queue_depth": len(self._queue),
            "overflow_depth": len(self._overflow),
            "oldest_item_age_ms": oldest_ms,
            "last_error": self._last_error,
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

    # --- writing -----------------------------------------------------------------------------

    async def _write_items(self, items: list[BatchItem]) -> None:
        """Write, reject or spool every item; the caller holds the lock."""
        try:
            unwritten = await self._writer.write(items)
        except asyncio.CancelledError:
            # A shutdown timeout must not lose what was in flight; replays are idempotent.
            self._spool_sync(items)
            raise
        if unwritten:
            await self._spool_or_keep(unwritten)

    def _note_error(self, name: str) -> None:
        self._last_error = name

    # --- spool -------------------------------------------------------------------------------

    async def _spool_items(self, items: Sequence[BatchItem]) -> bool:
        entries = [SpoolEntry(i.op, i.sql, i.args) for i in items]
        try:
            await asyncio.to_thread(self._spool.write, entries)
        except (OSError, SpoolCodecError) as exc:
            self._last_error = type(exc).__name__
            logger.error(
                "batcher could not spool %s writes (%s, ops=%s)",
                len(items), type(exc).__name__, ops_of(items),
            )
            return False
        self._spooled += len(items)
        self._spooled_since_replay = True
        logger.warning("batcher spooled %s writes to disk (ops=%s)", len(items), ops_of(items))
        return True

    async def _spool_or_keep(self, items: list[BatchItem]) -> None:
        if await self._spool_items(items):
            return
        if self._state == "running" or self._state == "new":
            # Neither database nor disk took them: keep them in memory for the next flush.
            self._queue.extendleft(reversed(items))
            return
        self._lost += len(items)
        logger.error("batcher is closing and lost %s writes (ops=%s)", len(items), ops_of(items))

    def _spool_sync(self, items: Sequence[BatchItem]) -> None:
        """Last-resort spooling from sync or cancelled code paths (blocks briefly)."""
        if not items:
            return
        try:
            self._spool.write([SpoolEntry(i.op, i.sql, i.args) for i in items])
        except (OSError, SpoolCodecError) as exc:
            self._lost += len(items)
            self._last_error = type(exc).__name__
            logger.error(
                "batcher lost %s writes (%s, ops=%s)", len(items), type(exc).__name__, ops_of(items)
            )
            return
        self._spooled += len(items)
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
            if not await self._spool_items(items):
                self._queue.extend(items)  # memory over loss; the queue is past its mark
                return

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
        """Write back every spool file this process can claim; each file goes to one process."""
        self._last_replay = time.monotonic()
        self._spooled_since_replay = False
        try:
            claimed = await asyncio.to_thread(self._spool.claim)
        except OSError as exc:
            self._last_error = type(exc).__name__
            logger.error("batcher could not read its spool directory (%s)", type(exc).__name__)
            return
        total = 0
        for claim in claimed:
            entries, corrupt = await asyncio.to_thread(self._spool.read, claim)
            if corrupt:
                self._last_error = "SpoolCodecError"
                logger.error("batcher skipped %s unreadable spool lines; file kept aside", corrupt)
            now = time.monotonic()
            items = [BatchItem(e.op, e.sql, e.args, now) for e in entries]
            self._replayed += len(items)
            total += len(items)
            size = self._settings.batch_max_size
            for start in range(0, len(items), size):
                async with self._lock:
                    await self._write_items(items[start:start + size])
            await asyncio.to_thread(self._spool.finish, claim, corrupt=corrupt > 0)
        if claimed:
            logger.info("batcher replayed %s writes from %s spool files", total, len(claimed))
