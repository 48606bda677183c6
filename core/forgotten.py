"""What this process was told is forgotten, so that no copy it holds serves it again.

Postgres is the truth, but a process holds copies of a person's memories: the retrieval
engine's in-process index, the cached current memories, a session's memory block for the turn
in progress. A forget deletes the rows in Postgres and notes them here at the same moment;
every copy consults the note before it serves anything, so a forget holds in what the
companion can say even while a copy is out of date (an index that cannot sync because
Postgres went away just after the delete).

When Postgres is away during the forget itself, the delete waits in the batcher's spool (on
disk, replayed when the database is back) and a note on the key hides its versions saved up
to the forget until then. Notes are kept for the life of the process: memory ids are never
reused, and a key note only ever hides versions older than itself.
"""

from __future__ import annotations

import itertools
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from core.memory_records import Memory

# People with notes kept; past it the longest untouched ones without a pending key note go
# (their deletes were confirmed long ago, and any index synced since).
MAX_PEOPLE = 10_000


@dataclass(frozen=True)
class KeyNote:
    """Every version of `key` in one scope saved up to `before` is forgotten."""

    companion_id: uuid.UUID | None
    key: str
    before: datetime


@dataclass
class _Notes:
    ids: set[uuid.UUID] = field(default_factory=set)
    keys: list[KeyNote] = field(default_factory=list)
    version: int = 0
    erased: int = 0


class ForgottenMemories:
    """This process's notes of forgotten memories, per person.

    Every change gets a new version number (one counter for the process, so a number never
    repeats for a person): a copy remembers the version it last took in and catches up when
    it differs.
    """

    def __init__(self, *, max_people: int = MAX_PEOPLE) -> None:
        self._notes: OrderedDict[uuid.UUID, _Notes] = OrderedDict()
        self._max_people = max_people
        self._counter = itertools.count(1)

    def forget_ids(self, user_id: uuid.UUID, ids: set[uuid.UUID] | list[uuid.UUID]) -> None:
        """These memories of the person were deleted."""
        if ids:
            notes = self._touch(user_id)
            notes.ids.update(ids)

    def forget_key(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None, key: str, before: datetime
    ) -> KeyNote:
        """Every version of `key` in this exact scope saved up to `before` is forgotten (its
        delete waits for the database)."""
        note = KeyNote(companion_id, key, before)
        self._touch(user_id).keys.append(note)
        return note

    def erased(self, user_id: uuid.UUID) -> None:
        """Everything about the person was erased: every copy taken before now is void."""
        notes = self._touch(user_id)
        notes.erased = notes.version

    def version(self, user_id: uuid.UUID) -> int:
        """The person's notes' version (0: none); it changes with every note."""
        notes = self._notes.get(user_id)
        return notes.version if notes is not None else 0

    def erased_since(self, user_id: uuid.UUID, version: int) -> bool:
        """Whether the person was erased after a copy took in `version`."""
        notes = self._notes.get(user_id)
        return notes is not None and notes.erased > version

    def ids(self, user_id: uuid.UUID) -> frozenset[uuid.UUID]:
        notes = self._notes.get(user_id)
        return frozenset(notes.ids) if notes is not None else frozenset()

    def key_notes(self, user_id: uuid.UUID) -> tuple[KeyNote, ...]:
        """The person's key notes (what consolidation must not save again while their
        deletes wait in the spool)."""
        notes = self._notes.get(user_id)
        return tuple(notes.keys) if notes is not None else ()

    def hides(self, memory: Memory) -> bool:
        """Whether `memory` (as some copy holds it) was forgotten."""
        notes = self._notes.get(memory.user_id)
        if notes is None:
            return False
        if memory.id in notes.ids:
            return True
        return memory.kind == "explicit" and any(
            note.key == memory.key and note.companion_id == memory.companion_id
            and memory.created_at <= note.before
            for note in notes.keys
        )

    def visible(self, memories: list[Memory]) -> list[Memory]:
        """`memories` without the forgotten ones."""
        return [m for m in memories if not self.hides(m)]

    def stats(self) -> dict[str, int]:
        """Counts only: people with notes, noted ids, key notes (kept for the process's life,
        also once their delete was made)."""
        return {
            "people_with_notes": len(self._notes),
            "forgotten_ids": sum(len(n.ids) for n in self._notes.values()),
            "forgotten_key_notes": sum(len(n.keys) for n in self._notes.values()),
        }

    def _touch(self, user_id: uuid.UUID) -> _Notes:
        notes = self._notes.get(user_id)
        if notes is None:
            notes = self._notes[user_id] = _Notes()
        self._notes.move_to_end(user_id)
        notes.version = next(self._counter)
        while len(self._notes) > self._max_people:
            oldest = next(
                (u for u, n in self._notes.items() if not n.keys and u != user_id), None
            )
            if oldest is None:
                break
            del self._notes[oldest]
        return notes
