"""Explicit memories: saved with supersession, never overwritten.

Saving the same key again supersedes the old value in one transaction, so there is exactly one
current value and the older ones kept as history.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import asyncpg
import numpy as np

from core.dates import absolutize, timezone_named
from core.errors import InvalidIdentity, InvalidInput, QuotaExceeded
from core.memory_records import (
    MEMORY_COLUMNS,
    Memory,
    content_hash,
    explicit_content,
    normalize_key,
    normalize_text,
)
from core.validators import (
    MAX_MEMORY_KEY_CHARS,
    MAX_MEMORY_VALUE_CHARS,
    clean_category,
    clean_text,
)
from infrastructure.connection_pool import ConnectionPool
from services.memory.current_memories import CurrentMemories
from services.memory.importance import estimate_importance
from services.memory.memory_vectors import MemoryVectors

_RECURRING = re.compile(r"birthday|anniversary|born", re.IGNORECASE)
# What the person can do when the quota is full; each is a tool of the companion.
MAKE_ROOM = (
    "to make room: what_do_you_know_about_me lists what is kept, forget removes one by its key, "
    "forget_everything erases everything once the person confirms; then save this again"
)
_KEPT_SQL = (
    "select count(*) from public.memories "
    "where user_id = $1 and kind = 'explicit' and superseded_at is null"
)


class ExplicitMemories:
    """Saves category/key/value memories: dated, embedded, superseding the old value.

    The quota is checked in the save's own transaction, under a per-user lock, so concurrent
    saves (parallel tool calls, a consolidation, another worker) can never pass it together.

    Args:
        pool: the shared database pool.
        current: the cached current memories, invalidated after every change.
        vectors: embeds the memory's content.
        quota: most current explicit memories one user keeps (`memory_quota_per_user`).
        clock: returns "now".
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        current: CurrentMemories,
        vectors: MemoryVectors,
        quota: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._current = current
        self._vectors = vectors
        self._quota = quota
        self._clock = clock
        self.counters = {
            "remembered": 0, "unchanged": 0, "superseded": 0, "late_history": 0,
            "over_quota": 0,
        }

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
        """Validate, date (in the user's timezone), embed, then save; see
        `MemoryService.remember` for what a save means."""
        category = clean_category(category)
        key = normalize_key(clean_text(key, field="key", max_chars=MAX_MEMORY_KEY_CHARS))
        value = clean_text(value, field="value", max_chars=MAX_MEMORY_VALUE_CHARS)
        if not key or not value:
            raise InvalidInput(
                "a memory needs a key and a value",
                suggestion="send a short key such as 'favorite_food' and a value such as 'sushi'",
            )
        if importance is not None and not 0.0 <= importance <= 1.0:
            raise InvalidInput("importance must be between 0 and 1", suggestion="send 0..1")
        now = self._clock()
        said_at = occurred_at or now
        tz_name = await self._pool.fetchval(
            "select timezone from public.users where id = $1", user_id
        )
        dated = absolutize(
            value,
            now=said_at,
            tz=timezone_named(tz_name),
            recurring=bool(_RECURRING.search(key) or _RECURRING.search(value)),
        )
        value = dated.text
        content = explicit_content(key, value)
        if importance is None:
            importance = estimate_importance(content, category=category)
        embedding = await self._vectors.embed_or_none(content)
        memory, changed = await self._save_explicit(
            user_id, companion_id, category, key, value, content, importance, now, said_at,
            dated.event_date, source or {}, embedding,
        )
        if changed:
            await self._current.invalidate(user_id, companion_id)
        return memory

    async def _save_explicit(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        category: str,
        key: str,
        value: str,
        content: str,
        importance: float,
        now: datetime,
        said_at: datetime,
        event_date: date | None,
        source: dict[str, Any],
        embedding: np.ndarray | None,
    ) -> tuple[Memory, bool]:
        scope = f"{user_id}:{companion_id}:{category}:{key}"
        new_id = uuid.uuid4()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # The user's lock first (always in this order): concurrent saves of one user
                # count the kept memories one after the other, so the quota holds exactly.
                await conn.execute(
                    "select pg_advisory_xact_lock(hashtextextended($1, 0))", f"quota:{user_id}"
                )
                # Serializes concurrent saves of one key, so two current rows can never race.
                await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))", scope)
                old = await conn.fetchrow(
                    f"select {MEMORY_COLUMNS} from public.memories "
                    "where user_id = $1 and companion_id is not distinct from $2 "
                    "and kind = 'explicit' and category = $3 and key = $4 "
                    "and superseded_at is null",
                    user_id, companion_id, category, key,
                )
                if old is not None and normalize_text(old["value"]) == normalize_text(value):
                    self.counters["unchanged"] += 1
                    return Memory.from_record(old), False
                if old is None:
                    # A new key adds a kept memory; a new value of a kept one replaces it.
                    await self._check_quota(conn, user_id)
                stale = old is not None and old["occurred_at"] > said_at
                if old is not None and not stale:
                    await conn.execute(
                        "update public.memories set superseded_at = $2, updated_at = $2 "
                        "where id = $1",
                        old["id"], now,
                    )
                row = await conn.fetchrow(
                    "insert into public.memories (id, user_id, companion_id, kind, speaker, "
                    "category, key, value, content, content_hash, importance, occurred_at, "
                    "event_date, created_at, updated_at, source, embedding, superseded_at, "
                    "superseded_by) "
                    "values ($1, $2, $3, 'explicit', 'user', $4, $5, $6, $7, $8, $9, $10, $11, "
                    f"$12, $12, $13::jsonb, $14, $15, $16) returning {MEMORY_COLUMNS}",
                    new_id, user_id, companion_id, category, key, value, content,
                    content_hash(content), importance, said_at, event_date, now,
                    json.dumps(source), embedding,
                    now if stale else None, old["id"] if stale and old is not None else None,
                )
                assert row is not None  # an insert ... returning always returns its row
                if stale:
                    # Said before the current value was: history only, the current one stays.
                    self.counters["late_history"] += 1
                    return Memory.from_record(row), False
                if old is not None:
                    # Only now does the new row exist for the foreign key to point at.
                    await conn.execute(
                        "update public.memories set superseded_by = $2 where id = $1",
                        old["id"], new_id,
                    )
                    self.counters["superseded"] += 1
        except asyncpg.ForeignKeyViolationError:
            raise InvalidIdentity(
                "unknown user or companion for this memory",
                suggestion="create the user (UserService.ensure) and companion before saving",
            ) from None
        self.counters["remembered"] += 1
        return Memory.from_record(row), True

    async def _check_quota(
        self, conn: asyncpg.Connection[asyncpg.Record], user_id: uuid.UUID
    ) -> None:
        used = int(await conn.fetchval(_KEPT_SQL, user_id))
        if used < self._quota:
            return
        self.counters["over_quota"] += 1
        raise QuotaExceeded(
            f"the memory is full: {used} of {self._quota} memories are kept",
            suggestion=MAKE_ROOM, used=used, quota=self._quota,
        )
