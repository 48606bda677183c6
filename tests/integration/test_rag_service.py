"""RAGService: one compact memory block per turn under a hard time budget, with counters.

Real Postgres, the real MemoryService and embedder code; the embedding server is the loopback
OpenAI stub, slowed down or failing where a test needs it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from core.config import Settings
from core.memory_records import Episode
from infrastructure.connection_pool import ConnectionPool
from rag_system.engine import RetrievalEngine
from services.memory.rag_service import RAGService, when_label
from tests.support.memory_stack import MemoryStack, create_companion, memory_stack
from tests.support.openai_server import OpenAIStubServer

pytestmark = pytest.mark.integration

EMBEDDINGS = "/v1/embeddings"
# Longer than any test: a held request is answered only when the stub closes.
HELD_S = 3_600.0


_SERVICES: list[RAGService] = []


@pytest.fixture
async def stack(pool: ConnectionPool, make_settings) -> AsyncIterator[MemoryStack]:
    settings = make_settings(rag_budget_ms=2_000)
    async with OpenAIStubServer() as server, memory_stack(
        pool=pool, settings=settings, server=server
    ) as built:
        yield built
        while _SERVICES:
            await _SERVICES.pop().aclose()


def rag_for(stack: MemoryStack, settings: Settings | None = None) -> RAGService:
    settings = settings or stack.settings
    engine = RetrievalEngine(pool=stack.pool, embedder=stack.embedder, settings=settings)
    rag = RAGService(engine=engine, memory=stack.memory, settings=settings)
    _SERVICES.append(rag)
    return rag


async def seed(stack: MemoryStack) -> tuple[uuid.UUID, uuid.UUID]:
    user = uuid.uuid4()
    await stack.pool.execute("insert into public.users (id) values ($1)", user)
    companion = await create_companion(stack.pool, user, "Veda")
    now = datetime.now(UTC)
    await stack.memory.import_episodes(user, companion, [
        Episode("user", "my sister Maya is starting at the conservatory", now - timedelta(days=8)),
        Episode("user", "our boiler broke down on Monday", now - timedelta(days=1)),
    ])
    await stack.memory.remember(user, None, "PERSON", "sister", "Maya, plays the cello")
    return user, companion


async def test_a_turn_becomes_one_block_with_profile_memories_and_follow_ups(
    stack: MemoryStack,
) -> None:
    user, companion = await seed(stack)
    rag = rag_for(stack)
    block = await rag.context_for_turn(
        user_id=user, companion_id=companion, text="How is Maya doing at the conservatory?",
        profile_line="Sam, 34, lives in Leeds", follow_ups=["ask how the job interview went"],
    )
    assert block is not None
    lines = block.splitlines()
    assert lines[0] == "About them: Sam, 34, lives in Leeds"
    assert "(1 week ago, they said) my sister Maya is starting at the conservatory" in block
    assert "fact) sister: Maya, plays the cello" in block
    assert "boiler" not in block
    assert lines[-1] == "Open follow-ups: ask how the job interview went"
    assert rag.stats()["with_memories"] == 1


async def test_a_hung_embedding_server_leaves_the_turn_without_memory_and_counts_the_timeout(
    stack: MemoryStack,
) -> None:
    user, companion = await seed(stack)
    rag = rag_for(stack)
    # The server takes the request and never answers it (released when the stub closes): the
    # turn's budget runs out whatever its length.
    stack.server.hang_next(1, seconds=HELD_S, path_prefix=EMBEDDINGS)
    block = await rag.context_for_turn(
        user_id=user, companion_id=companion, text="How is Maya doing?", profile_line="Sam"
    )
    assert block is None
    assert rag.stats()["timeouts"] == 1 and rag.stats()["errors"] == 0
    # Still held: the turn did not wait for it.
    assert [r.status for r in stack.server.requests_to(EMBEDDINGS)].count(None) == 1
    # The next turn, with the server answering again, gets its memories.
    block = await rag.context_for_turn(
        user_id=user, companion_id=companion, text="Tell me about the conservatory"
    )
    assert block is not None and "conservatory" in block
    assert rag.stats()["timeouts"] == 1


async def test_failing_embeddings_fall_back_to_keyword_memories(stack: MemoryStack) -> None:
    user, companion = await seed(stack)
    rag = rag_for(stack)
    stack.server.fail_next(3, status=500, path_prefix=EMBEDDINGS)
    block = await rag.context_for_turn(
        user_id=user, companion_id=companion, text="is the boiler working?"
    )
    assert block is not None and "our boiler broke down on Monday" in block
    assert rag.stats()["errors"] == 0 and rag.stats()["timeouts"] == 0
    assert [r.status for r in stack.server.requests_to(EMBEDDINGS)][-1] == 500


async def test_a_database_failure_is_counted_and_the_turn_goes_on(
    stack: MemoryStack, make_settings, db_dsn: str
) -> None:
    user, companion = await seed(stack)
    closed = await ConnectionPool.create(make_settings(), dsn=db_dsn)
    await closed.aclose()
    rag = RAGService(
        engine=RetrievalEngine(pool=closed, embedder=stack.embedder, settings=stack.settings),
        memory=stack.memory, settings=stack.settings,
    )
    block = await rag.context_for_turn(
        user_id=user, companion_id=companion, text="How is Maya doing?"
    )
    assert block is None and rag.stats()["errors"] == 1


async def test_small_talk_is_not_looked_up(stack: MemoryStack) -> None:
    user, companion = await seed(stack)
    rag = rag_for(stack)
    before = len(stack.server.requests_to(EMBEDDINGS))
    block = await rag.context_for_turn(
        user_id=user, companion_id=companion, text="ok, thanks!", profile_line="Sam"
    )
    assert block == "About them: Sam"
    assert len(stack.server.requests_to(EMBEDDINGS)) == before
    assert rag.stats()["skipped_small_talk"] == 1


async def test_memories_put_in_context_have_their_use_counted(stack: MemoryStack) -> None:
    user, companion = await seed(stack)
    rag = rag_for(stack)
    await rag.context_for_turn(user_id=user, companion_id=companion, text="the boiler?")
    await stack.memory.drain()
    used = await stack.pool.fetchval(
        "select access_count from public.memories where user_id = $1 and content like $2",
        user, "our boiler%",
    )
    assert used == 1


async def test_memory_stats_report_categories_size_latency_and_timeouts(
    stack: MemoryStack,
) -> None:
    user, companion = await seed(stack)
    rag = rag_for(stack)
    await rag.context_for_turn(user_id=user, companion_id=companion, text="Maya and the cello")
    stats = await rag.memory_stats(user, companion)
    assert stats["memories"] == 3
    assert stats["per_category"] == {"PERSON": 1, "episodic:user": 2}
    assert stats["store_bytes"] > 0 and stats["without_vector"] == 0
    assert stats["retrieval"]["context_ms"]["count"] == 1
    assert stats["retrieval"]["timeouts"] == 0
    assert stats["engine"]["search_ms"]["count"] == 1


async def test_a_warmed_session_uses_its_in_process_index_and_still_sees_new_facts(
    stack: MemoryStack,
) -> None:
    user, companion = await seed(stack)
    engine = RetrievalEngine(pool=stack.pool, embedder=stack.embedder, settings=stack.settings)
    rag = RAGService(engine=engine, memory=stack.memory, settings=stack.settings)
    _SERVICES.append(rag)
    rag.warm(user)  # what a session start does; returns at once
    assert await engine.warm(user)  # (waits for that same load)
    await stack.memory.remember(user, companion, "PET", "dog", "a beagle called Biscuit")
    block = await rag.context_for_turn(
        user_id=user, companion_id=companion, text="How is my dog Biscuit?"
    )
    assert block is not None and "dog: a beagle called Biscuit" in block
    stats = engine.stats()
    assert stats["local_searches"] == 1 and stats["sql_searches"] == 0


def test_memory_times_read_naturally() -> None:
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    assert when_label(now - timedelta(hours=2), now) == "today"
    assert when_label(now - timedelta(days=1), now) == "yesterday"
    assert when_label(now - timedelta(days=9), now) == "1 week ago"
    assert when_label(now - timedelta(days=70), now) == "2 months ago"
    assert when_label(datetime(2023, 5, 8, tzinfo=UTC), now) == "May 2023"
