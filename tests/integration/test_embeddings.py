"""Embedders: OpenAI path against the loopback OpenAI server, the bundled local model, and the
dimension check against the real memories.embedding column."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from core.errors import ConfigError, EmbeddingDimensionMismatch, EmbeddingError
from infrastructure.connection_pool import ConnectionPool
from infrastructure.embeddings import check_dimension
from infrastructure.local_embedder import LocalEmbedder
from infrastructure.model_clients import ModelClients
from infrastructure.openai_embedder import OpenAIEmbedder
from services.composition import build_embedder
from tests.support.openai_server import OpenAIStubServer
from tests.support.openai_text import hashed_bag_of_words

pytestmark = pytest.mark.integration

EMBED_PATH = "/v1/embeddings"


@pytest.fixture
async def srv() -> AsyncIterator[OpenAIStubServer]:
    async with OpenAIStubServer() as server:
        yield server


@pytest.fixture
def openai_settings(make_settings, srv: OpenAIStubServer):
    def build(**overrides: object):
        values: dict[str, object] = {
            "embedding_provider": "openai",
            "embedding_model": "text-embedding-3-small",
            "embedding_dimensions": 384,
            "openai_base_url": srv.base_url,
            "openai_api_key": "sk-embed-test",
            "openai_max_retries": 2,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
async def openai_models(openai_settings) -> AsyncIterator[ModelClients]:
    models = ModelClients.create(openai_settings())
    yield models
    await models.aclose()


@pytest.fixture(scope="module")
def local_embedder() -> Iterator[LocalEmbedder]:
    embedder = LocalEmbedder.load()
    yield embedder
    asyncio.run(embedder.aclose())


def _openai(models: ModelClients, **kwargs: int) -> OpenAIEmbedder:
    return OpenAIEmbedder(
        client=models.openai, model="text-embedding-3-small", dimensions=384, **kwargs
    )


async def test_openai_embedder_splits_texts_into_batches_of_at_most_batch_size(
    srv: OpenAIStubServer, openai_models: ModelClients
) -> None:
    embedder = _openai(openai_models, batch_size=4)
    texts = [f"memory number {i} about gardening" for i in range(10)]
    vectors = await embedder.embed_batch(texts)

    requests = srv.requests_to(EMBED_PATH)
    assert sorted(len(r.json["input"]) for r in requests) == [2, 4, 4]
    assert sorted(t for r in requests for t in r.json["input"]) == sorted(texts)
    for r in requests:
        assert r.json["model"] == "text-embedding-3-small"
        assert r.json["dimensions"] == 384
        assert r.authorization == "Bearer sk-embed-test"
    for text, vector in zip(texts, vectors, strict=True):
        assert vector.dtype == np.float32 and vector.shape == (384,)
        np.testing.assert_allclose(vector, hashed_bag_of_words(text, 384), atol=1e-6)
    assert embedder.stats()["requests"] == 3
    assert embedder.stats()["texts_embedded"] == 10


async def test_cached_text_is_not_requested_again(
    srv: OpenAIStubServer, openai_models: ModelClients
) -> None:
    embedder = _openai(openai_models)
    first = await embedder.embed("I like tea")
    again = await embedder.embed("I like tea")
    batch = await embedder.embed_batch(["I like tea", "and coffee", "and coffee"])

    requests = srv.requests_to(EMBED_PATH)
    assert [r.json["input"] for r in requests] == [["I like tea"], ["and coffee"]]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(batch[0], first)
    np.testing.assert_array_equal(batch[1], batch[2])
    stats = embedder.stats()
    assert stats["cache_hits"] == 2
    assert stats["requests"] == 2


async def test_concurrent_requests_for_one_text_share_a_single_request(
    srv: OpenAIStubServer, openai_models: ModelClients
) -> None:
    embedder = _openai(openai_models)
    a, b = await asyncio.gather(embedder.embed("same words"), embedder.embed("same words"))
    np.testing.assert_array_equal(a, b)
    assert len(srv.requests_to(EMBED_PATH)) == 1
    assert embedder.stats()["coalesced"] == 1


async def test_a_caller_that_gives_up_still_leaves_the_vector_in_the_cache(
    srv: OpenAIStubServer, openai_models: ModelClients
) -> None:
    embedder = _openai(openai_models)
    srv.delay_s[EMBED_PATH] = 0.5
    caller = asyncio.create_task(embedder.embed("slow sentence"))
    await srv.received(EMBED_PATH)
    caller.cancel()  # gives up while the server is still working on it, as a RAG budget does
    with pytest.raises(asyncio.CancelledError):
        await caller
    vector = await embedder.embed("slow sentence")
    assert vector.shape == (384,)
    assert len(srv.requests_to(EMBED_PATH)) == 1


async def test_cached_vectors_cannot_be_modified_by_a_caller(
    openai_models: ModelClients,
) -> None:
    embedder = _openai(openai_models)
    vector = await embedder.embed("read only")
    with pytest.raises(ValueError):
        vector[0] = 1.0


async def test_least_recently_used_vectors_are_evicted_past_the_limit(
    srv: OpenAIStubServer, openai_models: ModelClients
) -> None:
    embedder = _openai(openai_models, cache_entries=2)
    for text in ("a", "b", "a", "c", "a", "b"):
        await embedder.embed(text)
    # "b" was the least recently used when "c" arrived, so only it is fetched twice.
    assert [r.json["input"][0] for r in srv.requests_to(EMBED_PATH)] == ["a", "b", "c", "b"]


async def test_server_errors_become_embedding_error_after_sdk_retries(
    srv: OpenAIStubServer, openai_models: ModelClients
) -> None:
    embedder = _openai(openai_models)
    srv.fail_next(3, status=500, path_prefix=EMBED_PATH, retry_after=0.01)
    with pytest.raises(EmbeddingError) as caught:
        await embedder.embed("anything")
    assert [r.status for r in srv.requests_to(EMBED_PATH)] == [500, 500, 500]
    assert caught.value.retryable is True
    assert caught.value.suggestion
    assert embedder.stats()["errors"] == 1
    # The failure is not cached: the next call asks the (recovered) server again.
    vector = await embedder.embed("anything")
    assert vector.shape == (384,)
    assert len(srv.requests_to(EMBED_PATH)) == 4


async def test_a_rejected_key_is_a_non_retryable_error_naming_the_setting(
    srv: OpenAIStubServer, openai_models: ModelClients
) -> None:
    srv.api_key = "a-different-key"
    with pytest.raises(EmbeddingError) as caught:
        await _openai(openai_models).embed("anything")
    assert caught.value.retryable is False
    assert "OPENAI_API_KEY" in caught.value.suggestion
    assert len(srv.requests_to(EMBED_PATH)) == 1


async def test_a_server_returning_the_wrong_size_is_reported(
    srv: OpenAIStubServer, openai_models: ModelClients
) -> None:
    srv.embed_fn = lambda text, dims: hashed_bag_of_words(text, 100)
    with pytest.raises(EmbeddingError) as caught:
        await _openai(openai_models).embed("anything")
    assert "100 dimensions" in caught.value.message
    assert "EMBEDDING_DIMENSIONS" in caught.value.suggestion


async def test_build_embedder_uses_the_openai_server_when_configured(
    srv: OpenAIStubServer, openai_settings, caplog: pytest.LogCaptureFixture
) -> None:
    # EMBEDDING_MODEL left at the local default: an OpenAI model is used instead.
    settings = openai_settings(embedding_model="all-MiniLM-L6-v2")
    models = ModelClients.create(settings)
    try:
        with caplog.at_level(logging.INFO, logger="services.composition"):
            embedder = build_embedder(settings, models)
        await embedder.embed("hello")
    finally:
        await models.aclose()
    assert isinstance(embedder, OpenAIEmbedder)
    assert srv.requests_to(EMBED_PATH)[0].json["model"] == "text-embedding-3-small"
    assert "EMBEDDING_PROVIDER=openai" in caplog.text


async def test_build_embedder_reuses_the_prewarmed_local_model(
    models: ModelClients, make_settings, local_embedder: LocalEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="services.composition"):
        embedder = build_embedder(make_settings(), models, local=local_embedder)
    assert embedder is local_embedder
    assert "EMBEDDING_PROVIDER=local" in caplog.text


async def test_local_model_gives_normalized_384_vectors_ranked_by_meaning(
    local_embedder: LocalEmbedder,
) -> None:
    query, related, unrelated = await local_embedder.embed_batch([
        "I adopted a puppy last week",
        "My new dog is very playful",
        "The central bank raised interest rates",
    ])
    for vector in (query, related, unrelated):
        assert vector.dtype == np.float32 and vector.shape == (384,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
    assert float(query @ related) > float(query @ unrelated) + 0.2
    assert local_embedder.dimensions == 384
    assert any(t.name.startswith("local-embedder") for t in threading.enumerate())


async def test_local_batch_matches_single_embeds(local_embedder: LocalEmbedder) -> None:
    texts = ["my sister Ana lives in Lisbon", "she plays the cello"]
    batch = await local_embedder.embed_batch(texts)
    fresh = LocalEmbedder(local_embedder._model)  # own cache, so both really encode
    singles = [await fresh.embed(t) for t in texts]
    for b, s in zip(batch, singles, strict=True):
        np.testing.assert_allclose(b, s, atol=1e-5)


async def test_a_repeated_text_is_served_from_the_cache_without_encoding(
    local_embedder: LocalEmbedder,
) -> None:
    fresh = LocalEmbedder(local_embedder._model)  # its own cache and counters
    first = await fresh.embed("I had pasta with my brother on day 3")
    again = await fresh.embed("I had pasta with my brother on day 3")
    np.testing.assert_array_equal(first, again)
    stats = fresh.stats()
    assert (stats["texts_embedded"], stats["cache_hits"]) == (1, 1)


async def test_dimension_mismatch_names_the_setting_and_the_column(
    pool: ConnectionPool, openai_models: ModelClients,
) -> None:
    too_wide = OpenAIEmbedder(client=openai_models.openai, dimensions=1536)
    with pytest.raises(EmbeddingDimensionMismatch) as caught:
        await check_dimension(pool, too_wide)
    assert isinstance(caught.value, ConfigError)
    assert "EMBEDDING_DIMENSIONS is 1536" in caught.value.message
    assert "vector(384)" in caught.value.message
    assert "EMBEDDING_DIMENSIONS=384" in caught.value.suggestion


async def test_matching_dimension_passes_the_check(
    pool: ConnectionPool, openai_models: ModelClients, local_embedder: LocalEmbedder
) -> None:
    await check_dimension(pool, local_embedder)
    await check_dimension(pool, _openai(openai_models))
