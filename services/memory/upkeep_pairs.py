"""Which memories of one scope merge and which contradict, without comparing every pair.

Both jobs ask of two memories whether their keys are alike: difflib's ratio of the keys is at
least `KEY_SIMILARITY`. Comparing all pairs costs O(n^2) difflib calls (25 s of CPU for 1,000
memories). Here candidate pairs come from a bigram index, and only they reach difflib; the
pairs found are exactly those all-pairs difflib finds, because every filter is a bound that a
pair at the threshold must meet:

- difflib's ratio is 2M/T (M characters matched, T both lengths together) and at most
  2*min(len)/T, so the lengths must be close.
- The matched characters form blocks that are equal substrings of both keys, in order, with
  at least one unmatched character between two blocks; so there are at most T - 2M + 1
  blocks, and together they hold at least M - (T - 2M + 1) = 3M - T - 1 bigrams that both keys
  contain (counted with repeats). A pair at the threshold shares at least that many.
- Two keys sharing at least t bigrams share one among the first |X| - t + 1 bigrams of each,
  taken in one global order (rarest first: prefix filtering), so only those prefixes are
  indexed and probed.

Merging also takes pairs with the same value and near-identical embeddings, found per value
group (pairs with different values never merge) by a product of the group's unit vectors.
Everything here is plain CPU work on data already read: the caller runs it in a thread.
"""

from __future__ import annotations

import difflib
import functools
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.memory_records import Memory, normalize_text

MERGE_SIMILARITY = 0.92
KEY_SIMILARITY = 0.85
# Unit vectors are compared in float32 blocks; the exact cosine then decides, so a margin
# keeps rounding from dropping a pair at the threshold.
_COSINE_MARGIN = 1e-4
_BLOCK = 512

Vector = npt.NDArray[np.floating]
Bigram = tuple[str, int]


@dataclass(frozen=True)
class Merge:
    """`drop` repeats `keep` (same category and value): it is superseded by it."""

    keep: Memory
    drop: Memory


def keys_alike(a: str, b: str) -> bool:
    """The one test of "alike keys" (`a` is the older memory's: difflib is not symmetric)."""
    return difflib.SequenceMatcher(None, a, b).ratio() >= KEY_SIMILARITY


def cosine(a: Vector | None, b: Vector | None) -> float:
    if a is None or b is None or len(a) == 0 or len(a) != len(b):
        return 0.0
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom else 0.0


def alike_key_pairs(
    keys: Sequence[str], new: Collection[int] | None = None
) -> list[tuple[int, int]]:
    """Index pairs (i < j), sorted, whose keys are alike (`keys_alike(keys[i], keys[j])`).

    Args:
        new: only pairs with at least one of these indexes (keys added since the pairs of the
            others were looked at); None: every pair.
    """
    grams = [_bigrams(key) for key in keys]
    counts = Counter(g for key_grams in grams for g in key_grams)
    rank = {g: n for n, g in enumerate(sorted(counts, key=lambda g: (counts[g], g)))}
    ordered = [sorted(key_grams, key=rank.__getitem__) for key_grams in grams]
    probing = set(range(len(keys))) if new is None else set(new)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_length[len(key)].append(i)
    # bigram -> (key, the bigram's place in the key's ordered bigrams), for indexed prefixes
    index: dict[Bigram, list[tuple[int, int]]] = defaultdict(list)
    candidates: set[tuple[int, int]] = set()
    # The keys not probing are indexed first: each probing key then meets all of them, and
    # the probing keys before it.
    for i in sorted(range(len(keys)), key=lambda i: (i in probing, i)):
        key, mine = keys[i], ordered[i]
        low, high = _partner_lengths(len(key))
        needed = min(_shared_needed(len(key) + n) for n in range(low, high + 1))
        if needed <= 0:
            if i in probing:
                # Too short for the bigram bound: compared with every key of a fitting length.
                candidates.update(
                    _ordered(i, j) for n in range(low, high + 1)
                    for j in by_length.get(n, ()) if j != i
                )
            continue
        # A key with fewer bigrams than any partner must share is alike to none.
        prefix = mine[: max(0, len(mine) - needed + 1)]
        if i in probing:
            shared: dict[int, int] = {}
            for at, gram in enumerate(prefix):
                for j, their_at in index[gram]:
                    so_far = shared.get(j, 0)
                    if so_far < 0 or not low <= len(keys[j]) <= high:
                        continue
                    # Bigrams before these places were all met (one order for every key): at
                    # most the rest of the shorter remainder can still be shared.
                    most = so_far + 1 + min(len(mine) - at - 1, len(ordered[j]) - their_at - 1)
                    enough = most >= _shared_needed(len(key) + len(keys[j]))
                    shared[j] = so_far + 1 if enough else -1
            candidates.update(_ordered(i, j) for j, n in shared.items() if n > 0)
        for at, gram in enumerate(prefix):
            index[gram].append((i, at))
    sets = [set(g) for g in grams]
    return sorted(p for p in candidates if _alike(keys, sets, *p))


