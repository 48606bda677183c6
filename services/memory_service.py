"""Explicit memories (category/key/value, superseded never overwritten) and the episodic turn log.

Explicit memories are what the person told the companion to keep ("my sister is Maya"): saving
the same key again supersedes the old value in one transaction, so there is exactly one current
value and a queryable history. Episodic memories are the turns themselves, logged off the
critical path: embedded in a background task, then written through the batcher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import numpy as np

from core.config import Settings
from core.dates import absolutize, timezone_named, utc_now
from core.errors import CompanionError, EmbeddingError, InvalidIdentity, InvalidInput
from core.tasks import BackgroundTasks
from core.validators import (
    MAX_MEMORY_KEY_CHARS,
    MAX_MEMORY_VALUE_CHARS,
    MAX_UTTERANCE_CHARS,
    clean_category,
    clean_text,
)
from infrastructure.connection_pool import ConnectionPool, encode_vector
from services.importance import estimate_importance

if TYPE_CHECKING:
    from infrastructure.database_batcher import DatabaseBatcher
    from infrastructure.embeddings import Embedder
    from infrastructure.redis_cache import Cache

logger = logging.getLogger(__name__)

SPEAKERS = ("user", "assistant", "system")
MEMORY_COLUMNS = (
    "id, user_id, companion_id, kind, speaker, category, key, value, content, importance, "
    "occurred_at, event_date, created_at, superseded_at, access_count, last_accessed_at, source"
)
EPISODE_OP = "memory.episode"
_EPISODE_SQL = """
insert into public.memories
  (id, user_id, companion_id, kind, speaker, content, content_hash, importance, occurred_at,
   source, embedding)
values ($1, $2, $3, 'episodic', $4, $5, $6, $7, $8, $9::jsonb, $10)
on conflict do nothing
"""
_IMPORT_SQL = """
with rows as (
  select * from unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::real[],
                       $8::timestamptz[], $9::text[], $10::text[])
    as t(id, speaker, content, content_hash, importance, occurred_at, source, embedding)
), inserted as (
  insert into public.memories
    (id, user_id, companion_id, kind, speaker, content, content_hash, importance, occurred_at,
     source, embedding)
  select id, $1::uuid, $2::uuid, 'episodic', speaker, content, content_hash, importance,
         occurred_at, source::jsonb, embedding::vector
  from rows
  on conflict do nothing
  returning 1
)
select count(*) from inserted
"""
_IMPORT_CHUNK = 256
_CURRENT_CACHE_LIMIT = 500
_RECURRING = re.compile(r"birthday|anniversary|born", re.IGNORECASE)
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize_key(raw: str) -> str:
    """Keys compare without case, spacing or punctuation: "Favorite Food" == "favorite_food"."""
    text = unicodedata.normalize("NFKC", raw).casefold()
    return re.sub(r"[\W_]+", "_", text).strip("_")


def normalize_text(text: str) -> str:
    """The form two texts are compared in: case, punctuation and spacing do not count."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def content_hash(text: str) -> str:
    """Hash of the normalized text, so near-identical turns ("OK." / "ok") dedupe."""
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()[:32]


def explicit_content(key: str, value: str) -> str:
    """The searchable sentence an explicit memory is stored as: "favorite food: sushi"."""
    return f"{key.replace('_', ' ')}: {value}"


@dataclass(frozen=True)
class Memory:
    """One row of `memories`, explicit or episodic.

    Attributes:
        kind: 'explicit' (category/key/value) or 'episodic' (a logged turn).
        speaker: who said it; 'assistant' rows are the companion's own replies, never facts
            about the user.
        content: the searchable text ("favorite food: sushi", or the turn itself).
        event_date: the day the memory is about, when it names one.
        superseded_at: set once a newer value of the same key replaced this one.
        source: where it came from (session, message ids, "tool", "consolidation").
    """

    id: uuid.UUID
    user_id: uuid.UUID
    companion_id: uuid.UUID | None
    kind: str
    speaker: str
    category: str | None
    key: str | None
    value: str | None
    content: str
    importance: float
    occurred_at: datetime
    event_date: date | None
    created_at: datetime
    superseded_at: datetime | None
    access_count: int
    last_accessed_at: datetime | None
    source: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, row: asyncpg.Record | dict[str, Any]) -> Memory:
        """Build from a row selected with `MEMORY_COLUMNS` (jsonb arrives as text)."""
        source = row["source"]
        if isinstance(source, str):
            source = json.loads(source)
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            companion_id=row["companion_id"],
            kind=row["kind"],
            speaker=row["speaker"],
            category=row["category"],
            key=row["key"],
            value=row["value"],
            content=row["content"],
            importance=float(row["importance"]),
            occurred_at=row["occurred_at"],
            event_date=row["event_date"],
            created_at=row["created_at"],
            superseded_at=row["superseded_at"],
            access_count=int(row["access_count"]),
            last_accessed_at=row["last_accessed_at"],
            source=dict(source or {}),
        )

    @property
    def is_current(self) -> bool:
        return self.superseded_at is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (ids and times as strings) for caches and exports."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if isinstance(value, uuid.UUID | datetime | date):
                out[name] = str(value) if isinstance(value, uuid.UUID) else value.isoformat()
            else:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Memory:
        def opt_uuid(v: str | None) -> uuid.UUID | None:
            return uuid.UUID(v) if v else None

        def opt_dt(v: str | None) -> datetime | None:
            return datetime.fromisoformat(v) if v else None

        return cls(
            id=uuid.UUID(data["id"]),
            user_id=uuid.UUID(data["user_id"]),
            companion_id=opt_uuid(data["companion_id"]),
            kind=data["kind"],
            speaker=data["speaker"],
            category=data["category"],
            key=data["key"],
            value=data["value"],
            content=data["content"],
            importance=float(data["importance"]),
            occurred_at=datetime.fromisoformat(data["occurred_at"]),
            event_date=date.fromisoformat(data["event_date"]) if data["event_date"] else None,
            created_at=datetime.fromisoformat(data["created_at"]),
            superseded_at=opt_dt(data["superseded_at"]),
            access_count=int(data["access_count"]),
            last_accessed_at=opt_dt(data["last_accessed_at"]),
            source=dict(data["source"] or {}),
        )


