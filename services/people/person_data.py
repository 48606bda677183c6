"""Everything the companion stores about one person: what it amounts to, an export, an erasure.

"Everything about me" is whatever records, or was derived from, what the person said or did:
  * memories: explicit ones (every version) and the episodic log of every turn, with the
    keyword statistics built from them, and the keys they asked to forget (kept so that
    consolidation does not learn them again from earlier words);
  * conversations: sessions (times, room, summary) and every message;
  * follow-ups the companion meant to ask about;
  * the profile: name, preferred name, interests, time zone, onboarding, metadata;
  * each companion's profile summary of the person;
  * the relationship each companion built with them: its mood, baseline, needs, habits picked
    up from them (quirks) and the mood history;
  * writes about them not in the database yet (queued, spooled to disk, refused or set aside).
What stays: the account row itself (its id and creation time, so a session can go on) and the
companions (the name, character, persona and voice the person chose to talk to); safety
incidents stay as a record of what was refused, without the person's words.

An erasure is one transaction (all of it or nothing); pending writes are erased first, so that
none of them lands afterwards. It needs the database: while it is away the erasure is refused
with "try again in a moment" and nothing is erased.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from core.dates import utc_now
from infrastructure.cache import Cache
from infrastructure.connection_pool import ConnectionPool, rows_affected
from services.memory.memory_service import MemoryService
from services.people.conversation_service import ConversationService
from services.people.user_service import UserService
from services.persona.personality_service import PersonalityService

logger = logging.getLogger(__name__)

# Every table holding rows about the person, erased in this order (messages before their
# sessions, follow-ups before the sessions they point at).
ERASED_TABLES = (
    "memories", "memory_term_stats", "memory_term_corpus", "forgotten_keys", "messages",
    "follow_ups",
    "sessions", "personality_history", "personality_state", "needs", "quirks",
)
_RESET_PROFILE = (
    "update public.users set display_name = null, preferred_name = null, timezone = null, "
    "interests = '{}', profile_summary = null, profile_updated_at = null, "
    "onboarding_state = 'new', onboarded_at = null, metadata = '{}'::jsonb where id = $1"
)
_INVENTORY = """
select
  (select count(*) from public.memories
    where user_id = $1 and kind = 'explicit' and superseded_at is null) as kept_memories,
  (select count(*) from public.memories
    where user_id = $1 and kind = 'explicit' and superseded_at is not null) as older_values,
  (select count(*) from public.memories where user_id = $1 and kind = 'episodic')
    as episodic_turns,
  (select count(*) from public.sessions where user_id = $1) as conversations,
  (select min(started_at) from public.sessions where user_id = $1) as first_conversation,
  (select count(*) from public.messages where user_id = $1) as messages,
  (select count(*) from public.follow_ups where user_id = $1) as follow_ups,
  (select count(*) from public.companions
    where user_id = $1 and profile_summary is not null) as profile_summaries,
  (select count(*) from public.personality_history where user_id = $1) as mood_records,
  (select count(*) from public.forgotten_keys where user_id = $1) as forgotten_keys
