"""Forgetting: one memory by id, every version of a key, or everything about a person.

Only rows of the given user, and of exactly the given scope, are ever touched; the cached
current memories of the scope are dropped with them, and what was forgotten is noted in the
process's `ForgottenMemories`, so that no copy held in this process serves it again (an
in-process index that cannot sync while Postgres is away).

A forget of one memory or one key holds even while the database does not answer: the delete
is put in the batcher's spool on disk (synced) before anything is promised, and the note hides
what it covers in this process meanwhile, so the person hears the same "forgotten" either way.
The delete is made when the spool is replayed: by the next job to start, before it serves
anyone, or by this process once its writes go through again. It only deletes versions saved
up to the forget, so a new value saved after the database came back (before the replay)
stays. If the disk will not take it either, the forget is refused ("try again in a moment")
and nothing is hidden; a delete that a hung database received may still be made when it
wakes (in the direction the person asked for).

Each forget of a key, or of an explicit memory by id, also records the key, its scope and the
time in `public.forgotten_keys`, in the same statement as the delete (now or when replayed):
consolidation, in whatever process and however late, does not save that key again from words
said before the forget (`forgotten_keys`).

Text an LLM derived from the deleted rows goes with them (`derived_text`): in the same
transaction as the delete, the profile summaries of the scope are cleared and marked due, and
the sentences of session summaries and the follow-ups that mention the forgotten value are
removed; a spooled forget carries the profile part with it (the sentence scrub needs the
deleted values, which the database could not give: see `derived_text`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from core.errors import InvalidInput, StorageUnavailable
from core.forgotten import ForgottenMemories
from core.memory_records import normalize_key
from core.mentions import distinctive_words
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.write_kinds import WriteKind
from services.memory.current_memories import CurrentMemories
from services.memory.derived_text import WRITE_KINDS as DERIVED_KINDS
from services.memory.derived_text import DerivedText, Scrubbed
from services.memory.forgotten_keys import NOTE_KEY, note_deleted_key

logger = logging.getLogger(__name__)

# Each forget notes the key in public.forgotten_keys in the same statement as the delete
# (`forgotten_keys`), so that no consolidation, in any process, saves it again.
_DELETE_KEY = (
    "delete from public.memories where user_id = $1 and companion_id is not distinct from $2 "
    "and kind = 'explicit' and key = $3"
)
# What a deleted row said, for the derived text (`derived_text`): an explicit memory's value,
# a logged turn's words.
_SAID = "coalesce(value, content) as said"
# Now: every version. Replayed from the spool: only versions saved up to the forget.
FORGET_KEY_SQL = (
    f"with gone as ({_DELETE_KEY} returning id, {_SAID}), {NOTE_KEY} select id, said from gone"
)
_DELETE_ID = (
    "delete from public.memories where id = $1 and user_id = $2 "
    "and companion_id is not distinct from $3"
)
FORGET_ID_SQL = (
    f"with gone as ({_DELETE_ID} returning id, kind, key, {_SAID}), "
    f"{note_deleted_key('$2', '$3', '$4')} select id, said from gone"
)
FORGET_KEY_KIND = WriteKind.of(
    "memory.forget_key",
    f"with gone as ({_DELETE_KEY} and created_at <= $4 returning id), {NOTE_KEY} "
    "select id from gone",
    "user_id:uuid companion_id:uuid? key:text before:time",
    version=2,
)
FORGET_ID_KIND = WriteKind.of(
    "memory.forget_id",
    f"with gone as ({_DELETE_ID} returning id, kind, key), "
    f"{note_deleted_key('$2', '$3', '$4')} select id from gone",
    "id:uuid user_id:uuid companion_id:uuid? at:time",
    version=2,
)
WRITE_KINDS = (FORGET_KEY_KIND, FORGET_ID_KIND)
# Version 1 of each noted nothing in forgotten_keys; kept to replay lines spooled before.
OLDER_KINDS = {
    FORGET_KEY_KIND.op: (WriteKind.of(
        "memory.forget_key",
        "delete from public.memories where user_id = $1 and companion_id is not distinct from $2 "
        "and kind = 'explicit' and key = $3 and created_at <= $4",
        "user_id:uuid companion_id:uuid? key:text before:time",
    ),),
    FORGET_ID_KIND.op: (WriteKind.of(
        "memory.forget_id",
        "delete from public.memories where id = $1 and user_id = $2 "
        "and companion_id is not distinct from $3",
        "id:uuid user_id:uuid companion_id:uuid?",
    ),),
}


@dataclass(frozen=True)
class Forgotten:
    """What a forget did.

    Attributes:
        versions: rows deleted (when `deferred`: 0, the database could not say).
        deferred: the database did not answer; the delete waits in the spool on disk, and
            nothing it covers is served by this process meanwhile.
        derived: what was taken out of text derived from the rows (`derived_text`); when
            `deferred`, the profile summaries of the scope are cleared at the replay.
        words: the distinctive words of the deleted values (`core.mentions`), for text the
            caller is still to write (a session's summary); in process only, never logged.
    """

    versions: int
    deferred: bool = False
    derived: Scrubbed = Scrubbed()
    words: frozenset[str] = frozenset()


class Forgetting:
    """Deletes memories for good (history included) and drops them from the cache.

    Args:
        pool: the shared database pool.
        batcher: keeps a forget on disk while the database is away (its kinds registered here).
        current: the cached current memories, invalidated after a delete.
        derived: takes the deleted values out of summaries and follow-ups.
        forgotten: this process's notes of forgotten memories.
        clock: returns "now" (the clock that stamps saved memories).
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        batcher: DatabaseBatcher,
        current: CurrentMemories,
        derived: DerivedText,
        forgotten: ForgottenMemories,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._batcher = batcher
        self._current = current
        self._derived = derived
        self._forgotten = forgotten
        self._clock = clock
        self.counters = {"forgotten": 0, "forgets_deferred": 0}
        for kind in WRITE_KINDS:
            batcher.register(kind, older=OLDER_KINDS[kind.op])
        for kind in DERIVED_KINDS:
            batcher.register(kind)

    async def forget(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        memory_id: uuid.UUID | None = None,
        key: str | None = None,
    ) -> Forgotten:
        """See `MemoryService.forget`.

        Raises:
            InvalidInput: not exactly one of `memory_id` and `key` was given.
            StorageUnavailable: neither the database nor the disk took the forget; nothing is
                hidden (a hung database may still make the delete when it wakes).
        """
        if (memory_id is None) == (key is None):
            raise InvalidInput(
                "forget needs exactly one of memory_id or key",
                suggestion="pass the id of the memory, or its key, not both",
            )
        before = self._clock()
        scrubbed = Scrubbed()
        companions: list[uuid.UUID] = []
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if key is not None:
                    rows = await conn.fetch(
                        FORGET_KEY_SQL, user_id, companion_id, normalize_key(key), before
                    )
                else:
                    rows = await conn.fetch(
                        FORGET_ID_SQL, memory_id, user_id, companion_id, before
                    )
                if rows:
                    scrubbed, companions = await self._derived.forget(
                        conn, user_id, companion_id, [r["said"] for r in rows]
                    )
        except StorageUnavailable:
            await self._forget_later(user_id, companion_id, memory_id, key, before)
            return Forgotten(0, deferred=True)
        versions = await self._forgot(user_id, companion_id, [r["id"] for r in rows])
        if rows:
            await self._derived.drop_cached(user_id, companion_id, companions)
        said = [r["said"] for r in rows]
        return Forgotten(versions, derived=scrubbed, words=distinctive_words(said))

    async def _forget_later(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        memory_id: uuid.UUID | None,
        key: str | None,
        before: datetime,
    ) -> None:
        # On disk first: if the disk refuses too, this raises and nothing has changed. The
        # profile summaries of the scope are cleared at the replay, after the delete.
        profiles = self._derived.spooled_write(user_id, companion_id)
        if key is not None:
            key = normalize_key(key)
            await self._batcher.spool(
                FORGET_KEY_KIND.op, (user_id, companion_id, key, before), then=(profiles,)
            )
            self._forgotten.forget_key(user_id, companion_id, key, before)
        else:
            assert memory_id is not None
            await self._batcher.spool(
                FORGET_ID_KIND.op, (memory_id, user_id, companion_id, before),
                then=(profiles,),
            )
            self._forgotten.forget_ids(user_id, [memory_id])
        self.counters["forgets_deferred"] += 1
        logger.warning("database away: a forget waits in the spool and holds meanwhile")
        try:
            await self._current.invalidate(user_id, companion_id)
            # Of a shared memory, only the scope's own entries: the companions are unknown.
            await self._derived.drop_cached(user_id, companion_id, ())
        except StorageUnavailable:
            pass  # the notes filter whatever the cache still holds

    async def _forgot(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None, ids: list[uuid.UUID]
    ) -> int:
        # Noted before anything else can run: from here on no copy in this process serves them.
        self._forgotten.forget_ids(user_id, ids)
        self.counters["forgotten"] += len(ids)
        if ids:
            await self._current.invalidate(user_id, companion_id)
        return len(ids)