def merge_plan(
    memories: Sequence[Memory],
    vectors: Mapping[uuid.UUID, Vector | None],
    new: Collection[uuid.UUID] | None = None,
) -> list[Merge]:
    """The merges of one scope, as comparing all pairs in order decides them.

    `memories` are the scope's current explicit memories, oldest first. Two merge when they
    have the same category and value (ignoring case and punctuation) and alike keys or
    near-identical embeddings (`vectors`); the older one is dropped, and a memory dropped once
    takes part in no later pair. With `new`, only pairs with one of those memories count.
    """
    groups: dict[tuple[str | None, str], list[Memory]] = defaultdict(list)
    for memory in memories:
        groups[(memory.category, normalize_text(memory.value or ""))].append(memory)
    merges: list[Merge] = []
    for group in groups.values():
        fresh = _fresh(group, new)
        if len(group) < 2 or (fresh is not None and not fresh):
            continue
        pairs = set(alike_key_pairs([m.key or "" for m in group], fresh))
        pairs.update(_close_vector_pairs([vectors.get(m.id) for m in group], fresh))
        gone: set[uuid.UUID] = set()
        for i, j in sorted(pairs):
            a, b = group[i], group[j]
            if a.id in gone or b.id in gone:
                continue
            if not (keys_alike(a.key or "", b.key or "")
                    or cosine(vectors.get(a.id), vectors.get(b.id)) >= MERGE_SIMILARITY):
                continue
            newer_a = (a.occurred_at, a.created_at) >= (b.occurred_at, b.created_at)
            keep, drop = (a, b) if newer_a else (b, a)
            merges.append(Merge(keep, drop))
            gone.add(drop.id)
    return merges


def merge_groups(
    memories: Sequence[Memory], new: Collection[uuid.UUID] | None = None
) -> list[uuid.UUID]:
    """Ids of the memories `merge_plan` may compare by embedding (their value is another's
    too): the only ones whose vectors it needs."""
    groups: dict[tuple[str | None, str], list[Memory]] = defaultdict(list)
    for memory in memories:
        groups[(memory.category, normalize_text(memory.value or ""))].append(memory)
    return [
        m.id for group in groups.values()
        if len(group) > 1 and (new is None or any(m.id in new for m in group))
        for m in group
    ]


def contradiction_pairs(
    memories: Sequence[Memory], new: Collection[uuid.UUID] | None = None
) -> list[tuple[Memory, Memory]]:
    """Pairs (older, newer) of one category with alike keys and different values; with
    `new`, only pairs with one of those memories."""
    by_category: dict[str | None, list[Memory]] = defaultdict(list)
    for memory in memories:
        by_category[memory.category].append(memory)
    found: list[tuple[Memory, Memory]] = []
    for group in by_category.values():
        fresh = _fresh(group, new)
        if fresh is not None and not fresh:
            continue
        for i, j in alike_key_pairs([m.key or "" for m in group], fresh):
            a, b = group[i], group[j]
            if normalize_text(a.value or "") != normalize_text(b.value or ""):
                found.append((a, b))
    return found