"""


@dataclass(frozen=True)
class Inventory:
    """How much is stored about a person (what `what_do_you_know_about_me` tells them)."""

    kept_memories: int
    older_values: int
    episodic_turns: int
    conversations: int
    first_conversation: datetime | None
    messages: int
    follow_ups: int
    profile_summaries: int
    mood_records: int
    forgotten_keys: int

    def to_json(self) -> dict[str, Any]:
        return json_safe(self.__dict__)


@dataclass(frozen=True)
class LiveSession:
    """A conversation going on while its person is erased: it goes on, as a new one."""

    id: uuid.UUID
    companion_id: uuid.UUID | None
    room: str | None


class PersonData:
    """One person's stored data as a whole: inventory, export and erasure.

    Args:
        pool: the shared database pool.
        cache: the shared cache (the person's entries are dropped after an erasure).
        memory: memories, their export, pending writes and the forgotten-memory notes.
        users: the profile (its cache keys).
        conversations: the greeting context (its cache keys).
        personality: the relationship state it caches and tallies per session.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        cache: Cache,
        memory: MemoryService,
        users: UserService,
        conversations: ConversationService,
        personality: PersonalityService,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._memory = memory
        self._users = users
        self._conversations = conversations
        self._personality = personality
        self.counters = {"erasures": 0, "exports": 0, "rows_erased": 0}

    async def inventory(self, user_id: uuid.UUID) -> Inventory:
        """Counts of everything stored about the person."""
        row = await self._pool.fetchrow(_INVENTORY, user_id)
        assert row is not None  # an aggregate row always comes back
        return Inventory(**dict(row))

    async def export(self, user_id: uuid.UUID) -> dict[str, Any]:
        """Everything stored about the person, JSON-safe (vectors left out, their words in)."""
        fetch = self._pool.fetch
        profile = await self._pool.fetchrow("select * from public.users where id = $1", user_id)
        sessions = await fetch(
            "select * from public.sessions where user_id = $1 order by started_at", user_id
        )
        messages = await fetch(
            "select * from public.messages where user_id = $1 order by created_at, id", user_id
        )
        by_session: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for message in messages:
            by_session.setdefault(message["session_id"], []).append(json_safe(dict(message)))
        conversations = [
            {**json_safe(dict(s)), "messages": by_session.pop(s["id"], [])} for s in sessions
        ]

        async def rows(table: str, order: str) -> list[dict[str, Any]]:
            found = await fetch(
                f"select * from public.{table} where user_id = $1 order by {order}", user_id
            )
            return [json_safe(dict(r)) for r in found]

        self.counters["exports"] += 1
        return {
            "user_id": str(user_id),
            "exported_at": utc_now().isoformat(),
            "profile": json_safe(dict(profile)) if profile is not None else None,
            "companions": await rows("companions", "created_at"),
            "memories": await self._memory.export(user_id),
            "memory_words": await rows("memory_term_stats", "lexeme"),
            "forgotten_keys": await rows("forgotten_keys", "forgotten_at, key"),
            "conversations": conversations,
            "follow_ups": await rows("follow_ups", "created_at"),
            "personality": {
                "state": await rows("personality_state", "companion_id"),
                "needs": await rows("needs", "companion_id, need"),
                "quirks": await rows("quirks", "created_at"),
                "history": await rows("personality_history", "created_at"),
            },
            "security_incidents": await rows("security_incidents", "created_at"),
        }

    async def erase(
        self, user_id: uuid.UUID, *, live: LiveSession | None = None
    ) -> dict[str, int]:
        """Erase everything about the person (module docstring); returns rows per table.

        Args:
            live: a conversation going on: its row is erased with the rest and opened again
                empty under the same id, so the session's later messages have a home.

        Raises:
            StorageUnavailable: the database did not answer; nothing was erased in it (pending
                writes may have been); try again in a moment.
        """
        await self._pool.fetchval("select 1")  # refuse at once, erasing nothing, if it is away
        pending = await self._memory.erase_pending(user_id)
        erased: dict[str, int] = {"pending_writes": pending}
        companions = [
            r["id"] for r in await self._pool.fetch(
                "select id from public.companions where user_id = $1", user_id
            )
        ]
        async with self._pool.acquire() as conn, conn.transaction():
            # The save lock (ExplicitMemories): no memory is saved halfway through.
            await conn.execute(
                "select pg_advisory_xact_lock(hashtextextended($1, 0))", f"quota:{user_id}"
            )
            for table in ERASED_TABLES:
                status = await conn.execute(
                    f"delete from public.{table} where user_id = $1", user_id
                )
                erased[table] = rows_affected(status)
            erased["incident_excerpts"] = rows_affected(await conn.execute(
                "update public.security_incidents set excerpt = '' "
                "where user_id = $1 and excerpt <> ''", user_id,
            ))
            erased["profile_summaries"] = rows_affected(await conn.execute(
                "update public.companions set profile_summary = null, "
                "profile_updated_at = null where user_id = $1 and profile_summary is not null",
                user_id,
            ))
            await conn.execute(_RESET_PROFILE, user_id)
            if live is not None:
                await conn.execute(
                    "insert into public.sessions (id, user_id, companion_id, room) "
                    "values ($1, $2, $3, $4)",
                    live.id, user_id, live.companion_id, live.room,
                )
        await self._forget_copies(user_id, companions)
        self.counters["erasures"] += 1
        self.counters["rows_erased"] += sum(erased.values())
        logger.info("everything about one person erased (rows=%s)", sum(erased.values()))
        return erased

    async def _forget_copies(self, user_id: uuid.UUID, companions: list[uuid.UUID]) -> None:
        """Drop every copy this process and the shared cache hold of the erased data."""
        self._memory.forgotten.erased(user_id)
        self._personality.forget(user_id, companions)
        keys = [self._users.cache_key(user_id)]
        for companion_id in [*companions, None]:
            keys.append(self._conversations.greeting_key(user_id, companion_id))
            if companion_id is not None:
                keys += [self._users.summary_key(user_id, companion_id),
                         self._personality.cache_key(user_id, companion_id)]
        await self._cache.delete(*keys)
        await self._memory.invalidate(user_id, None)


def json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """A database row as JSON values: ids and times as text, numbers as numbers."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, uuid.UUID):
            out[name] = str(value)
        elif isinstance(value, datetime | date):
            out[name] = value.isoformat()
        elif isinstance(value, Decimal):
            out[name] = float(value)
        elif isinstance(value, list | tuple):
            out[name] = [str(v) if isinstance(v, uuid.UUID) else v for v in value]
        else:
            out[name] = value
    return out
