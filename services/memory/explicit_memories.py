"""Explicit memories: save with supersession (never overwrite), read the current values.

Saving the same key again supersedes the old value in one transaction, so there is exactly one
current value and the older ones kept as history. The current values of a scope are cached.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime
from typing import Any

import asyncpg
import numpy as np

from core.dates import absolutize, timezone_named
from core.errors import InvalidIdentity, InvalidInput
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
from services.memory.importance import estimate_importance
from services.memory.memory_core import MemoryCore

_CURRENT_CACHE_LIMIT = 500
_RECURRING = re.compile(r"birthday|anniversary|born", re.IGNORECASE)


class ExplicitMemories(MemoryCore):
    """The category/key/value memories of `MemoryService`: remember, current."""

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
        """
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
        embedding = await self._embed_or_none(content)
        memory, changed = await self._save_explicit(
            user_id, companion_id, category, key, value, content, importance, now, said_at,
            dated.event_date, source or {}, embedding,
        )
        if changed:
            await self.invalidate(user_id, companion_id)
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
                    self._counters["unchanged"] += 1
                    return Memory.from_record(old), False
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
                if stale:
                    # Said before the current value was: history only, the current one stays.
                    self._counters["late_history"] += 1
                    return Memory.from_record(row), False
                if old is not None:
                    # Only now does the new row exist for the foreign key to point at.
                    await conn.execute(
                        "update public.memories set superseded_by = $2 where id = $1",
                        old["id"], new_id,
                    )
                    self._counters["superseded"] += 1
        except asyncpg.ForeignKeyViolationError:
            raise InvalidIdentity(
                "unknown user or companion for this memory",
                suggestion="create the user (UserService.ensure) and companion before saving",
            ) from None
        self._counters["remembered"] += 1
        assert row is not None
        return Memory.from_record(row), True

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
        memories = await self._current_all(user_id, companion_id)
        if wanted is not None:
            memories = [m for m in memories if m.category == wanted]
        return memories[: max(0, limit)]

    async def _current_all(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None
    ) -> list[Memory]:
        key = self._cache_key(user_id, companion_id)
        cached = await self._cache.get_json(key)
        if isinstance(cached, list):
            self._counters["cache_hits"] += 1
            return [Memory.from_json(item) for item in cached]
        self._counters["cache_misses"] += 1
        rows = await self._pool.fetch(
            f"select {MEMORY_COLUMNS} from public.memories "
            "where user_id = $1 and (companion_id = $2 or companion_id is null) "
            "and kind = 'explicit' and superseded_at is null "
            "order by (companion_id is null), importance desc, occurred_at desc limit $3",
            user_id, companion_id, _CURRENT_CACHE_LIMIT,
        )
        seen: set[tuple[str | None, str | None]] = set()
        memories: list[Memory] = []
        for row in rows:
            memory = Memory.from_record(row)
            if (memory.category, memory.key) in seen:
                continue
            seen.add((memory.category, memory.key))
            memories.append(memory)
        memories.sort(key=lambda m: (-m.importance, -m.occurred_at.timestamp()))
        await self._cache.set_json(
            key, [m.to_json() for m in memories], self._settings.cache_default_ttl_s
        )
        return memories
