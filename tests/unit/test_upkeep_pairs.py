"""The memory upkeep's pairs (alike keys, merges, contradictions) found without comparing every
pair are exactly those comparing every pair with difflib finds."""

from __future__ import annotations

import difflib
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.memory_records import Memory, normalize_text
from services.memory.upkeep_pairs import (
    KEY_SIMILARITY,
    MERGE_SIMILARITY,
    alike_key_pairs,
    contradiction_pairs,
    merge_plan,
)

pytestmark = pytest.mark.unit

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# Keys made of pieces real keys share ("favorite", "favourite", "_name"), a few letters that
# make near misses, and very short keys (too short for any bigram to decide).
PIECES = ["favorite", "favourite", "food", "color", "colour", "_", "name", "brother", "s",
          "a", "b", "ab", "ba", "job", "home", "city", "x"]
keys_strategy = st.lists(
    st.lists(st.sampled_from(PIECES), min_size=0, max_size=4).map("".join),
    max_size=40,
)


def all_pairs_alike(keys: list[str]) -> list[tuple[int, int]]:
    return [
        (i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))
        if difflib.SequenceMatcher(None, keys[i], keys[j]).ratio() >= KEY_SIMILARITY
    ]


@settings(max_examples=300, deadline=None)
@given(keys=keys_strategy, picks=st.lists(st.integers(0, 39), max_size=10))
def test_alike_keys_are_the_pairs_all_pairs_difflib_finds(keys: list[str], picks) -> None:
    assert alike_key_pairs(keys) == all_pairs_alike(keys)
    new = {p for p in picks if p < len(keys)}
    assert alike_key_pairs(keys, new) == [
        (i, j) for i, j in all_pairs_alike(keys) if i in new or j in new
    ]


def memory(key: str, value: str, minute: int, *, category: str = "FACT") -> Memory:
    at = START + timedelta(minutes=minute)
    return Memory(
        id=uuid.uuid4(), user_id=uuid.UUID(int=1), companion_id=None, kind="explicit",
        speaker="user", category=category, key=key, value=value,
        content=f"{key}: {value}", importance=0.5, occurred_at=at, event_date=None,
        created_at=at, superseded_at=None, access_count=0, last_accessed_at=None,
    )


def all_pairs_merges(memories: list[Memory], vectors) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """The rule as stated, over every pair in order: (kept, dropped) ids."""
    gone: set[uuid.UUID] = set()
    merges = []
    for i, a in enumerate(memories):
        for b in memories[i + 1:]:
            if a.id in gone or b.id in gone or a.category != b.category:
                continue
            if normalize_text(a.value or "") != normalize_text(b.value or ""):
                continue
            va, vb = vectors.get(a.id), vectors.get(b.id)
            cosine = 0.0
            if va is not None and vb is not None:
                cosine = float(np.dot(va, vb) / (np.linalg.norm(va) * np.linalg.norm(vb)))
            ratio = difflib.SequenceMatcher(None, a.key or "", b.key or "").ratio()
            alike = ratio >= KEY_SIMILARITY
            if not (alike or cosine >= MERGE_SIMILARITY):
                continue
            keep, drop = (a, b) if (a.occurred_at, a.created_at) >= (
                b.occurred_at, b.created_at) else (b, a)
            merges.append((keep.id, drop.id))
            gone.add(drop.id)
    return merges


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["favorite_food", "favourite_food", "food", "home_city", "city_home",
                             "job", "jobs", "pet"]),
            st.sampled_from(["sushi", "Sushi!", "Porto", "nurse"]),
            st.sampled_from(["FACT", "PREFERENCE"]),
            st.integers(0, 3),  # which of a few directions the embedding points in
        ),
        max_size=25,
    ),
)
def test_merges_and_contradictions_are_those_every_pair_in_order_decides(rows) -> None:
    memories = [memory(k, v, n, category=c) for n, (k, v, c, _) in enumerate(rows)]
    directions = np.eye(4, 8, dtype=np.float32)
    vectors = {m.id: directions[d] for m, (*_, d) in zip(memories, rows, strict=True)}

    plan = merge_plan(memories, vectors)

    assert sorted((m.keep.id, m.drop.id) for m in plan) == sorted(
        all_pairs_merges(memories, vectors)
    )
    expected = {
        (a.id, b.id) for i, a in enumerate(memories) for b in memories[i + 1:]
        if a.category == b.category
        and difflib.SequenceMatcher(None, a.key or "", b.key or "").ratio() >= KEY_SIMILARITY
        and normalize_text(a.value or "") != normalize_text(b.value or "")
    }
    assert {(a.id, b.id) for a, b in contradiction_pairs(memories)} == expected


def test_only_pairs_with_a_new_memory_are_looked_at() -> None:
    old_blue = memory("favorite_color", "blue", 0)
    old_green = memory("favourite_color", "green", 1)  # flagged by an earlier pass already
    new_red = memory("favorit_color", "red", 2)
    old_sushi = memory("food", "sushi", 3)
    new_sushi = memory("meal", "sushi", 4)
    scope = [old_blue, old_green, new_red, old_sushi, new_sushi]
    same = np.ones(8, dtype=np.float32)

    pairs = contradiction_pairs(scope, {new_red.id})
    plan = merge_plan(scope, {old_sushi.id: same, new_sushi.id: same}, {new_red.id, new_sushi.id})

    assert {(a.id, b.id) for a, b in pairs} == {(old_blue.id, new_red.id),
                                                (old_green.id, new_red.id)}
    assert [(m.keep.id, m.drop.id) for m in plan] == [(new_sushi.id, old_sushi.id)]
