"""Writes one batch of queued statements to Postgres, for the `DatabaseBatcher`.

One transaction per batch, one `executemany` per statement. Transient database trouble is
retried with exponential backoff and jitter; a batch the database refuses for good (a
constraint violation) is written one by one, so only the bad item is set aside, in
`rejected.jsonl`. What still fails for a transient reason goes back to the caller to spool.

Given a cutoff (`cut_off`, at shutdown), every write ends by it, the one under way included,
and no retry starts that could not finish in time: the caller spools what is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from asyncpg.exceptions import _base as asyncpg_base
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from core.deadline import Deadline
from core.errors import StorageUnavailable
from infrastructure.connection_pool import ConnectionPool
from infrastructure.db_errors import error_name, is_transient
from infrastructure.spool import Spool
from infrastructure.spool_codec import SpoolCodecError, SpoolEntry
from infrastructure.write_kinds import WriteKind

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_INITIAL_S = 0.05
RETRY_MAX_S = 2.0
RETRY_JITTER_S = 0.1

_Groups = dict[WriteKind, list[tuple[Any, ...]]]


class BatchItem(NamedTuple):
    """One queued write: its kind, its arguments, and when it was queued (on the monotonic
    clock for the queue's age, and in UTC for the spool)."""

    kind: WriteKind
    args: tuple[Any, ...]
    enqueued_at: float
    at: datetime

    @property
    def op(self) -> str:
        return self.kind.op

    def entry(self) -> SpoolEntry:
        """The item as the spool keeps it: its kind by name and version, never its SQL."""
        user_id, companion_id = self.kind.owner(self.args)
        return SpoolEntry(
            op=self.kind.op, version=self.kind.version, digest=self.kind.digest,
            args=self.args, user_id=user_id, companion_id=companion_id, at=self.at,
        )


def ops_of(items: Sequence[BatchItem]) -> str:
    """The ops in `items`, for logs (never the arguments: they hold user data)."""
    return ",".join(sorted({i.op for i in items}))


def _broken(conn: Any) -> StorageUnavailable:
    # asyncpg reports a session killed mid-statement (server shutdown) as InternalClientError
    # and may leave the connection looking usable; drop it so the pool opens a fresh one.
    conn.terminate()
    return StorageUnavailable("database connection broke mid-write")


class _ShuttingDown(stop_base):
    """No retry once the job is ending: a failed write there goes to the spool while there is
    time (the next job replays it), instead of waiting out a backoff."""

    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._writer.cutoff is not None


class BatchWriter:
    """Writes batches with retries and keeps the write counters.

    Args:
        pool: the shared connection pool.
        spool: where refused writes are kept (`rejected.jsonl`).
        max_attempts: attempts per batch while the database is healthy (BATCH_MAX_ATTEMPTS).
        on_error: called with the type name of every error, for the batcher's `last_error`.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        spool: Spool,
        max_attempts: int,
        on_error: Callable[[str], None],
    ) -> None:
        self._pool = pool
        self._spool = spool
        self._max_attempts = max_attempts
        self._on_error = on_error
        self.healthy = True
        self.written = 0
        self.flushes = 0
        self.round_trips = 0
        self.retries = 0
        self.failures = 0
        self.rejected = 0
        self.dropped = 0
        self.cutoff: Deadline | None = None
        self._in_flight: set[asyncio.Timeout] = set()

    def cut_off(self, deadline: Deadline) -> None:
        """From now on every write ends by `deadline`, the one under way included; a write
        that fails is not retried (the caller spools)."""
        if self.cutoff is not None and self.cutoff.at <= deadline.at:
            return
        self.cutoff = deadline
        for attempt in self._in_flight:
            attempt.reschedule(deadline.loop_time())

    @property
    def cut(self) -> bool:
        """Shutting down and the cutoff has passed, or a write failed since (no time for
        another try): nothing more is sent; the caller spools."""
        return self.cutoff is not None and (self.cutoff.passed or not self.healthy)

    @asynccontextmanager
    async def _attempt(self) -> AsyncIterator[None]:
        when = self.cutoff.loop_time() if self.cutoff is not None else None
        async with asyncio.timeout_at(when) as attempt:
            self._in_flight.add(attempt)
            try:
                yield
            finally:
                self._in_flight.discard(attempt)

    async def write(self, items: list[BatchItem]) -> list[BatchItem]:
        """Write or reject every item; return the ones a transient failure left unwritten."""
        groups: _Groups = {}
        for item in items:
            groups.setdefault(item.kind, []).append(item.args)
        attempts = self._attempts()
        try:
            await self._retrying(self._execute_groups, groups, attempts=attempts)
        except Exception as exc:
            self.failures += 1
            name = error_name(exc)
            self._on_error(name)
            if is_transient(exc):
                self.healthy = False
                logger.error(
                    "batcher gave up on %s writes after %s attempts (%s, ops=%s); spooling",
                    len(items), attempts, name, ops_of(items),
                )
                return items
            logger.warning(
                "batch of %s writes refused (%s, ops=%s); writing them one by one",
                len(items), name, ops_of(items),
            )
            return await self._write_one_by_one(items)
        self.healthy = True
        self.flushes += 1
        self.written += len(items)
        return []

    async def _execute_groups(self, groups: _Groups) -> None:
        async with self._attempt(), self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    for kind, rows in groups.items():
                        self.round_trips += 1
                        await conn.executemany(kind.sql, rows)
            except asyncpg_base.InternalClientError:
                raise _broken(conn) from None

    async def _execute_one(self, item: BatchItem) -> None:
        async with self._attempt(), self._pool.acquire() as conn:
            try:
                self.round_trips += 1
                await conn.execute(item.kind.sql, *item.args)
            except asyncpg_base.InternalClientError:
                raise _broken(conn) from None

    async def _write_one_by_one(self, items: list[BatchItem]) -> list[BatchItem]:
        for index, item in enumerate(items):
            attempts = self._attempts()
            try:
                await self._retrying(self._execute_one, item, attempts=attempts)
            except Exception as exc:
                self.failures += 1
                name = error_name(exc)
                self._on_error(name)
                if is_transient(exc):
                    self.healthy = False
                    rest = items[index:]
                    logger.error(
                        "batcher gave up on %s writes after %s attempts (%s, ops=%s); spooling",
                        len(rest), attempts, name, ops_of(rest),
                    )
                    return rest
                await self._reject(item, exc)
            else:
                self.written += 1
        return []

    async def _reject(self, item: BatchItem, exc: BaseException) -> None:
        self.rejected += 1
        cause = exc.__cause__ if isinstance(exc, StorageUnavailable) else exc
        # Constraint names are schema, not user data; the message and detail may hold values.
        logger.warning(
            "batcher: database refused a write (op=%s, error=%s, constraint=%s); kept in %s",
            item.op, error_name(exc), getattr(cause, "constraint_name", None),
            "rejected.jsonl",
        )
        try:
            self.dropped += await asyncio.to_thread(
                self._spool.write_rejected, item.entry(), error_name(exc)
            )
        except (OSError, SpoolCodecError) as write_exc:
            logger.error(
                "batcher could not keep a refused write (op=%s, %s)",
                item.op, type(write_exc).__name__,
            )

    def _attempts(self) -> int:
        """Full retries while the database is healthy; once a batch has used them all up and
        nothing has been written since, one attempt per batch, then the spool. Otherwise a
        long queue (a drain at shutdown) would wait out the whole backoff once per batch and
        outlast the shutdown deadline with its writes still in memory."""
        return self._max_attempts if self.healthy else 1

    async def _retrying(
        self, fn: Callable[..., Awaitable[T]], *args: Any, attempts: int
    ) -> T:
        retryer = AsyncRetrying(
            stop=stop_after_attempt(attempts) | _ShuttingDown(self),
            wait=wait_exponential_jitter(
                multiplier=RETRY_INITIAL_S, max=RETRY_MAX_S, jitter=RETRY_JITTER_S
            ),
            retry=retry_if_exception(is_transient),
            before_sleep=self._count_retry,
            reraise=True,
        )
        return await retryer(fn, *args)

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1
        if state.outcome is not None and state.outcome.failed:
            exc = state.outcome.exception()
            if exc is not None:
                self._on_error(error_name(exc))
        logger.debug("batcher retrying a write (attempt %s)", state.attempt_number)
