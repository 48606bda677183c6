"""The process's notes of forgotten memories: what they hide, and how copies see a change."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.forgotten import ForgottenMemories
from core.memory_records import Memory

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def memory(user: uuid.UUID, *, key: str | None = None, companion: uuid.UUID | None = None,
           created: datetime = NOW, kind: str = "explicit") -> Memory:
    return Memory(
        id=uuid.uuid4(), user_id=user, companion_id=companion, kind=kind, speaker="user",
        category="FACT" if kind == "explicit" else None, key=key, value="v", content="c",
        importance=0.5, occurred_at=created, event_date=None, created_at=created,
        superseded_at=None, access_count=0, last_accessed_at=None, source={},
    )


def test_a_forgotten_id_is_hidden_for_its_person_only_and_the_version_moves() -> None:
    notes = ForgottenMemories()
    me, other = uuid.uuid4(), uuid.uuid4()
    mine, kept = memory(me), memory(me)
    theirs = replace(mine, user_id=other)
    assert notes.version(me) == 0
    notes.forget_ids(me, [mine.id])
    assert notes.hides(mine) and not notes.hides(theirs)
    assert notes.version(me) > 0 and notes.version(other) == 0
    assert notes.visible([mine, kept]) == [kept]


def test_a_key_note_hides_older_versions_in_its_scope_only() -> None:
    notes = ForgottenMemories()
    me, companion = uuid.uuid4(), uuid.uuid4()
    notes.forget_key(me, companion, "dog_name", NOW)
    assert notes.hides(memory(me, key="dog_name", companion=companion))
    # Saved after the forget, shared instead of this companion's, another key, a turn: kept.
    assert not notes.hides(memory(me, key="dog_name", companion=companion,
                                  created=NOW + timedelta(seconds=1)))
    assert not notes.hides(memory(me, key="dog_name"))
    assert not notes.hides(memory(me, key="cat_name", companion=companion))
    assert not notes.hides(memory(me, companion=companion, kind="episodic"))


def test_an_erasure_voids_copies_taken_before_it() -> None:
    notes = ForgottenMemories()
    me = uuid.uuid4()
    taken = notes.version(me)
    notes.erased(me)
    assert notes.erased_since(me, taken)
    assert not notes.erased_since(me, notes.version(me))


def test_past_its_size_the_oldest_people_go_but_never_a_pending_key_note() -> None:
    notes = ForgottenMemories(max_people=2)
    pending, first, second, third = (uuid.uuid4() for _ in range(4))
    notes.forget_key(pending, None, "k", NOW)
    notes.forget_ids(first, [uuid.uuid4()])
    notes.forget_ids(second, [uuid.uuid4()])
    notes.forget_ids(third, [uuid.uuid4()])
    assert notes.version(pending) > 0
    assert notes.version(first) == 0 and notes.version(second) == 0
    assert notes.version(third) > 0
