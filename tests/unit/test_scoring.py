"""Scoring and MMR over hand-made candidates: fusion, context, priors, the relevance floor."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from rag_system.candidates import Candidate
from rag_system.mmr import mmr_order
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
    for field, value in [
        ("at", NOW - timedelta(days=1)),
        ("importance", 0.95),
        ("access_count", 9),
        ("in_window", True),
        ("kind", "explicit"),
    ]:
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
