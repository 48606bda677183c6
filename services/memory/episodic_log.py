"""The episodic log: turns logged off the critical path, and bulk imports of past turns.

A logged turn is embedded in a background task, then written through the batcher; an import
embeds in batches and writes one chunk per round trip, skipping turns already stored.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from core.errors import InvalidInput
from core.memory_records import SPEAKERS, Episode, content_hash, normalize_text
from core.tasks import BackgroundTasks
from core.validators import MAX_UTTERANCE_CHARS, clean_text
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.vector_codec import encode_vector
from infrastructure.write_kinds import WriteKind
from services.memory.importance import estimate_importance
from services.memory.memory_vectors import MemoryVectors

EPISODE_OP = "memory.episode"
_EPISODE_SQL = """
insert into public.memories
  (id, user_id, companion_id, kind, speaker, content, content_hash, importance, occurred_at,
   source, embedding)
values ($1, $2, $3, 'episodic', $4, $5, $6, $7, $8, $9::jsonb, $10)
on conflict do nothing
"""
EPISODE_KIND = WriteKind.of(
    EPISODE_OP, _EPISODE_SQL,
    "id:uuid user_id:uuid companion_id:uuid? speaker:text content:text content_hash:text "
    "importance:float occurred_at:time source:json embedding:vector?",
)

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


@dataclass(eq=False)
class _PendingTurn:
    """A logged turn being embedded; compared by identity (two turns may say the same)."""

    user_id: uuid.UUID
    companion_id: uuid.UUID | None
    speaker: str
    text: str
    when: datetime
    source: dict[str, Any]

    def belongs_to(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> bool:
        return self.user_id == user_id and (
            companion_id is None or self.companion_id == companion_id
        )


class EpisodicLog:
    """The turn log: log_turn (in the background) and import_episodes (in bulk).

    Args:
        pool: the shared database pool (imports).
        batcher: carries logged turns to the database; the episode insert is registered here.
        vectors: embeds the turns.
        tasks: the owner's background tasks, where a logged turn is embedded.
        clock: returns "now".
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        batcher: DatabaseBatcher,
        vectors: MemoryVectors,
        tasks: BackgroundTasks,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._batcher = batcher
        self._vectors = vectors
        self._tasks = tasks
        self._clock = clock
        self.counters = {
            "turns_logged": 0, "turns_skipped": 0, "turns_forgotten": 0, "episodes_imported": 0,
        }
        self._pending: set[_PendingTurn] = set()
        batcher.register(EPISODE_KIND)

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
            self.counters["turns_skipped"] += 1
            return
        when = occurred_at or self._clock()
        source = {"session_id": str(session_id)} if session_id is not None else {}
        turn = _PendingTurn(user_id, companion_id, speaker, cleaned, when, source)
        self._pending.add(turn)
        self._tasks.spawn(self._embed_and_enqueue(turn))

    async def _embed_and_enqueue(self, turn: _PendingTurn) -> None:
        try:
            embedding = await self._vectors.embed_or_none(turn.text)
        except asyncio.CancelledError:
            # Shutdown ran out of time for the embedding: the turn is kept without a vector.
            self._enqueue(turn, None)
            raise
        self._enqueue(turn, embedding)

    def _enqueue(self, turn: _PendingTurn, embedding: np.ndarray | None) -> None:
        if turn not in self._pending:
            self.counters["turns_forgotten"] += 1  # forgotten while it was being embedded
            return
        self._pending.discard(turn)
        self._batcher.enqueue(
            EPISODE_OP,
            (
                uuid.uuid4(), turn.user_id, turn.companion_id, turn.speaker, turn.text,
                content_hash(turn.text), estimate_importance(turn.text, speaker=turn.speaker),
                turn.when, json.dumps(turn.source), embedding,
            ),
        )
        self.counters["turns_logged"] += 1

    def forget_pending(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> int:
        """Drop the user's turns still being embedded (of one companion, or all with None)."""
        gone = {t for t in self._pending if t.belongs_to(user_id, companion_id)}
        self._pending -= gone
        return len(gone)

    def pending_of(self, user_id: uuid.UUID) -> list[dict[str, Any]]:
        """The user's turns still being embedded (not queued yet), for an export."""
        return [
            {"speaker": t.speaker, "content": t.text, "occurred_at": t.when.isoformat(),
             "companion_id": str(t.companion_id) if t.companion_id else None}
            for t in self._pending if t.user_id == user_id
        ]

    async def import_episodes(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        episodes: Sequence[Episode],
    ) -> int:
        """Embed in batches and insert one chunk per round trip; see
        `MemoryService.import_episodes`."""
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
            vectors = await self._vectors.embed_all([text for _, text, _ in chunk])
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
        self.counters["episodes_imported"] += inserted
        return inserted
