"""The engine's in-process indexes: loading, keeping them current, and a memory budget.

A user's index is loaded in the background (at session start through `RetrievalEngine.warm`,
or on a first search, which meanwhile uses SQL) unless the user holds more rows than
`max_rows`. Each search then makes one round trip (`sync`): the changes since the index's
horizon, the tombstones of deleted rows, and the stems of query words not seen before.
Indexes past the row budget, idle for long, or too old are dropped or reloaded. Before an
index is searched it takes in the process's notes of forgotten memories (`core.forgotten`):
a forgotten id is retired at once, and an index taken before the person was erased is dropped,
even while Postgres cannot be asked what changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from core.forgotten import ForgottenMemories
from core.latency import LatencyWindow
from core.tasks import BackgroundTasks
from infrastructure.connection_pool import ConnectionPool
from rag_system.local_index import UserIndex
from rag_system.pooled import run_released

logger = logging.getLogger(__name__)

# More changed rows than this (a bulk import) are not taken in on a search: the index is
# reloaded in the background and the search goes to SQL meanwhile.
SYNC_MAX_ROWS = 1_000

# (name, type, expression over `m`) of what the index keeps of a row.
_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("id", "uuid", "m.id"),
    ("rev", "bigint", "m.rev::text::bigint"),
    ("companion_id", "uuid", "m.companion_id"),
    ("kind", "text", "m.kind"),
    ("speaker", "text", "m.speaker"),
    ("category", "text", "m.category"),
    ("key", "text", "m.key"),
    ("value", "text", "m.value"),
    ("content", "text", "m.content"),
    ("importance", "real", "m.importance"),
    ("occurred_at", "timestamptz", "m.occurred_at"),
    ("occ_us", "bigint", "(extract(epoch from m.occurred_at) * 1000000)::bigint"),
    ("event_date", "date", "m.event_date"),
    ("eday", "integer", "(m.event_date - date '1970-01-01')"),
    ("created_at", "timestamptz", "m.created_at"),
    ("superseded_at", "timestamptz", "m.superseded_at"),
    ("access_count", "integer", "m.access_count"),
    ("last_accessed_at", "timestamptz", "m.last_accessed_at"),
    ("source", "text", "m.source::text"),
    ("session", "text", "m.source->>'session_id'"),
    ("dl", "integer", "length(m.tsv)"),
    ("vec", "bytea", "vector_send(m.embedding)"),
)
_ROW = ", ".join(f"{expr} as {name}" for name, _, expr in _FIELDS)
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"

_LOAD_HEAD = f"""
select {_HORIZON} as horizon,
       (select count(*) from (select 1 from public.memories m where m.user_id = $1 limit $2) s)
         as rows
"""
_LOAD_ROWS = f"select {_ROW} from public.memories m where m.user_id = $1 order by m.id"
# Positions are the rows' order by id, as in _LOAD_ROWS (same snapshot).
_LOAD_POSTINGS = """
select w.word, array_agg(r.p) as positions
from (select (row_number() over (order by m.id) - 1)::int as p, m.tsv
      from public.memories m where m.user_id = $1) r
