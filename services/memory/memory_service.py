"""Explicit memories (category/key/value, superseded never overwritten) and the episodic turn log.

Explicit memories are what the person told the companion to keep ("my sister is Maya"): saving
the same key again supersedes the old value in one transaction, so there is exactly one current
value and a queryable history. Episodic memories are the turns themselves, logged off the
critical path: embedded in a background task, then written through the batcher.

`MemoryService` is the one door to them. Each concern is a small part it builds and hands its
collaborators to: `ExplicitMemories` (saving, within the quota), `CurrentMemories` (the cached
current values), `EpisodicLog`, `Forgetting`, `MemoryRetention` (what expires) and
`MemoryVectors` (embedding).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from core.config import Settings
from core.dates import utc_now
from core.deadline import Deadline
from core.forgotten import ForgottenMemories
from core.memory_records import MEMORY_COLUMNS, Episode, Memory
from core.tasks import BackgroundTasks
from core.validators import clean_category
from infrastructure.cache import Cache
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.embeddings import Embedder
from services.memory.current_memories import CurrentMemories
from services.memory.derived_text import DerivedText
from services.memory.episodic_log import EpisodicLog
from services.memory.explicit_memories import ExplicitMemories
from services.memory.forgetting import Forgetting, Forgotten
from services.memory.memory_vectors import MemoryVectors
from services.memory.retention import MemoryRetention, RetentionResult


class MemoryService:
    """Saves, supersedes, lists, forgets and exports a person's memories; logs turns.

    Every query is scoped to one user, and to one companion plus the user-level shared
    memories (companion_id None).

    Args:
        pool: the shared database pool.
        cache: caches each scope's current explicit memories (invalidated on every write).
        batcher: carries episodic turn writes off the critical path.
        embedder: embeds contents for vector search.
        settings: cache TTLs and the like.
        forgotten: this process's notes of forgotten memories, shared with every part that
            holds copies (the retrieval engine); its own when not given.
        clock: returns "now"; tests pass a fixed one to pin relative dates.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        cache: Cache,
        batcher: DatabaseBatcher,
        embedder: Embedder,
        settings: Settings,
        forgotten: ForgottenMemories | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self.forgotten = forgotten if forgotten is not None else ForgottenMemories()
        self._batcher = batcher
        self._clock = clock
        self._pending_erased = 0
        self._tasks = BackgroundTasks("memory")
        self._vectors = MemoryVectors(embedder)
        self._current = CurrentMemories(
            pool=pool, cache=cache, settings=settings, forgotten=self.forgotten
        )
        self._explicit = ExplicitMemories(
            pool=pool, current=self._current, vectors=self._vectors,
            quota=settings.memory_quota_per_user, clock=clock,
        )
        self._episodes = EpisodicLog(
            pool=pool, batcher=batcher, vectors=self._vectors, tasks=self._tasks, clock=clock
        )
        self._derived = DerivedText(cache=cache)
        self._forgetting = Forgetting(
            pool=pool, batcher=batcher, current=self._current, derived=self._derived,
            forgotten=self.forgotten, clock=clock,
        )
        self._retention = MemoryRetention(pool=pool, settings=settings, clock=clock)

    # --- explicit memories ------------------------------------------------------------------

    async def remember(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        category: str,
        key: str,
        value: str,
        *,
        importance: float | None = None,
        source: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> Memory:
        """Save `key` = `value`; an existing different value of the key is superseded.

        Saving the value that is already current changes nothing and returns the current row.
        Relative dates in the value are rewritten as absolute ones in the user's timezone,
        relative to `occurred_at` (when it was said; default now). A value said before the
        current one was (a late consolidation) goes into the history without replacing it.

        Raises:
            InvalidInput: a malformed category, key, value or importance.
            InvalidIdentity: the user or the companion does not exist.
            QuotaExceeded: a new key while the person keeps `memory_quota_per_user` memories
                (a new value of a kept key always goes through); the suggestion says what
                the person can do.
        """
        return await self._explicit.remember(
            user_id, companion_id, category, key, value,
            importance=importance, source=source, occurred_at=occurred_at,
        )

    async def current(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        category: str | None = None,
        limit: int = 50,
    ) -> list[Memory]:
        """Current explicit memories of the companion plus the shared ones, most important first.

        Where the companion and the shared scope both hold a key, the companion's value wins.
        """
        wanted = clean_category(category) if category is not None else None
        memories = await self._current.get(user_id, companion_id)
        if wanted is not None:
            memories = [m for m in memories if m.category == wanted]
        return memories[: max(0, limit)]

    async def invalidate(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> None:
        """Drop the cached current memories of a scope after a change made elsewhere."""
        await self._current.invalidate(user_id, companion_id)

    # --- the episodic log ---------------------------------------------------------------------

    def log_turn(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        session_id: uuid.UUID | None,
        speaker: str,
        text: str,
        occurred_at: datetime | None = None,
    ) -> None:
        """Log one turn as an episodic memory; returns at once (embeds and writes later)."""
        self._episodes.log_turn(user_id, companion_id, session_id, speaker, text, occurred_at)

    async def import_episodes(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None, episodes: Sequence[Episode]
    ) -> int:
        """Store many turns at once (benchmarks, imports); returns how many were new.

        Creates a bare user row when the user does not exist yet. Duplicates (same speaker and
        normalized text) are skipped, so importing twice stores nothing twice.
        """
        return await self._episodes.import_episodes(user_id, companion_id, episodes)

    def record_access(self, memory_ids: Sequence[uuid.UUID]) -> None:
        """Count that these memories were used (retrieved into a reply); off the critical path."""
        ids = list(dict.fromkeys(memory_ids))
        if ids:
            self._tasks.spawn(self._record_access(ids, self._clock()))

    async def _record_access(self, ids: list[uuid.UUID], at: datetime) -> None:
        await self._pool.execute(
            "update public.memories set access_count = access_count + 1, "
            "last_accessed_at = greatest(last_accessed_at, $2) where id = any($1::uuid[])",
            ids, at,
        )

    # --- a person's data ----------------------------------------------------------------------

    async def forget(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        memory_id: uuid.UUID | None = None,
        key: str | None = None,
    ) -> Forgotten:
        """Delete one memory by id, or every version of a key (any category).

        Only rows of this user and exactly this scope are touched, whatever id is passed.
        From the moment it returns nothing forgotten is served by this process, even while the
        database is away: then the delete waits in the spool on disk (`Forgotten.deferred`)
        and is made when the database is back (`forgetting`).

        Raises:
            InvalidInput: not exactly one of `memory_id` and `key` was given.
            StorageUnavailable: neither the database nor the disk took it; nothing changed.
        """
        return await self._forgetting.forget(user_id, companion_id, memory_id=memory_id, key=key)

    async def erase_pending(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None = None
    ) -> int:
        """Erase the user's writes not in the database yet (of one companion, or all with
        None): turns being embedded, and every write queued, spooled, refused or set aside
        (`DatabaseBatcher.erase_user`; messages, episodes, mood and the rest); returns how many.
        Call it before deleting what is stored (`PersonData.erase`), so that none of them
        lands afterwards.

        Raises:
            StorageUnavailable: a batch under way did not end in time (call again).
        """
        embedding = self._episodes.forget_pending(user_id, companion_id)
        pending = await self._batcher.erase_user(user_id, companion_id=companion_id)
        self._pending_erased += embedding + pending
        return embedding + pending

    async def export(self, user_id: uuid.UUID) -> dict[str, Any]:
        """Everything remembered about the user, across companions, history included (JSON-safe).

        `pending` holds what is not in the database yet: turns being embedded (`embedding`),
        and writes queued, spooled, refused or set aside (`DatabaseBatcher.export_user`).
        """
        rows = await self._pool.fetch(
            f"select {MEMORY_COLUMNS} from public.memories where user_id = $1 "
            "order by kind, occurred_at, created_at",
            user_id,
        )
        memories = [Memory.from_record(r).to_json() for r in rows]
        pending = await self._batcher.export_user(user_id)
        return {
            "user_id": str(user_id),
            "exported_at": self._clock().isoformat(),
            "explicit": [m for m in memories if m["kind"] == "explicit"],
            "episodic": [m for m in memories if m["kind"] == "episodic"],
            "pending": {"embedding": self._episodes.pending_of(user_id), **pending},
        }

    # --- retention ----------------------------------------------------------------------------

    async def apply_retention(self, user_id: uuid.UUID) -> RetentionResult:
        """Let the person's distilled old turns and old values expire (`retention`'s rule);
        run after a session's final consolidation. Safe to run at any time."""
        return await self._retention.apply(user_id)

    async def apply_retention_due(self, *, limit: int = 100) -> RetentionResult:
        """The retention rule for up to `limit` people holding turns past the retention age
        (for the periodic maintenance pass; successive calls go through everyone)."""
        return await self._retention.apply_due(limit=limit)

    # --- stats and lifecycle ------------------------------------------------------------------

    async def stats(
        self, user_id: uuid.UUID | None = None, companion_id: uuid.UUID | None = None
    ) -> dict[str, Any]:
        """Service counters, plus row counts for a user (and companion) when given."""
        out: dict[str, Any] = {
            **self._explicit.counters,
            **self._forgetting.counters,
            **self._derived.counters,
            **self.forgotten.stats(),
            **self._episodes.counters,
            "embedding_failures": self._vectors.failures,
            **self._current.counters,
            **self._retention.counters,
            "pending_tasks": len(self._tasks),
            "pending_writes_erased": self._pending_erased,
        }
        if user_id is not None:
            row = await self._pool.fetchrow(
                "select count(*) filter (where kind = 'explicit' and superseded_at is null) "
                "as current, "
                "count(*) filter (where kind = 'explicit' and superseded_at is not null) "
                "as superseded, "
                "count(*) filter (where kind = 'episodic' and speaker = 'user') as user_turns, "
                "count(*) filter (where kind = 'episodic' and speaker <> 'user') as replies, "
                "count(*) filter (where embedding is null) as unembedded "
                "from public.memories where user_id = $1 "
                "and ($2::uuid is null or companion_id = $2 or companion_id is null)",
                user_id, companion_id,
            )
            out["rows"] = dict(row) if row is not None else {}
        return out

    async def drain(self) -> None:
        """Wait until every background embedding/access task has finished."""
        await self._tasks.drain()

    async def aclose(self, deadline: Deadline | None = None) -> None:
        """Finish background work, until `deadline`: then it is cancelled, and a turn still
        being embedded is queued without its vector (full-text search still finds it). The
        batcher (not owned here) is drained by its owner, after this."""
        if not await self._tasks.drain(deadline):
            self._tasks.cancel()
            await self._tasks.drain()
