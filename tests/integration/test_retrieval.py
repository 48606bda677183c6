"""RetrievalEngine over real Postgres+pgvector, memories written by the real MemoryService.

Embeddings come from the project's OpenAIEmbedder talking to the loopback OpenAI stub, whose
vectors are hashed bags of words: texts sharing words are similar, others nearly orthogonal.

The behaviour tests run on both search paths: "sql" (one statement per search) and
"in_process" (the per-user index kept current from Postgres, loaded by the first search).
The query plans behind the SQL path are tested in test_retrieval_plans.py.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from rag_system.engine import RetrievalEngine
from rag_system.query import prepare
from rag_system.tuning import RetrievalTuning
from tests.support.memory_stack import create_companion
from tests.support.retrieval import (
    NOW,
    PATHS,
    WORDS,
    RetrievalStack,
    contents,
    crowd,
    engine_for,
    turn,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- scoping ----------------------------------------------------------------------------------


async def test_a_search_never_returns_another_users_memories_even_next_to_a_match(
    stack: RetrievalStack, path: str
) -> None:
    me, other = uuid.uuid4(), uuid.uuid4()
    at = NOW - timedelta(days=3)
    await stack.memory.import_episodes(me, None, [turn("my sister Maya plays the violin", at)])
    # Same words, and a turn seconds later: a candidate by keywords, vectors and adjacency.
    await stack.memory.import_episodes(other, None, [
        turn("my sister Maya plays the violin beautifully", at + timedelta(seconds=5)),
        turn("she practices every evening", at + timedelta(seconds=20)),
    ])
    engine = engine_for(stack, path=path)
    results = await engine.search(me, None, "does Maya play the violin?", now=NOW)
    assert results and {r.memory.user_id for r in results} == {me}
    assert contents(results) == ["my sister Maya plays the violin"]


async def test_a_companion_sees_its_own_and_the_shared_memories_but_never_another_companions(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [turn("shared: I love the harbor", NOW)])
    veda = await create_companion(stack.pool, user, "Veda")
    nova = await create_companion(stack.pool, user, "Nova")
    await stack.memory.import_episodes(user, veda, [turn("with Veda: the harbor at dawn", NOW)])
    await stack.memory.import_episodes(user, nova, [turn("with Nova: the harbor at night", NOW)])
    engine = engine_for(stack, path=path)

    seen_by_veda = contents(await engine.search(user, veda, "the harbor", now=NOW))
    seen_shared_only = contents(await engine.search(user, None, "the harbor", now=NOW))

    assert sorted(seen_by_veda) == ["shared: I love the harbor", "with Veda: the harbor at dawn"]
    assert seen_shared_only == ["shared: I love the harbor"]


async def test_the_companions_own_replies_are_not_returned_unless_asked_for(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [
        turn("I think you would love pottery classes", NOW, speaker="assistant"),
        turn("I signed up for pottery classes", NOW + timedelta(seconds=30)),
    ])
    engine = engine_for(stack, path=path)
    default = await engine.search(user, None, "pottery classes", now=NOW)
    everything = await engine.search(
        user, None, "pottery classes", now=NOW, include_assistant=True
    )
    assert [r.memory.speaker for r in default] == ["user"]
    assert sorted(r.memory.speaker for r in everything) == ["assistant", "user"]


async def test_superseded_explicit_memories_are_not_returned(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    await stack.pool.execute("insert into public.users (id) values ($1)", user)
    await stack.memory.remember(user, None, "PREFERENCE", "favorite color", "orange")
    await stack.memory.remember(user, None, "PREFERENCE", "favorite color", "silver")
    engine = engine_for(stack, path=path)
    results = await engine.search(user, None, "favorite color", now=NOW)
    assert contents(results) == ["favorite color: silver"]


# --- what a result carries, and the relevance floor -----------------------------------------


async def test_results_carry_their_scores_and_why_they_were_chosen(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [
        turn("we adopted a puppy named Pepper", NOW - timedelta(days=2)),
        turn("the weather was grey all week", NOW - timedelta(days=40)),
    ])
    engine = engine_for(stack, path=path)
    results = await engine.search(user, None, "the puppy named Pepper", now=NOW)
    best = results[0]
    assert best.memory.content == "we adopted a puppy named Pepper"
    assert best.similarity > 0.4 and best.text_rank > 0.9 and 0.9 < best.recency <= 1.0
    assert "semantic" in best.why and "keywords" in best.why
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


async def test_an_unrelated_query_returns_nothing_rather_than_noise(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [
        turn(" ".join(random.Random(i).sample(WORDS, 6)), NOW - timedelta(minutes=i * 45))
        for i in range(30)
    ])
    engine = engine_for(stack, path=path)
    assert await engine.search(user, None, "quantum chromodynamics lecture notes", now=NOW) == []
    # The same engine does find something that is there.
    assert await engine.search(user, None, "violin and lantern", now=NOW) != []


# --- temporal hints ---------------------------------------------------------------------------


async def test_last_week_prefers_what_happened_last_week_over_something_more_recent(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [
        turn("we went hiking in the mountains", datetime(2026, 11, 12, 10, tzinfo=UTC)),
        turn("we went hiking by the lake", datetime(2026, 11, 20, 10, tzinfo=UTC)),
    ])
    engine = engine_for(stack, path=path)
    results = await engine.search(user, None, "where did we hike last week?", now=NOW)
    assert contents(results)[0] == "we went hiking in the mountains"
    assert "last week" in results[0].why


async def test_in_may_prefers_may_and_the_month_is_not_a_keyword(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [
        turn("I baked sourdough bread", datetime(2026, 5, 10, 9, tzinfo=UTC)),
        turn("I baked banana bread", datetime(2026, 10, 2, 9, tzinfo=UTC)),
    ])
    engine = engine_for(stack, path=path)
    results = await engine.search(user, None, "what did I bake in May?", now=NOW)
    assert contents(results)[0] == "I baked sourdough bread"
    assert prepare("what did I bake in May?", now=NOW).words == ("bake",)


async def test_a_first_name_that_is_also_a_month_is_searched_as_the_name(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [
        turn("Jan called me back about the flat", datetime(2026, 3, 10, 9, tzinfo=UTC)),
        turn("the bank called me back about the loan", datetime(2026, 1, 15, 9, tzinfo=UTC)),
    ])
    engine = engine_for(stack, path=path)
    results = await engine.search(user, None, "Did Jan call me back?", now=NOW)
    assert contents(results)[0] == "Jan called me back about the flat"
    # No January window lifts the bank's call, and "jan" is a keyword.
    assert all("in '" not in r.why for r in results)
    assert prepare("Did Jan call me back?", now=NOW).words == ("jan", "call", "back")


# --- conversation context and neighbouring turns ----------------------------------------------


async def test_a_follow_up_question_uses_the_previous_turn_to_find_its_referent(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [
        turn("my grandmother Rosa grows tomatoes in her garden", NOW - timedelta(days=30)),
        turn("the office printer jammed again", NOW - timedelta(days=2)),
    ])
    engine = engine_for(stack, path=path)
    alone = await engine.search(user, None, "how is she doing?", now=NOW)
    in_context = await engine.search(
        user, None, "how is she doing?", now=NOW,
        recent_turns=["I visited grandmother Rosa yesterday"],
    )
    assert "my grandmother Rosa grows tomatoes in her garden" not in contents(alone)
    assert contents(in_context)[0] == "my grandmother Rosa grows tomatoes in her garden"


async def test_the_turn_right_after_a_strong_match_comes_along_even_without_shared_words(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    at = NOW - timedelta(days=10)
    session = {"session_id": str(uuid.uuid4())}
    await stack.memory.import_episodes(user, None, [
        turn("guess what my dad gave me for my birthday", at, **session),
        turn("a red bicycle with a basket!", at + timedelta(seconds=20), **session),
        turn("unrelated: the canvas and the marble", at + timedelta(days=3)),
    ])
    results = await engine_for(stack, path=path).search(
        user, None, "what birthday present did dad give?", now=NOW
    )
    assert "a red bicycle with a basket!" in contents(results)
    answer = next(r for r in results if r.memory.content.startswith("a red bicycle"))
    assert "next to a strong match" in answer.why


# --- failure of the embedding backend, and word statistics ------------------------------------


async def test_keyword_search_carries_on_when_the_embedding_server_fails(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [
        turn("the dentist appointment is on Friday", NOW - timedelta(days=1)),
        turn("the garden needs watering", NOW - timedelta(days=1, hours=2)),
    ])
    engine = engine_for(stack, path=path)
    stack.server.fail_next(5, status=500, path_prefix="/v1/embeddings")
    results = await engine.search(user, None, "when is the dentist appointment", now=NOW)
    assert contents(results) == ["the dentist appointment is on Friday"]
    assert results[0].similarity == 0.0 and results[0].text_rank > 0.9
    stats = engine.stats()
    assert stats["embedding_failures"] == 1 and stats["keyword_only"] == 1


async def test_a_rare_word_outweighs_a_common_one_once_word_statistics_are_built(
    stack: RetrievalStack, path: str
) -> None:
    user = uuid.uuid4()
    common = [turn(f"coffee with friends number {i}", NOW - timedelta(hours=i)) for i in range(40)]
    await stack.memory.import_episodes(user, None, [
        *common,
        turn("the saxophone lesson", NOW - timedelta(days=5)),
        turn("coffee coffee after coffee", NOW - timedelta(days=6)),
    ])
    engine = engine_for(stack, RetrievalTuning(mmr_lambda=1.0), path=path)
    await engine.refresh_term_stats(user)
    counted = await stack.pool.fetchval(
        "select docs from public.memory_term_stats where user_id = $1 and lexeme = 'coffe'", user
    )
    assert counted == 41
    stack.server.fail_next(5, status=500, path_prefix="/v1/embeddings")
    results = await engine.search(user, None, "coffee saxophone", now=NOW)
    assert contents(results)[0] == "the saxophone lesson"


async def test_word_statistics_are_rebuilt_in_the_background_after_the_first_search(
    stack: RetrievalStack,
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [
        turn("lantern festival by the river", NOW), turn("river cruise", NOW - timedelta(days=1))
    ])
    engine = engine_for(stack)
    await engine.search(user, None, "river", now=NOW)
    await engine.aclose()
    assert engine.stats()["term_stats_refreshes"] == 1
    assert await stack.pool.fetchval(
        "select docs from public.memory_term_corpus where user_id = $1", user
    ) == 2


# --- the in-process index ---------------------------------------------------------------------


async def test_the_in_process_index_sees_writes_supersessions_and_deletes_made_after_loading(
    stack: RetrievalStack,
) -> None:
    user = uuid.uuid4()
    await stack.memory.import_episodes(user, None, [
        turn("we planted tulips in the garden", NOW - timedelta(days=3)),
        turn("the tulips are blooming in the garden", NOW - timedelta(days=1)),
    ])
    engine = engine_for(stack, path="in_process")
    assert await engine.warm(user)
    # Another worker process writes: a new turn, a fact saved then changed, a forgotten turn.
    other = stack.another_service()
    await other.import_episodes(user, None, [turn("a heron visited the garden pond", NOW)])
    await other.remember(user, None, "PREFERENCE", "favorite flower", "tulip")
    await other.remember(user, None, "PREFERENCE", "favorite flower", "orchid")
    forgotten = next(
        m for m in (await other.export(user))["episodic"] if m["content"].startswith("we planted")
    )
    gone = await other.forget(user, None, memory_id=uuid.UUID(forgotten["id"]))
    assert gone.versions == 1

    garden = contents(await engine.search(user, None, "the garden", now=NOW))
    flower = contents(await engine.search(user, None, "favorite flower", now=NOW))

    assert "a heron visited the garden pond" in garden
    assert "we planted tulips in the garden" not in garden
    assert flower[0] == "favorite flower: orchid" and "favorite flower: tulip" not in flower
    local = engine.stats()["local_index"]
    assert local["loads"] == 1 and local["synced_rows"] >= 3 and local["synced_deletes"] == 1


def _random_unit_vector(text: str, dimensions: int) -> list[float]:
    # Continuous similarities: no two rows tie, so the two paths cannot break a tie apart.
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    vector = np.random.default_rng(seed).normal(size=dimensions)
    return (vector / np.linalg.norm(vector)).tolist()


async def test_both_paths_return_the_same_memories_in_the_same_order(stack: RetrievalStack) -> None:
    stack.server.embed_fn = _random_unit_vector
    target = uuid.uuid4()
    await crowd(stack, target, mine=150, others=10, each=40)
    sql = engine_for(stack, rag_min_similarity=-1.0)
    in_process = engine_for(stack, path="in_process", rag_min_similarity=-1.0)
    await sql.refresh_term_stats(target)  # the SQL path's word statistics, as fresh as it gets
    for q in range(15):
        query = " ".join(random.Random(100 + q).sample(WORDS, 3))
        expected = await sql.search(target, None, query, k=12, now=NOW)
        found = await in_process.search(target, None, query, k=12, now=NOW)
        assert [r.memory.id for r in found] == [r.memory.id for r in expected], query
        assert [r.score for r in found] == pytest.approx([r.score for r in expected], abs=1e-5)


async def test_a_user_past_the_in_process_limit_is_searched_in_sql(stack: RetrievalStack) -> None:
    user = uuid.uuid4()
    await crowd(stack, user, mine=60, others=0, each=0)
    engine = RetrievalEngine(
        pool=stack.pool, embedder=stack.embedder, settings=stack.settings,
        tuning=RetrievalTuning(local_index_max_rows=50),
    )
    try:
        assert not await engine.warm(user)
        assert len(await engine.search(user, None, "violin lantern", k=5, now=NOW)) == 5
        stats = engine.stats()
        assert stats["sql_searches"] == 1 and stats["local_searches"] == 0
        assert stats["local_index"]["too_large"] == 1 and stats["local_index"]["users"] == 0
    finally:
        await engine.aclose()


async def test_indexes_past_the_row_budget_go_least_recently_used_first(
    stack: RetrievalStack,
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    for user in (first, second):
        await crowd(stack, user, mine=40, others=0, each=0)
    engine = engine_for(stack, RetrievalTuning(local_index_budget_rows=60), path="in_process")
    assert await engine.warm(first) and await engine.warm(second)
    local = engine.stats()["local_index"]
    assert local["users"] == 1 and local["rows"] == 40 and local["evicted"] == 1
    # The evicted user is loaded again when searched.
    assert await engine.search(first, None, "violin", k=3, now=NOW)
    assert engine.stats()["local_index"]["loads"] == 3