cross join lateral unnest(tsvector_to_array(r.tsv)) as w(word)
group by w.word
"""


def _part(part: int, values: dict[str, str]) -> str:
    columns = [f"{part} as part"]
    for name, kind, _ in (*_FIELDS, ("lexemes", "text[]", ""), ("horizon", "bigint", ""),
                          ("word", "text", "")):
        columns.append(f"{values.get(name, f'null::{kind}')} as {name}")
    return "select " + ", ".join(columns)


# The parameters sit in scalar subqueries (InitPlans): a custom plan then knows no more than
# the generic one, so Postgres settles on the generic plan instead of re-planning every call
# (planning cost more than running it). Both read the (user_id, rev) index; a test checks.
_USER = "(select $1::uuid)"
_SINCE = "(select $2::bigint::text::xid8)"
# One statement, so one snapshot: its horizon covers exactly the changes it returns.
_SYNC = "\nunion all\n".join([
    _part(0, {"horizon": _HORIZON}),
    "(" + _part(1, {name: expr for name, _, expr in _FIELDS}
                | {"lexemes": "tsvector_to_array(m.tsv)"})
    + f" from public.memories m where m.user_id = {_USER} and m.rev >= {_SINCE}"
    # The order matches the (user_id, rev) index, so the plan reads it and stops early. The
    # generic plan cannot see how few rows pass `rev >= $2` (xid8 has no statistics), and
    # with few users in the table it would otherwise scan the whole table on every search.
    + f" order by m.rev limit {SYNC_MAX_ROWS + 1})",
    _part(2, {"id": "t.memory_id", "rev": "t.rev::text::bigint"})
    + f" from public.memory_tombstones t where t.user_id = {_USER} and t.rev >= {_SINCE}",
    _part(3, {"word": "x.word", "lexemes": "tsvector_to_array(to_tsvector('english', x.word))"})
    + " from unnest($3::text[]) as x(word)",
])
_PRUNE = "delete from public.memory_tombstones where deleted_at < now() - make_interval(secs => $1)"
_MAX_STEMS = 50_000


class LocalIndexes:
    """Per-user `UserIndex`es of this process, within a row budget.

    Args:
        pool: the shared database pool.
        max_rows: users with more rows than this are searched in SQL only.
        budget_rows: most rows held over all users; the least recently used go first.
        idle_s: an index unused this long is dropped.
        max_age_s: an index older than this is reloaded in the background (must stay under
            the tombstones' retention).
        tombstone_retention_s: how long deleted ids are kept for indexes to catch up.
        forgotten: this process's notes of forgotten memories.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        max_rows: int,
        budget_rows: int,
        idle_s: float,
        max_age_s: float,
        tombstone_retention_s: float,
        forgotten: ForgottenMemories,
    ) -> None:
        self._pool = pool
        self._forgotten = forgotten
        self.max_rows = max_rows
        self.budget_rows = budget_rows
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.tombstone_retention_s = tombstone_retention_s
        self._indexes: OrderedDict[uuid.UUID, UserIndex] = OrderedDict()
        self._loading: dict[uuid.UUID, asyncio.Future[UserIndex | None]] = {}
        self._too_large: dict[uuid.UUID, float] = {}
        self._stems: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._tasks = BackgroundTasks("memory index")
        self._swept_at = time.monotonic()
        self._pruned_at = 0.0
        self._load_ms = LatencyWindow()
        self._sync_ms = LatencyWindow()
        self.counters = {
            "loads": 0,
            "load_failures": 0,
            "reloads": 0,
            "too_large": 0,
            "evicted": 0,
            "synced_rows": 0,
            "synced_deletes": 0,
            "overflows": 0,
        }

    # --- which index --------------------------------------------------------------------------

    def ready(self, user_id: uuid.UUID) -> UserIndex | None:
        """The user's index if loaded (a stale one is reloaded in the background meanwhile)."""
        now = time.monotonic()
        if now - self._swept_at > 60:
            self._sweep(now)
        index = self._indexes.get(user_id)
        if index is None or self._catch_up(index) is None:
            return None
        if index.docs > self.max_rows:
            # Grew past the limit since it was loaded: SQL from now on.
            del self._indexes[user_id]
            self._too_large[user_id] = now + 600
            self.counters["too_large"] += 1
            return None
        self._indexes.move_to_end(user_id)
        index.used_at = now
        worn = index.dead > max(500, index.n // 4) or now - index.loaded_at > self.max_age_s
        if worn and user_id not in self._loading:
            self.counters["reloads"] += 1
            self.start_load(user_id)
        return index

    def _catch_up(self, index: UserIndex) -> UserIndex | None:
        """Take in the forgotten-memory notes made since `index` last did; None (and the index
        dropped) when the person was erased since."""
        version = self._forgotten.version(index.user_id)
        if version == index.forgotten_version:
            return index
        if self._forgotten.erased_since(index.user_id, index.forgotten_version):
            if self._indexes.get(index.user_id) is index:
                del self._indexes[index.user_id]
            return None
        gone = [(memory_id, 0) for memory_id in self._forgotten.ids(index.user_id)]
        index.apply([], gone, index.horizon)
        index.forgotten_version = version
        return index

    def too_large(self, user_id: uuid.UUID) -> bool:
        until = self._too_large.get(user_id)
        if until is None:
            return False
        if until < time.monotonic():
            del self._too_large[user_id]
            return False
        return True

    def loading(self, user_id: uuid.UUID) -> asyncio.Future[UserIndex | None] | None:
        return self._loading.get(user_id)

    def start_load(self, user_id: uuid.UUID) -> asyncio.Future[UserIndex | None]:
        running = self._loading.get(user_id)
        if running is not None:
            return running
        task = self._tasks.spawn(self._load(user_id))
        self._loading[user_id] = task

        def done(t: asyncio.Future[UserIndex | None]) -> None:
            if self._loading.get(user_id) is t:
                del self._loading[user_id]

        task.add_done_callback(done)
        return task

    def forget(self, user_id: uuid.UUID | None = None) -> None:
        """Drop the indexes (all, or one user's); they are loaded again when needed."""
        if user_id is None:
            self._indexes.clear()
            self._too_large.clear()
        else:
            self._indexes.pop(user_id, None)
            self._too_large.pop(user_id, None)

    # --- loading and syncing ------------------------------------------------------------------

    async def _load(self, user_id: uuid.UUID) -> UserIndex | None:
        started = time.perf_counter()

        async def read(conn: Any) -> tuple[Any, list[Any], list[Any]] | None:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                head = await conn.fetchrow(_LOAD_HEAD, user_id, self.max_rows + 1)
                if head["rows"] > self.max_rows:
                    return None
                rows = await conn.fetch(_LOAD_ROWS, user_id)
                postings = await conn.fetch(_LOAD_POSTINGS, user_id)
            return head, rows, postings

        try:
            loaded = await run_released(self._pool, read, self._tasks)
        except Exception as exc:  # background work: searches carry on in SQL
            self.counters["load_failures"] += 1
            logger.warning("in-process memory index load failed (%s)", type(exc).__name__)
            return None
        if loaded is None:
            self.counters["too_large"] += 1
            self._too_large[user_id] = time.monotonic() + 600
            self._indexes.pop(user_id, None)
            return None
        head, rows, postings = loaded
        index = UserIndex.build(
            user_id, int(head["horizon"]), rows,
            ((p["word"], p["positions"]) for p in postings),
        )
        if self._catch_up(index) is None:
            return None  # the person was erased while it loaded; the next search loads again
        self._indexes[user_id] = index
        self._indexes.move_to_end(user_id)
        self.counters["loads"] += 1
        self._load_ms.add((time.perf_counter() - started) * 1000)
        self._evict(keep=user_id)
        if time.monotonic() - self._pruned_at > 3_600:
            self._pruned_at = time.monotonic()
            self._tasks.spawn(self._prune())
        return index

    async def sync(
        self, index: UserIndex, words: Sequence[str]
    ) -> dict[str, tuple[str, ...]] | None:
        """Bring `index` up to date (one round trip); returns the stems of `words`, or None
        when too much changed (then the index is reloaded in the background)."""
        started = time.perf_counter()
        stems: dict[str, tuple[str, ...]] = {}
        unknown = []
        for word in words:
            known = self._stems.get(word)
            if known is None:
                unknown.append(word)
            else:
                stems[word] = known
        async with index.sync_lock:
            return await self._sync(index, stems, unknown, started)

    async def _sync(
        self,
        index: UserIndex,
        stems: dict[str, tuple[str, ...]],
        unknown: list[str],
        started: float,
    ) -> dict[str, tuple[str, ...]] | None:
        records = await run_released(
            self._pool,
            lambda conn: conn.fetch(_SYNC, index.user_id, index.horizon, unknown),
            self._tasks,
        )
        changed: list[Any] = []
        deleted: list[tuple[uuid.UUID, int]] = []
        horizon = index.horizon
        for r in records:
            part = r["part"]
            if part == 1:
                changed.append(r)
            elif part == 2:
                deleted.append((r["id"], int(r["rev"])))
            elif part == 3:
                stems[r["word"]] = self._remember_stems(r["word"], r["lexemes"])
            else:
                horizon = int(r["horizon"])
        added = sum(1 for r in changed if r["id"] not in index.pos)
        if len(changed) > SYNC_MAX_ROWS or index.docs + added > self.max_rows:
            self.counters["overflows"] += 1
            if self._indexes.get(index.user_id) is index:
                del self._indexes[index.user_id]
                self.start_load(index.user_id)
            return None
        self.counters["synced_rows"] += index.apply(changed, deleted, horizon)
        self.counters["synced_deletes"] += len(deleted)
        self._sync_ms.add((time.perf_counter() - started) * 1000)
        return stems

    def known_stems(self, words: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """The stems of `words` seen before (for a search while Postgres is away)."""
        return {word: self._stems[word] for word in words if word in self._stems}

    def _remember_stems(self, word: str, lexemes: Sequence[str] | None) -> tuple[str, ...]:
        stems = tuple(lexemes or ())
        self._stems[word] = stems
        while len(self._stems) > _MAX_STEMS:
            self._stems.popitem(last=False)
        return stems

    async def _prune(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(_PRUNE, float(self.tombstone_retention_s))
        except Exception as exc:  # background housekeeping; retried an hour later
            logger.warning("tombstone pruning failed (%s)", type(exc).__name__)

    # --- budget -------------------------------------------------------------------------------

    def _evict(self, keep: uuid.UUID) -> None:
        total = sum(i.n for i in self._indexes.values())
        for user_id in list(self._indexes):
            if total <= self.budget_rows:
                break
            if user_id == keep:
                continue
            total -= self._indexes.pop(user_id).n
            self.counters["evicted"] += 1

    def _sweep(self, now: float) -> None:
        self._swept_at = now
        for user_id, index in list(self._indexes.items()):
            if now - index.used_at > self.idle_s:
                del self._indexes[user_id]
                self.counters["evicted"] += 1

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "users": len(self._indexes),
            "rows": sum(i.n for i in self._indexes.values()),
            "bytes": sum(i.nbytes for i in self._indexes.values()),
            "load_ms": self._load_ms.summary(),
            "sync_ms": self._sync_ms.summary(),
        }

    async def aclose(self) -> None:
        """Wait for loads, releases and housekeeping in flight."""
        await self._tasks.drain()