def _fresh(group: Sequence[Memory], new: Collection[uuid.UUID] | None) -> list[int] | None:
    """The places of `new`'s memories in `group` (None: every pair counts)."""
    if new is None:
        return None
    return [n for n, m in enumerate(group) if m.id in new]


def _bigrams(key: str) -> list[Bigram]:
    """The key's character bigrams, each repeat numbered: two keys' sets of these share as
    many as the keys share bigrams, counted with repeats."""
    seen: Counter[str] = Counter()
    out: list[Bigram] = []
    for k in range(len(key) - 1):
        gram = key[k : k + 2]
        out.append((gram, seen[gram]))
        seen[gram] += 1
    return out


def _matched_needed(total: int) -> int:
    """The fewest matched characters M with difflib's 2.0*M/T at the threshold."""
    if total == 0:
        return 0
    matched = max(0, math.ceil(KEY_SIMILARITY * total / 2) - 1)
    while 2.0 * matched / total < KEY_SIMILARITY:
        matched += 1
    return matched


@functools.cache
def _shared_needed(total: int) -> int:
    """Bigrams two keys of lengths adding up to `total` must share to be alike (3M - T - 1)."""
    return 3 * _matched_needed(total) - total - 1


@functools.cache
def _partner_lengths(length: int) -> tuple[int, int]:
    """Lengths a key alike to one of `length` can have (2*min/T at the threshold)."""
    low = length
    while low > 0 and 2.0 * (low - 1) / (length + low - 1) >= KEY_SIMILARITY:
        low -= 1
    high = length
    while 2.0 * length / (length + high + 1) >= KEY_SIMILARITY:
        high += 1
    return low, high


def _ordered(i: int, j: int) -> tuple[int, int]:
    return (i, j) if i < j else (j, i)


def _alike(keys: Sequence[str], grams: Sequence[set[Bigram]], i: int, j: int) -> bool:
    a, b = keys[i], keys[j]
    total = len(a) + len(b)
    if total and 2.0 * min(len(a), len(b)) / total < KEY_SIMILARITY:
        return False
    needed = _shared_needed(total)
    if needed > 0 and len(grams[i] & grams[j]) < needed:
        return False
    return keys_alike(a, b)


def _close_vector_pairs(
    vectors: Sequence[Vector | None], new: Collection[int] | None = None
) -> list[tuple[int, int]]:
    """Pairs (i < j) whose vectors may be at MERGE_SIMILARITY (the exact cosine decides);
    with `new`, only pairs with one of these places."""
    present = [(i, v) for i, v in enumerate(vectors) if v is not None and len(v)]
    if len(present) < 2:
        return []
    width = len(present[0][1])
    rows: list[int] = []
    unit_rows: list[Vector] = []
    for i, vector in present:
        norm = float(np.linalg.norm(vector))
        if len(vector) == width and norm > 0:
            rows.append(i)
            unit_rows.append(np.asarray(vector, dtype=np.float32) / norm)
    if len(rows) < 2:
        return []
    unit = np.stack(unit_rows)
    wanted = None if new is None else set(new)
    probe = [n for n, i in enumerate(rows) if wanted is None or i in wanted]
    found: set[tuple[int, int]] = set()
    for start in range(0, len(probe), _BLOCK):
        block = probe[start : start + _BLOCK]
        sims = unit[block] @ unit.T
        for a, b in zip(*np.nonzero(sims >= MERGE_SIMILARITY - _COSINE_MARGIN), strict=True):
            i, j = rows[block[int(a)]], rows[int(b)]
            if i != j:
                found.add(_ordered(i, j))
    return sorted(found)