@dataclass(frozen=True)
class Episode:
    """One turn to import in bulk (benchmarks, migrations): who said what, and when."""

    speaker: str
    text: str
    occurred_at: datetime
    source: dict[str, Any] = field(default_factory=dict)


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
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._batcher = batcher
        self._embedder = embedder
        self._settings = settings
        self._clock = clock
        self._tasks = BackgroundTasks("memory")
        self._counters: dict[str, int] = {
            "remembered": 0,
            "unchanged": 0,
            "superseded": 0,
            "late_history": 0,
            "forgotten": 0,
            "turns_logged": 0,
            "turns_skipped": 0,
            "episodes_imported": 0,
            "embedding_failures": 0,
            "cache_hits": 0,
            "cache_misses": 0,
        }
        batcher.register(EPISODE_OP, _EPISODE_SQL)

    # --- explicit memories ----------------------------------------------------------------

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

    async def history(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None, category: str, key: str
    ) -> list[Memory]:
        """Every value the key has had in this exact scope: the current one, then newest first."""
        rows = await self._pool.fetch(
            f"select {MEMORY_COLUMNS} from public.memories "
            "where user_id = $1 and companion_id is not distinct from $2 and kind = 'explicit' "
            "and category = $3 and key = $4 "
            "order by (superseded_at is not null), occurred_at desc, created_at desc",
            user_id, companion_id, clean_category(category), normalize_key(key),
        )
        return [Memory.from_record(r) for r in rows]

    async def forget(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        memory_id: uuid.UUID | None = None,
        key: str | None = None,
    ) -> int:
        """Delete one memory by id, or every version of a key (any category); returns the count.

        Only rows of this user and exactly this scope are touched, whatever id is passed.
        """
        if (memory_id is None) == (key is None):
            raise InvalidInput(
                "forget needs exactly one of memory_id or key",
                suggestion="pass the id of the memory, or its key, not both",
            )
        if memory_id is not None:
            status = await self._pool.execute(
                "delete from public.memories where id = $1 and user_id = $2 "
                "and companion_id is not distinct from $3",
                memory_id, user_id, companion_id,
            )
        else:
            status = await self._pool.execute(
                "delete from public.memories where user_id = $1 "
                "and companion_id is not distinct from $2 and kind = 'explicit' and key = $3",
                user_id, companion_id, normalize_key(key or ""),
            )
        count = _affected(status)
        self._counters["forgotten"] += count
        if count:
            await self.invalidate(user_id, companion_id)
        return count

    async def forget_all(self, user_id: uuid.UUID, companion_id: uuid.UUID | None = None) -> int:
        """Delete the user's memories: one companion's (not the shared ones), or with None all."""
        if companion_id is None:
            status = await self._pool.execute(
                "delete from public.memories where user_id = $1", user_id
            )
        else:
            status = await self._pool.execute(
                "delete from public.memories where user_id = $1 and companion_id = $2",
                user_id, companion_id,
            )
        count = _affected(status)
        self._counters["forgotten"] += count
        await self.invalidate(user_id, companion_id)
        return count

    async def export(self, user_id: uuid.UUID) -> dict[str, Any]:
        """Everything remembered about the user, across companions, history included (JSON-safe)."""
        rows = await self._pool.fetch(
            f"select {MEMORY_COLUMNS} from public.memories where user_id = $1 "
            "order by kind, occurred_at, created_at",
            user_id,
        )
        memories = [Memory.from_record(r).to_json() for r in rows]
        return {
            "user_id": str(user_id),
            "exported_at": self._clock().isoformat(),
            "explicit": [m for m in memories if m["kind"] == "explicit"],
            "episodic": [m for m in memories if m["kind"] == "episodic"],
        }

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

    # --- episodic log -----------------------------------------------------------------------

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
        if speaker not in SPEAKERS:
            raise InvalidInput(
                f"speaker must be one of {', '.join(SPEAKERS)}",
                suggestion="log the user's turns as 'user' and the replies as 'assistant'",
            )
        cleaned = clean_text(text, field="turn", max_chars=MAX_UTTERANCE_CHARS, truncate=True)
        if not normalize_text(cleaned):
            self._counters["turns_skipped"] += 1
            return
        when = occurred_at or self._clock()
        source = {"session_id": str(session_id)} if session_id is not None else {}
        self._tasks.spawn(self._embed_and_enqueue(user_id, companion_id, speaker, cleaned, when, source))

    async def _embed_and_enqueue(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        speaker: str,
        text: str,
        when: datetime,
        source: dict[str, Any],
    ) -> None:
        embedding = await self._embed_or_none(text)
        self._batcher.enqueue(
            EPISODE_OP,
            (
                uuid.uuid4(), user_id, companion_id, speaker, text, content_hash(text),
                estimate_importance(text, speaker=speaker), when, json.dumps(source), embedding,
            ),
        )
        self._counters["turns_logged"] += 1

    async def import_episodes(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        episodes: Sequence[Episode],
    ) -> int:
        """Store many turns at once (benchmarks, imports); returns how many were new.

        Creates a bare user row when the user does not exist yet. Duplicates (same speaker and
        normalized text) are skipped, so importing twice stores nothing twice.
        """
        prepared: list[tuple[Episode, str, str]] = []
        seen: set[tuple[str, str]] = set()
        for episode in episodes:
            if episode.speaker not in SPEAKERS:
                raise InvalidInput(
                    f"episode speaker {episode.speaker!r} is not one of {', '.join(SPEAKERS)}",
                    suggestion="map each turn to 'user' or 'assistant' before importing",
                )
            text = clean_text(
                episode.text, field="episode", max_chars=MAX_UTTERANCE_CHARS, truncate=True
            )
            digest = content_hash(text)
            if not normalize_text(text) or (episode.speaker, digest) in seen:
                continue
            seen.add((episode.speaker, digest))
            prepared.append((episode, text, digest))
        await self._pool.execute(
            "insert into public.users (id) values ($1) on conflict do nothing", user_id
        )
        inserted = 0
        for start in range(0, len(prepared), _IMPORT_CHUNK):
            chunk = prepared[start : start + _IMPORT_CHUNK]
            try:
                vectors = await self._embedder.embed_batch([text for _, text, _ in chunk])
            except CompanionError:
                raise
            except Exception as exc:
                raise EmbeddingError(
                    f"embedding a batch of episodes failed ({type(exc).__name__})",
                    suggestion="check the embedding backend and import again; nothing "
                    "is stored twice",
                ) from exc
            inserted += int(
                await self._pool.fetchval(
                    _IMPORT_SQL,
                    user_id,
                    companion_id,
                    [uuid.uuid4() for _ in chunk],
                    [e.speaker for e, _, _ in chunk],
                    [text for _, text, _ in chunk],
                    [digest for _, _, digest in chunk],
                    [estimate_importance(text, speaker=e.speaker) for e, text, _ in chunk],
                    [e.occurred_at for e, _, _ in chunk],
                    [json.dumps(e.source) for e, _, _ in chunk],
                    [encode_vector(v) for v in vectors],
                )
            )
        self._counters["episodes_imported"] += inserted
        return inserted

    # --- stats and lifecycle ------------------------------------------------------------------

    async def stats(
        self, user_id: uuid.UUID | None = None, companion_id: uuid.UUID | None = None
    ) -> dict[str, Any]:
        """Service counters, plus row counts for a user (and companion) when given."""
        out: dict[str, Any] = {**self._counters, "pending_tasks": len(self._tasks)}
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

    async def aclose(self) -> None:
        """Finish background work; the batcher (not owned here) is drained by its owner."""
        await self.drain()

    # --- helpers ------------------------------------------------------------------------------

    async def _embed_or_none(self, text: str) -> np.ndarray | None:
        # A memory without a vector is still found by full-text search; never lose the write.
        try:
            return await self._embedder.embed(text)
        except Exception as exc:
            self._counters["embedding_failures"] += 1
            logger.warning("embedding failed, storing without vector (%s)", type(exc).__name__)
            return None

    def _cache_key(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> str:
        return f"memories:current:{user_id}:{companion_id or 'shared'}"

    async def invalidate(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> None:
        """Drop the cached current memories of a scope (and of every companion, for shared)."""
        keys = [self._cache_key(user_id, companion_id)]
        if companion_id is None:
            # Shared memories appear in every companion's view of this user.
            rows = await self._pool.fetch(
                "select id from public.companions where user_id = $1", user_id
            )
            keys += [self._cache_key(user_id, r["id"]) for r in rows]
        await self._cache.delete(*keys)


def _affected(status: str) -> int:
    """Row count from an asyncpg command tag such as 'DELETE 3'."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
