"""Faults with real servers, mid-session: the turn goes on, writes are kept, work is retried.

Each test builds the whole service graph (`build_services`) over the test database and talks
through `CompanionSession` as the agent does; then it breaks one real dependency: Redis is
killed and started again on its port, Postgres is stopped and started, the OpenAI-compatible
loopback server answers embeddings or chat with 429/500 or hangs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis
from openai import AsyncOpenAI

from core.config import Settings
from core.errors import EmbeddingError
from infrastructure.openai_embedder import OpenAIEmbedder
from livekit_layer.companion_session import CompanionSession
from livekit_layer.session_open import open_session
from services.composition import Services, build_services
from tests.conftest import PostgresFreezer
from tests.support.markers import marker_brain
from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import PostgresProcess, RedisProcess

pytestmark = pytest.mark.integration

EMBEDDINGS = "/v1/embeddings"
CHAT = "/v1/chat/completions"
PET = "Pip the parrot"
# Deadlines that only bound a failing test; nothing is timed.
GIVE_UP_S = 60.0


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStubServer]:
    async with OpenAIStubServer(chat_script=marker_brain) as server:
        yield server


@pytest.fixture
def base_settings(make_settings, db_dsn: str, stub: OpenAIStubServer):
    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": db_dsn,
            "openai_base_url": stub.base_url,
            "openai_api_key": "test-key",
            "llm_model": "stub-model",
            "embedding_provider": "openai",
            "embedding_model": "text-embedding-3-small",
            "embedding_dimensions": 384,
            "batch_flush_interval_ms": 50,
            "consolidation_every_turns": 0,
            "rag_budget_ms": 2_000,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@dataclass
class Talk:
    """One person talking with their companion; counts what was logged."""

    services: Services
    session: CompanionSession
    said: int = 0
    recent: list[str] = field(default_factory=list)

    @property
    def user_id(self) -> uuid.UUID:
        return self.session.user_id

    @property
    def companion_id(self) -> uuid.UUID:
        return self.session.companion.id

    async def turn(self, text: str) -> str | None:
        """The memory block for a turn (what llm_node adds), then the turn and reply logged."""
        block = await self.session.context_for_turn(text, self.recent[-6:])
        reply = f"Reply {self.said} to that."
        self.session.log_message("user", f"{text} (turn {self.said})")
        self.session.log_message("assistant", reply)
        self.recent += [text, reply]
        self.said += 1
        return block

    async def rows(self) -> tuple[int, int]:
        row = await self.services.pool.fetchrow(
            "select (select count(*) from public.messages where session_id = $1) as messages, "
            "(select count(*) from public.memories where user_id = $2 and kind = 'episodic') "
            "as episodes",
            self.session.conversation.id, self.user_id,
        )
        assert row is not None
        return int(row["messages"]), int(row["episodes"])


async def start_talk(services: Services) -> Talk:
    session = await open_session(services, user_id=uuid.uuid4(), room="faults")
    await services.memory.remember(session.user_id, session.companion.id, "FACT", "pet_name",
                                   "Pip the parrot")
    return Talk(services, session)


async def settle(services: Services) -> None:
    for _ in range(2):
        await services.memory.drain()
        await services.conversations.drain()
        await services.consolidation.drain()
        await services.batcher.flush()


async def until(check, *, what: str, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + GIVE_UP_S
    while not await check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(every_s)


# --- Redis ------------------------------------------------------------------------------------


async def in_redis(server: RedisProcess, key: str) -> bool:
    client = aioredis.Redis.from_url(server.url)
    try:
        return bool(await client.exists(key))
    finally:
        await client.aclose()


async def test_redis_killed_mid_session_turns_go_on_from_the_fallback_and_redis_returns(
    base_settings,
) -> None:
    redis_server = RedisProcess()
    redis_server.start()
    services = await build_services(
        base_settings(redis_enabled=True, redis_url=redis_server.url, redis_retry_interval_s=0.2)
    )
    try:
        talk = await start_talk(services)
        current_key = f"companion:memories:current:{talk.user_id}:{talk.companion_id}"
        assert PET in (await talk.turn("Is Pip the parrot well?") or "")
        await services.memory.current(talk.user_id, talk.companion_id)
        assert services.cache.stats()["backend"] == "redis"
        assert await in_redis(redis_server, current_key)

        redis_server.kill()
        for n in range(4):
            block = await talk.turn(f"Did Pip the parrot sleep well, take {n}?")
            assert block is not None and PET in block
        await services.memory.remember(talk.user_id, talk.companion_id, "FACT", "pet_food",
                                       "sunflower seeds")
        known = await services.memory.current(talk.user_id, talk.companion_id)
        assert "sunflower seeds" in {m.value for m in known}
        stats = services.cache.stats()
        assert stats["backend"] == "memory" and stats["fallbacks"] == 1 and stats["errors"] >= 1

        redis_server.start()

        async def redis_is_back() -> bool:
            await talk.turn("Is Pip the parrot happy?")
            return services.cache.stats()["backend"] == "redis"

        await until(redis_is_back, what="the cache to use Redis again", every_s=0.2)
        assert services.cache.stats()["reconnects"] == 1
        known = await services.memory.current(talk.user_id, talk.companion_id)
        assert {"Pip the parrot", "sunflower seeds"} <= {m.value for m in known}
        assert await in_redis(redis_server, current_key)  # in Redis again, not the fallback
        block = await talk.turn("Does Pip still like sunflower seeds?")
        assert block is not None and "sunflower seeds" in block

        await settle(services)
        assert await talk.rows() == (2 * talk.said, 2 * talk.said)
        assert services.batcher.stats()["lost"] == 0
    finally:
        await services.aclose()
        redis_server.kill()


# --- Postgres ---------------------------------------------------------------------------------


async def test_postgres_stopped_mid_session_turns_keep_the_memory_held_in_process_and_lose_no_write(
    base_settings, redis_server, postgres: PostgresProcess
) -> None:
    services = await build_services(
        base_settings(redis_enabled=True, redis_url=redis_server.url)
    )
    try:
        talk = await start_talk(services)
        for n in range(3):
            assert PET in (await talk.turn(f"How is Pip the parrot today, part {n}?") or "")
        assert services.retrieval.stats()["local_searches"] > 0  # the index the session loaded
        failed_before = services.rag.stats()["errors"] + services.rag.stats()["timeouts"]

        # In a thread: the worker's loop (flushes, retries) keeps running while it stops.
        await asyncio.to_thread(postgres.stop)
        try:
            down_turns = 0

            async def talked_until_a_batch_is_spooled() -> bool:
                nonlocal down_turns
                block = await talk.turn(f"What else about Pip the parrot, {down_turns}?")
                # The user's memories held in this process still answer, as of the last search.
                assert block is not None and PET in block
                down_turns += 1
                return services.batcher.stats()["spooled"] > 0

            # Past the batcher's whole retry schedule: some batches go to the spool.
            await until(talked_until_a_batch_is_spooled, what="a spooled batch", every_s=0.2)
            direct = await services.rag.context_for_turn(
                user_id=talk.user_id, companion_id=talk.companion_id, text="Pip the parrot?"
            )
            assert direct is not None and PET in direct
        finally:
            await asyncio.to_thread(postgres.start)
        rag = services.rag.stats()
        assert rag["errors"] + rag["timeouts"] == failed_before
        assert services.retrieval.stats()["stale_local_searches"] >= down_turns + 1

        async def memory_is_back() -> bool:
            block = await talk.turn("Do you still remember Pip the parrot?")
            return block is not None and PET in block

        await until(memory_is_back, what="retrieval to work again", every_s=0.25)

        async def all_rows_landed() -> bool:
            return await talk.rows() == (2 * talk.said, 2 * talk.said)

        # Spooled batches are replayed by the running batcher once writes succeed again.
        await until(all_rows_landed, what="every logged turn in Postgres", every_s=0.5)
        batcher = services.batcher.stats()
        assert batcher["retries"] > 0 and batcher["spooled"] > 0
        assert batcher["replayed"] == batcher["spooled"] and batcher["lost"] == 0
    finally:
        await services.aclose()


async def test_postgres_frozen_mid_session_turns_keep_the_memory_held_in_process(
    base_settings, redis_server, postgres_freezer: PostgresFreezer
) -> None:
    # A statement on the frozen server ends only at its timeout, long past the turn's budget.
    services = await build_services(base_settings(
        redis_enabled=True, redis_url=redis_server.url, db_command_timeout_s=30,
        db_acquire_timeout_s=30,
    ))
    try:
        talk = await start_talk(services)
        for n in range(2):
            assert PET in (await talk.turn(f"How is Pip the parrot today, part {n}?") or "")
        assert services.retrieval.stats()["local_searches"] > 0  # the index the session loaded
        postgres_freezer.freeze()
        try:
            for n in range(2):
                # The user's memories held in this process answer, as they do with Postgres
                # stopped, instead of the turn waiting out its budget and going on without.
                block = await talk.turn(f"What else about Pip the parrot, {n}?")
                assert block is not None and PET in block
        finally:
            postgres_freezer.thaw()
        assert services.rag.stats()["timeouts"] == 0
        assert services.retrieval.stats()["stale_local_searches"] >= 2

        async def all_rows_landed() -> bool:
            return await talk.rows() == (2 * talk.said, 2 * talk.said)

        await until(all_rows_landed, what="every logged turn in Postgres", every_s=0.5)
    finally:
        postgres_freezer.thaw()
        await services.aclose()


# --- Embeddings -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 429])
async def test_failing_embeddings_give_keyword_memories_and_the_embedder_stops_asking(
    base_settings, stub: OpenAIStubServer, status: int
) -> None:
    # Default retries (2, with the SDK's backoff), under a budget that outlasts them: how long
    # the first turns wait within the 150 ms default is bench/soak.py's to measure.
    settings = base_settings(rag_budget_ms=5_000, openai_max_retries=2)
    services = await build_services(settings)
    try:
        talk = await start_talk(services)
        assert PET in (await talk.turn("How is Pip the parrot?") or "")
        before = len(stub.requests_to(EMBEDDINGS))
        stub.fail_next(100_000, status=status, path_prefix=EMBEDDINGS)
        # One question asked again and again: its words weigh the same in every search (new
        # words would make the pet's fact a smaller share of each query as turns pile up).
        blocks = [await talk.turn("Is Pip the parrot well?") for _ in range(8)]
        talk.session.log_message("user", "We walked to the waterfall by the old mill")
        talk.said += 1
        talk.session.log_message("assistant", "That sounds lovely.")

        # The first turns wait out the retries, then the failing backend is not asked again
        # (for its 20 s cool-down); every turn gets its memory by keyword search.
        assert [PET in (b or "") for b in blocks] == [True] * len(blocks)
        embedder = services.embedder.stats()
        assert embedder["failing"] and embedder["refused_while_failing"] > 0
        assert services.retrieval.stats()["keyword_only"] == len(blocks)

        # Turns logged meanwhile are kept without a vector and found by their words.
        await settle(services)
        # Bounded: each call that reached the server (all finished now) tried 1 + 2 retries.
        failed = [r for r in stub.requests_to(EMBEDDINGS)[before:] if r.status == status]
        assert len(failed) == 3 * services.embedder.stats()["errors"]
        unembedded = await services.pool.fetchval(
            "select count(*) from public.memories where user_id = $1 and embedding is null",
            talk.user_id,
        )
        assert unembedded > 0
        block = await talk.turn("Remember the waterfall by the mill?")
        assert block is not None and "waterfall by the old mill" in block
        await settle(services)
        assert await talk.rows() == (2 * talk.said, 2 * talk.said)
    finally:
        await services.aclose()


async def test_a_failing_embedder_refuses_new_texts_at_once_during_its_cool_down(
    stub: OpenAIStubServer,
) -> None:
    client = AsyncOpenAI(base_url=stub.base_url, api_key="test", max_retries=1)
    # A cool-down no test outlasts: every refusal below falls inside it.
    embedder = OpenAIEmbedder(client=client, dimensions=384, failure_cooldown_s=3_600)
    try:
        stub.fail_next(4, status=503, path_prefix=EMBEDDINGS, retry_after=0.01)
        for text in ("one", "two"):
            with pytest.raises(EmbeddingError):
                await embedder.embed(text)
        assert len(stub.requests_to(EMBEDDINGS)) == 4
        with pytest.raises(EmbeddingError) as refused:
            await embedder.embed("three")
        assert refused.value.retryable and "full-text" in refused.value.suggestion
        assert len(stub.requests_to(EMBEDDINGS)) == 4  # not asked while failing
        assert (await embedder.embed_batch([])) == []
        assert embedder.stats()["failing"] and embedder.stats()["refused_while_failing"] == 1
    finally:
        await embedder.aclose()
        await client.close()


async def test_after_its_cool_down_one_call_asks_again_and_an_answer_ends_the_failing(
    stub: OpenAIStubServer,
) -> None:
    client = AsyncOpenAI(base_url=stub.base_url, api_key="test", max_retries=1)
    # No cool-down: the call after a failure is the one that finds out.
    embedder = OpenAIEmbedder(client=client, dimensions=384, failure_cooldown_s=0)
    try:
        stub.fail_next(6, status=503, path_prefix=EMBEDDINGS, retry_after=0.01)
        for text in ("one", "two"):
            with pytest.raises(EmbeddingError):
                await embedder.embed(text)
        assert embedder.stats()["failing"]
        probe = asyncio.create_task(embedder.embed("three"))
        await stub.received(EMBEDDINGS, count=5)  # the probe is out
        with pytest.raises(EmbeddingError):
            await embedder.embed("four")  # refused while the probe is out
        with pytest.raises(EmbeddingError):
            await probe  # the server still fails: it stays failing
        assert len(stub.requests_to(EMBEDDINGS)) == 6
        assert embedder.stats()["failing"]

        vector = await embedder.embed("five")  # the server is back
        assert vector.shape == (384,)
        stats = embedder.stats()
        assert not stats["failing"] and stats["refused_while_failing"] == 1
        assert (await embedder.embed("six")).shape == (384,)
        assert len(stub.requests_to(EMBEDDINGS)) == 8
    finally:
        await embedder.aclose()
        await client.close()


# --- LLM for background work ------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["429", "500", "hang"])
async def test_llm_trouble_in_background_work_fails_soft_and_the_work_is_done_later(
    base_settings, stub: OpenAIStubServer, fault: str
) -> None:
    # A hung call is cut by the client's timeout; the hang outlasts any test.
    timeout = {"openai_timeout_s": 0.5} if fault == "hang" else {}
    settings = base_settings(openai_max_retries=1, **timeout)
    services = await build_services(settings)
    later: Services | None = None
    try:
        talk = await start_talk(services)
        await talk.turn("My neighbour mk321a lends me her ladder")
        await talk.turn("and mk321a grows tomatoes")
        if fault == "hang":
            stub.hang_next(100, seconds=3_600, path_prefix=CHAT)
        else:
            stub.fail_next(100, status=int(fault), path_prefix=CHAT,
                           retry_after=0.05 if fault == "429" else None)
        stub.requests.clear()

        await talk.session.close(wait=True)  # must not raise
        await settle(services)

        # The summary at close gets one short try (shutdown must stay within LiveKit's limit);
        # consolidation one try plus one retry, then it gave up; the profile summary is
        # written from what consolidation saves, so it waits for it.
        assert len(stub.requests_to(CHAT)) == 1 + 2
        conversations = services.conversations.stats()
        assert conversations["summaries_fallback"] == 1 and conversations["summary_failures"] == 0
        summary = await services.pool.fetchval(
            "select summary from public.sessions where id = $1", talk.session.conversation.id
        )
        assert summary is not None and "mk321a" in summary  # an extract of what they said
        assert services.after_session.stats()["left_for_later"] == 1
        assert services.profiles.stats()["refreshed_fallback"] == 0
        known = await services.memory.current(talk.user_id, talk.companion_id)
        assert not any("mk321a" in (m.value or "") for m in known)

        # The server is back: the next worker's maintenance pass picks the session up, then
        # writes the profile summary with the LLM (with the default client timeout).
        stub.reset()
        later = await build_services(base_settings(openai_max_retries=1))
        report = await later.maintenance.run_pass()
        assert report["saved"] >= 1 and report["profiles"] == 1
        known = await later.memory.current(talk.user_id, talk.companion_id)
        assert any("mk321a" in (m.value or "") for m in known)
        pending = await later.pool.fetchval(
            "select consolidated_through is null from public.sessions where id = $1",
            talk.session.conversation.id,
        )
        assert pending is False
        profile = await later.users.profile_for(talk.user_id, talk.companion_id)
        assert profile is not None and "mk321a" in (profile.profile_summary or "")
        assert later.profiles.stats()["refreshed_by_llm"] == 1
    finally:
        await services.aclose()
        if later is not None:
            await later.aclose()
