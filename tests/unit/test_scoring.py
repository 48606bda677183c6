"""Scoring and MMR over hand-made candidates (fusion, context, priors, the relevance floor), and
the in-process index over hand-made rows (changes in any order, neighbours, scoping)."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag_system.candidates import Candidate, CandidateLimits
from rag_system.local_index import UserIndex
from rag_system.local_search import _neighbours, local_batch
from rag_system.mmr import mmr_order
from rag_system.query import prepare
from rag_system.scoring import ScoringWeights, recency_factor, score_candidates

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def cand(
    name: str,
    *,
    sim: float | None = 0.1,
    kw: float = 0.0,
    coverage: float = 0.0,
    at: datetime = NOW - timedelta(days=100),
    session: str | None = None,
    links: tuple[str, ...] = (),
    **extra: Any,
) -> Candidate:
    return Candidate(
        id=uuid.uuid5(uuid.NAMESPACE_OID, name),
        occurred_at=at,
        companion_id=None,
        kind=extra.get("kind", "episodic"),
        importance=extra.get("importance", 0.5),
        access_count=extra.get("access_count", 0),
        similarity=sim,
        keyword=kw,
        coverage=coverage,
        vector_rank=None,
        keyword_rank=None,
        in_window=extra.get("in_window", False),
        session=session,
        links=[uuid.uuid5(uuid.NAMESPACE_OID, n) for n in links],
    )


def names(scored, pool) -> list[str]:
    by_id = {c.id: n for n, c in pool.items()}
    return [by_id[s.candidate.id] for s in scored]


def score(pool: dict[str, Candidate], **kw: Any):
    return score_candidates(
        list(pool.values()), now=NOW, weights=kw.pop("weights", ScoringWeights()),
        min_similarity=kw.pop("min_similarity", 0.2), min_coverage=kw.pop("min_coverage", 0.3),
        **kw,
    )


def filler(n: int) -> dict[str, Candidate]:
    return {f"f{i}": cand(f"f{i}", sim=0.21 + 0.001 * i) for i in range(n)}


def test_a_row_strong_on_both_signals_beats_rows_strong_on_one() -> None:
    pool = {
        **filler(10),
        "both": cand("both", sim=0.55, kw=4.0, coverage=0.8),
        "vector": cand("vector", sim=0.6),
        "words": cand("words", sim=0.25, kw=5.0, coverage=1.0),
    }
    assert names(score(pool), pool)[0] == "both"


def test_rows_below_the_relevance_floor_are_dropped_unless_a_neighbour_vouches() -> None:
    pool = {
        "match": cand("match", sim=0.7, kw=3.0, coverage=0.9, links=("reply",)),
        "reply": cand("reply", sim=0.05, at=NOW - timedelta(days=100, seconds=-20)),
        "noise": cand("noise", sim=0.05),
    }
    kept = names(score(pool), pool)
    assert "noise" not in kept and "reply" in kept
    only_noise = {"noise": cand("noise", sim=0.1, kw=0.2, coverage=0.1)}
    assert score(only_noise) == []


def test_the_turn_next_to_a_strong_match_rises_above_an_equal_one_elsewhere() -> None:
    t = NOW - timedelta(days=100)
    pool = {
        **filler(8),
        "question": cand("question", sim=0.7, kw=2.0, coverage=0.7, at=t, links=("answer",)),
        "answer": cand("answer", sim=0.3, at=t + timedelta(seconds=30)),
        "lonely": cand("lonely", sim=0.3, at=t + timedelta(days=3)),
    }
    ranked = names(score(pool), pool)
    assert ranked.index("answer") < ranked.index("lonely")
    answer = next(s for s in score(pool) if s.candidate is pool["answer"])
    assert "next to a strong match" in answer.why()


def test_priors_break_near_ties_recent_important_used_in_window_and_saved_facts() -> None:
    base = {f"f{i}": cand(f"f{i}", sim=0.3) for i in range(6)}
    priors: list[tuple[str, Any]] = [
        ("at", NOW - timedelta(days=1)),
        ("importance", 0.95),
        ("access_count", 9),
        ("in_window", True),
        ("kind", "explicit"),
    ]
    for field, value in priors:
        pool = {**base, "x": cand("x", sim=0.3, **{field: value})}
        assert names(score(pool), pool)[0] == "x", field


def test_recency_halves_every_half_life_and_the_future_counts_as_now() -> None:
    assert recency_factor(NOW - timedelta(days=30), NOW, 30.0) == pytest.approx(0.5)
    assert recency_factor(NOW + timedelta(days=3), NOW, 30.0) == 1.0


def test_turns_of_a_conversation_with_several_matches_gain_over_a_lone_match() -> None:
    t = NOW - timedelta(days=50)
    pool = {
        **filler(6),
        "a": cand("a", sim=0.6, session="s1", at=t),
        "b": cand("b", sim=0.58, session="s1", at=t + timedelta(minutes=5)),
        "c": cand("c", sim=0.4, session="s1", at=t + timedelta(minutes=9)),
        "lone": cand("lone", sim=0.4, session="s2", at=t),
    }
    ranked = names(score(pool), pool)
    assert ranked.index("c") < ranked.index("lone")


def test_without_a_query_vector_keywords_alone_rank_and_ties_break_by_id() -> None:
    pool = {n: cand(n, sim=None, kw=k, coverage=k / 4) for n, k in
            [("x", 4.0), ("y", 2.0), ("z", 2.0)]}
    first = names(score(pool), pool)
    assert first[0] == "x" and first == names(score(pool), pool)


def test_limit_keeps_the_best() -> None:
    pool = filler(12)
    assert len(score(pool, limit=5)) == 5


def test_mmr_skips_a_near_duplicate_of_what_it_already_picked() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=16)
    a /= np.linalg.norm(a)
    b = rng.normal(size=16)
    b /= np.linalg.norm(b)
    vectors = [a, a.copy(), b, None]
    relevance = [1.0, 0.99, 0.98, 0.5]
    assert mmr_order(relevance, vectors, k=2, lam=0.7) == [0, 2]
    assert mmr_order(relevance, vectors, k=2, lam=1.0) == [0, 1]
    assert mmr_order([], [], k=3) == []


# --- the in-process index -----------------------------------------------------------------------

USER = uuid.UUID(int=1)


def sent(vector: list[float]) -> bytes:
    """A vector as pgvector's vector_send writes it."""
    return struct.pack(">hh", len(vector), 0) + np.asarray(vector, dtype=">f4").tobytes()


