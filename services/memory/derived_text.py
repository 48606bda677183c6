"""What an LLM wrote from memories, made to forget what a forget deleted.

Deleting memory rows is not enough: text derived from them is served too. A forget therefore
reaches, in the same transaction as its delete (`Forgetting`):

- the profile summaries that could contain the memory (the companion's, for a memory of one
  companion; every companion's of the person, for a shared memory): cleared, and marked due
  (`sessions.profile_due_at` on each companion's latest session), so that the next refresh
  (`AfterSession`, `MemoryMaintenance`, a session start) rewrites them from what remains;
- the session summaries (of that companion, or all of the person's for a shared memory) and
  the follow-ups that could be raised in that scope (the companion's and the ones of no
  companion in particular; raised ones too, which the session that raised them still holds
  and an export lists): each sentence of a summary, and each follow-up, that mentions the
  forgotten value is removed (a summary left with no sentence becomes none).

"Mentions" is the word rule of `core.mentions`, deliberately wide: it looks at the deleted
rows' values (an explicit memory's value, not its key; a logged turn's words). Removing a
sentence that only shares a word ("walked the golden retriever" after forgetting that the dog
is "Rex, a golden retriever") is accepted: a summary is rewritten anyway, and serving a
forgotten value is not.

After the transaction, the cached profile summaries and greeting contexts of the scope are
dropped. Only counts are logged, never the words.

While the database is away the delete waits in the spool (`Forgetting`); `SPOOLED_KIND` goes
into the spool with it, in the same write, and when they are replayed it clears and marks the
profile summaries of the scope as above. The sentence scrub cannot be made then: its words come
from the deleted rows' values, which the process that spooled the forget could not read, and a
registered statement does not carry the word rule. Session summaries and follow-ups written
before such a forget keep their sentences until a later forget of the same value.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.mentions import distinctive_words, mentions, without_mentions
from infrastructure.cache import Cache
from infrastructure.write_kinds import WriteKind
from services.people.conversation_service import ConversationService
from services.people.user_service import UserService

logger = logging.getLogger(__name__)

# The scope's companions; each one's profile summary cleared, and due on its latest session.
_CLEAR_PROFILES_SQL = """
with scope as (
  select id from public.companions where user_id = $1 and ($2::uuid is null or id = $2)
), cleared as (
  update public.companions c set profile_summary = null, profile_updated_at = now()
  where c.id in (select id from scope) and c.user_id = $1 and c.profile_summary is not null
  returning c.id
), due as (
  update public.sessions s set profile_due_at = now()
  where s.user_id = $1 and s.id in (
    select distinct on (p.companion_id) p.id from public.sessions p
    where p.user_id = $1 and p.companion_id in (select id from cleared)
    order by p.companion_id, p.started_at desc)
  returning s.id
)
select scope.id, scope.id in (select id from cleared) as cleared from scope
"""
SPOOLED_KIND = WriteKind.of(
    "memory.forget_profiles", _CLEAR_PROFILES_SQL, "user_id:uuid companion_id:uuid?"
)
WRITE_KINDS = (SPOOLED_KIND,)


@dataclass(frozen=True)
class Scrubbed:
    """What a forget took out of derived text.

    Attributes:
        profiles_cleared: profile summaries cleared (and marked due).
        summaries_scrubbed: session summaries that lost sentences.
        follow_ups_removed: the follow-ups removed.
    """

    profiles_cleared: int = 0
    summaries_scrubbed: int = 0
    follow_ups_removed: tuple[uuid.UUID, ...] = ()


class DerivedText:
    """Takes what a forget deleted out of profile summaries, session summaries, follow-ups.

    Args:
        cache: where profile summaries and greeting contexts are cached (dropped after).
    """

    def __init__(self, *, cache: Cache) -> None:
        self._cache = cache
        self.counters = {
            "profile_summaries_cleared": 0,
            "session_summaries_scrubbed": 0,
            "follow_ups_scrubbed": 0,
        }

    async def forget(
        self,
        conn: asyncpg.Connection[asyncpg.Record],
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        values: Sequence[str],
    ) -> tuple[Scrubbed, list[uuid.UUID]]:
        """On `conn`, inside the caller's transaction (the one that deleted the rows whose
        `values` these are): clear and mark the profile summaries of the scope, scrub the
        session summaries and follow-ups. Returns what was done and the scope's companions
        (for `drop_cached`, once the transaction is committed)."""
        scope = await conn.fetch(_CLEAR_PROFILES_SQL, user_id, companion_id)
        words = distinctive_words(values)
        summaries = 0
        removed: list[uuid.UUID] = []
        if words:
            summaries = await self._scrub_summaries(conn, user_id, companion_id, words)
            removed = await self._scrub_follow_ups(conn, user_id, companion_id, words)
        scrubbed = Scrubbed(
            profiles_cleared=sum(1 for r in scope if r["cleared"]),
            summaries_scrubbed=summaries,
            follow_ups_removed=tuple(removed),
        )
        self.counters["profile_summaries_cleared"] += scrubbed.profiles_cleared
        self.counters["session_summaries_scrubbed"] += summaries
        self.counters["follow_ups_scrubbed"] += len(removed)
        logger.info(
            "derived text forgotten (profiles=%s, summaries=%s, follow_ups=%s, words=%s)",
            scrubbed.profiles_cleared, summaries, len(removed), len(words),
        )
        return scrubbed, [r["id"] for r in scope]

    async def drop_cached(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None, companions: Iterable[uuid.UUID]
    ) -> None:
        """Drop the cached profile summaries and greeting contexts of the scope."""
        keys: list[str] = []
        for cid in {*companions, *([companion_id] if companion_id else [])}:
            keys += [UserService.summary_key(user_id, cid),
                     ConversationService.greeting_key(user_id, cid)]
        if companion_id is None:
            keys.append(ConversationService.greeting_key(user_id, None))
        await self._cache.delete(*keys)

    @staticmethod
    def spooled_write(
        user_id: uuid.UUID, companion_id: uuid.UUID | None
    ) -> tuple[str, tuple[Any, ...]]:
        """The write that clears the scope's profile summaries when a spooled forget is
        replayed (spooled with it, after it)."""
        return SPOOLED_KIND.op, (user_id, companion_id)

    async def _scrub_summaries(
        self,
        conn: asyncpg.Connection[asyncpg.Record],
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        words: frozenset[str],
    ) -> int:
        # The substring test narrows the rows; the word rule decides.
        rows = await conn.fetch(
            "select id, summary from public.sessions where user_id = $1 "
            "and ($2::uuid is null or companion_id = $2) and summary is not null "
            "and lower(summary) like any($3::text[]) for update",
            user_id, companion_id, _patterns(words),
        )
        changed = [
            (r["id"], without_mentions(r["summary"], words))
            for r in rows if mentions(r["summary"], words)
        ]
        if changed:
            await conn.executemany(
                "update public.sessions set summary = $2 where id = $1 and user_id = $3",
                [(sid, text, user_id) for sid, text in changed],
            )
        return len(changed)

    async def _scrub_follow_ups(
        self,
        conn: asyncpg.Connection[asyncpg.Record],
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        words: frozenset[str],
    ) -> list[uuid.UUID]:
        rows = await conn.fetch(
            "select id, topic, detail from public.follow_ups where user_id = $1 "
            "and ($2::uuid is null or companion_id = $2 or companion_id is null) "
            "and lower(topic || ' ' || detail) like any($3::text[]) for update",
            user_id, companion_id, _patterns(words),
        )
        gone = [r["id"] for r in rows if mentions(f"{r['topic']} {r['detail']}", words)]
        if gone:
            await conn.execute(
                "delete from public.follow_ups where user_id = $1 and id = any($2::uuid[])",
                user_id, gone,
            )
        return gone


def _patterns(words: frozenset[str]) -> list[str]:
    """LIKE patterns for the rows that may mention `words` (a superset; Python decides).

    Words are letters only (`_WORD`), so nothing in them is special to LIKE. Postgres lowers
    only ASCII letters under some locales: with a word beyond ASCII every row is read.
    """
    if not all(w.isascii() for w in words):
        return ["%"]
    return [f"%{w}%" for w in sorted(words)]
