"""Per-user document frequencies of words, for the IDF weights of keyword search.

`memory_term_stats` holds, per user, how many memories contain each stemmed word (lexemes in
two or more memories), and `memory_term_corpus` how many memories there were. They are rebuilt
from `memories.tsv` with Postgres's `ts_stat`, off the critical path; until the first rebuild
every word weighs the same, and words added since the last one count as rare, which is what
they are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

# Any constant works; it only has to be the same in every process.
_LOCK_NAMESPACE = "memory_term_stats:"


@dataclass(frozen=True)
class CorpusInfo:
    """When a user's statistics were built and over how many memories."""

    docs: int
    refreshed_at: datetime


async def corpus_info(conn: asyncpg.Connection, user_id: uuid.UUID) -> CorpusInfo | None:
    row = await conn.fetchrow(
        "select docs, refreshed_at from public.memory_term_corpus where user_id = $1", user_id
    )
    return None if row is None else CorpusInfo(int(row["docs"]), row["refreshed_at"])


async def refresh(conn: asyncpg.Connection, user_id: uuid.UUID) -> bool:
    """Rebuild one user's statistics; False when another process is rebuilding them now."""
    async with conn.transaction():
        locked = await conn.fetchval(
            "select pg_try_advisory_xact_lock(hashtextextended($1, 0))",
            f"{_LOCK_NAMESPACE}{user_id}",
        )
        if not locked:
            return False
        await conn.execute("delete from public.memory_term_stats where user_id = $1", user_id)
        # ts_stat takes the query as text; the id is a canonical UUID rendered by Postgres.
        await conn.execute(
            """
            insert into public.memory_term_stats (user_id, lexeme, docs)
            select $1, s.word, s.ndoc
            from ts_stat(format('select tsv from public.memories where user_id = %L::uuid',
                                $1::uuid::text)) s
            where s.ndoc > 1
            """,
            user_id,
        )
        await conn.execute(
            """
            insert into public.memory_term_corpus (user_id, docs, refreshed_at)
            values ($1, (select count(*) from public.memories where user_id = $1), now())
            on conflict (user_id) do update
              set docs = excluded.docs, refreshed_at = excluded.refreshed_at
            """,
            user_id,
        )
    return True