def row(name: str, rev: int, content: str = "", *, at: datetime = NOW, **extra: Any):
    words = extra.pop("lexemes", content.lower().split())
    values = {
        "id": uuid.uuid5(uuid.NAMESPACE_OID, name), "rev": rev, "companion_id": None,
        "kind": "episodic", "speaker": "user", "category": None, "key": None, "value": None,
        "content": content or name, "importance": 0.5, "occurred_at": at,
        "occ_us": int(at.timestamp() * 1_000_000), "event_date": None, "eday": None,
        "created_at": at, "superseded_at": None, "access_count": 0, "last_accessed_at": None,
        "source": "{}", "session": None, "dl": len(set(words)), "vec": sent([1.0, 0.0]),
        "lexemes": words,
    }
    values.update(extra)
    return values


def empty_index() -> UserIndex:
    return UserIndex.build(USER, horizon=0, rows=[], postings=[])


def current(index: UserIndex) -> dict[str, str]:
    scope = index.scope(None, include_assistant=True)
    return {str(index.fields.ids[p]): index.fields.content[p] for p in np.flatnonzero(scope)}


def test_each_newer_read_wins_even_with_a_smaller_transaction_id_and_deletes_are_final() -> None:
    index = empty_index()
    index.apply([row("a", 20, "old text")], [], horizon=21)
    # Transaction 10 took its id first but committed its update after transaction 20's.
    index.apply([row("a", 10, "new text")], [], horizon=21)
    assert list(current(index).values()) == ["new text"]
    assert index.horizon == 21
    index.apply([], [(row("a", 0)["id"], 5)], horizon=31)
    # A row of a deleted id (as a concurrent read saw it) never comes back.
    index.apply([row("a", 40, "new text")], [], horizon=41)
    assert current(index) == {} and index.docs == 0
    assert index.horizon == 41


def test_a_change_that_keeps_words_and_time_is_made_in_place() -> None:
    index = empty_index()
    index.apply([row("a", 1, "walk the dog")], [], horizon=2)
    index.apply([row("a", 2, "walk the dog", access_count=3)], [], horizon=3)
    assert index.n == 1 and index.dead == 0 and index.columns.access[0] == 3
    index.apply([row("a", 3, "walk the cat")], [], horizon=4)
    assert index.n == 2 and index.dead == 1
    assert list(current(index).values()) == ["walk the cat"]
    cat = index.word("cat")
    assert cat is not None and list(index.postings(cat)) == [1]


