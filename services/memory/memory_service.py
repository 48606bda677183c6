"""Explicit memories (category/key/value, superseded never overwritten) and the episodic turn log.

Explicit memories are what the person told the companion to keep ("my sister is Maya"): saving
the same key again supersedes the old value in one transaction, so there is exactly one current
value and a queryable history. Episodic memories are the turns themselves, logged off the
critical path: embedded in a background task, then written through the batcher.

The service is put together from one part per concern: `memory_records` (data classes, row
mapping), `memory_core` (shared state), `explicit_memories`, `episodic_log` and `memory_admin`.
Everything callers import from here stays importable from here.
"""

from __future__ import annotations

from core.memory_records import (
    MEMORY_COLUMNS,
    SPEAKERS,
    Episode,
    Memory,
    content_hash,
    explicit_content,
    normalize_key,
    normalize_text,
)
from services.memory.episodic_log import EpisodicLog
from services.memory.explicit_memories import ExplicitMemories
from services.memory.memory_admin import MemoryAdmin
from services.memory.memory_core import EPISODE_OP

__all__ = [
    "EPISODE_OP",
    "MEMORY_COLUMNS",
    "SPEAKERS",
    "Episode",
    "Memory",
    "MemoryService",
    "content_hash",
    "explicit_content",
    "normalize_key",
    "normalize_text",
]


class MemoryService(ExplicitMemories, EpisodicLog, MemoryAdmin):
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
