"""The episodic log: turns logged off the critical path, and bulk imports of past turns.

A logged turn is embedded in a background task, then written through the batcher; an import
embeds in batches and writes one chunk per round trip, skipping turns already stored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from core.errors import CompanionError, EmbeddingError, InvalidInput
from core.memory_records import SPEAKERS, Episode, content_hash, normalize_text
from core.validators import MAX_UTTERANCE_CHARS, clean_text
from infrastructure.vector_codec import encode_vector
from services.memory.importance import estimate_importance
from services.memory.memory_core import EPISODE_OP, MemoryCore

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


class EpisodicLog(MemoryCore):
    """The turn log of `MemoryService`: log_turn (background) and import_episodes (bulk)."""

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
        self._tasks.spawn(
            self._embed_and_enqueue(user_id, companion_id, speaker, cleaned, when, source)
        )

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