def test_the_scope_keeps_the_companions_own_and_shared_rows_and_drops_history() -> None:
    veda, nova = uuid.uuid4(), uuid.uuid4()
    index = UserIndex.build(USER, 0, [
        row("shared", 1), row("veda", 1, companion_id=veda), row("nova", 1, companion_id=nova),
        row("reply", 1, companion_id=veda, speaker="assistant"),
        row("old", 1, superseded_at=NOW),
    ], postings=[])
    def names(companion: uuid.UUID | None, assistant: bool = False) -> set[str]:
        return {index.fields.content[p] for p in np.flatnonzero(index.scope(companion, assistant))}
    assert names(veda) == {"shared", "veda"}
    assert names(veda, assistant=True) == {"shared", "veda", "reply"}
    assert names(None) == {"shared"}
    assert names(uuid.uuid4()) == {"shared"}


def _brute_force_neighbours(index: UserIndex, anchors, scope, limits) -> set[tuple[int, int, int]]:
    out = set()
    gap = limits.neighbour_gap_s * 1_000_000
    c = index.columns
    for a in anchors:
        t = c.occ_us[a]
        near = [
            p for p in range(index.n)
            if scope[p] and p != a and abs(int(c.occ_us[p]) - int(t)) <= gap
            and c.companion[p] == c.companion[a]
            and c.explicit[p] == c.explicit[a]
            and (c.session[a] < 0 or c.session[p] < 0 or c.session[p] == c.session[a])
        ]
        before = sorted((p for p in near if c.occ_us[p] < t), key=lambda p: -c.occ_us[p])
        after = sorted((p for p in near if c.occ_us[p] > t), key=lambda p: c.occ_us[p])
        for side in (before, after):
            out |= {(a, p, step) for step, p in enumerate(side[: limits.neighbours], start=1)}
    return out


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.lists(st.integers(0, 120), min_size=1, max_size=40, unique=True),
    sessions=st.lists(st.sampled_from([None, "s1", "s2"]), min_size=40, max_size=40),
    kinds=st.lists(st.booleans(), min_size=40, max_size=40),
    hidden=st.lists(st.booleans(), min_size=40, max_size=40),
    anchor_picks=st.lists(st.integers(0, 39), min_size=1, max_size=8),
)
def test_neighbours_of_all_anchors_at_once_match_looking_at_each_turn(
    minutes: list[int], sessions, kinds, hidden, anchor_picks
) -> None:
    rows = [
        row(f"r{i}", 1, at=NOW + timedelta(minutes=m), session=sessions[i],
            kind="explicit" if kinds[i] else "episodic")
        for i, m in enumerate(minutes)
    ]
    index = UserIndex.build(USER, 0, rows, postings=[])
    scope = index.scope(None, include_assistant=False) & ~np.array(hidden[: len(rows)])
    anchors = np.unique([p % len(rows) for p in anchor_picks])
    limits = CandidateLimits()
    found = {tuple(x) for x in _neighbours(index, anchors, scope, limits).tolist()}
    assert found == _brute_force_neighbours(index, anchors, scope, limits)


def test_the_rarest_query_words_pull_rows_in_and_common_ones_only_add_weight() -> None:
    common = [row(f"c{i}", 1, f"coffee friends {i}", vec=sent([0.0, 1.0])) for i in range(30)]
    rare = row("rare", 1, "saxophone lesson", vec=sent([0.0, 1.0]))
    both = row("both", 1, "coffee saxophone", vec=sent([0.0, 1.0]))
    rows = [*common, rare, both]
    postings: dict[str, list[int]] = {}
    for p, r in enumerate(rows):
        for word in dict.fromkeys(r["lexemes"]):
            postings.setdefault(word, []).append(p)
    index = UserIndex.build(USER, 0, rows, postings.items())
    query = prepare("coffee saxophone", now=NOW)
    stems = {w: (w,) for w in query.words}
    limits = CandidateLimits(keyword_probe_rows=5)
    batch, _ = local_batch(index, companion_id=None, include_assistant=False, query=query,
                           stems=stems, query_vector=None, limits=limits, k=10)
    ranked = sorted(
        (int(r), batch.memory(i).content) for i, r in enumerate(batch.keyword_rank) if r > 0
    )
    # "coffee" is in 31 rows (over the probe budget): only "saxophone" rows are proposed.
    assert [content for _, content in ranked] == ["coffee saxophone", "saxophone lesson"]
