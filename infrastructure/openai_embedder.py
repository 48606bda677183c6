"""Embeddings from any OpenAI-compatible `/embeddings` endpoint, batched and cached."""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

import numpy as np
import openai

from core.errors import EmbeddingError
from infrastructure.embeddings import (
    DEFAULT_CACHE_ENTRIES,
    FAILURE_COOLDOWN_S,
    CachedEmbedder,
    normalized,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
# OpenAI accepts up to 2048 inputs per request; smaller batches keep one slow request short.
DEFAULT_BATCH_SIZE = 96


class OpenAIEmbedder(CachedEmbedder):
    """Embeddings from any OpenAI-compatible `/embeddings` endpoint, batched and cached.

    The client's `base_url` (OPENAI_BASE_URL) decides the server; its retries (OPENAI_MAX_RETRIES)
    run before an `EmbeddingError` is raised.
    """

    def __init__(
        self,
        *,
        client: AsyncOpenAI,
        model: str = DEFAULT_OPENAI_MODEL,
        dimensions: int = 1536,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = 4,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        failure_cooldown_s: float = FAILURE_COOLDOWN_S,
    ) -> None:
        super().__init__(
            model=model, dimensions=dimensions, cache_entries=cache_entries,
            failure_cooldown_s=failure_cooldown_s,
        )
        self.name = f"openai:{model}"
        self._client = client
        self._batch_size = max(1, batch_size)
        self._slots = asyncio.Semaphore(max(1, max_concurrency))

    async def _compute(self, texts: list[str]) -> list[np.ndarray]:
        chunks = [texts[i : i + self._batch_size] for i in range(0, len(texts), self._batch_size)]
        results = await asyncio.gather(*(self._request(chunk) for chunk in chunks))
        return [vector for chunk in results for vector in chunk]

    async def _request(self, texts: list[str]) -> list[np.ndarray]:
        async with self._slots:
            self._requests += 1
            try:
                response = await self._client.embeddings.create(
                    model=self.model,
                    input=texts,
                    dimensions=self.dimensions,
                    encoding_format="base64",
                )
            except openai.APIError as exc:
                raise _embedding_error(exc) from exc
        rows = sorted(response.data, key=lambda d: d.index)
        if len(rows) != len(texts):
            raise EmbeddingError(
                f"embedding server returned {len(rows)} vectors for {len(texts)} texts",
                suggestion="check that OPENAI_BASE_URL points at an OpenAI-compatible server",
            )
        matrix = np.array([_as_floats(row.embedding) for row in rows], dtype=np.float32)
        if matrix.shape[1] != self.dimensions:
            raise EmbeddingError(
                f"embedding model returned {matrix.shape[1]} dimensions, "
                f"expected {self.dimensions}",
                suggestion="set EMBEDDING_DIMENSIONS to what EMBEDDING_MODEL returns, or use a "
                "model that accepts the dimensions parameter (text-embedding-3-*)",
                retryable=False,
            )
        return normalized(matrix)


def _as_floats(embedding: Any) -> Any:
    # The SDK decodes base64 itself; a server that ignored encoding_format may still send text.
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return embedding


def _embedding_error(exc: openai.APIError) -> EmbeddingError:
    if isinstance(exc, openai.APITimeoutError):
        return EmbeddingError(
            "embedding request timed out",
            suggestion="the embedding server is slow; raise OPENAI_TIMEOUT_S or check the server",
        )
    if isinstance(exc, openai.APIConnectionError):
        return EmbeddingError(
            "could not reach the embedding server",
            suggestion="check OPENAI_BASE_URL and the network; retrieval uses full-text meanwhile",
        )
    status = getattr(exc, "status_code", None)
    if status == 401 or status == 403:
        suggestion, retryable = "check OPENAI_API_KEY", False
    elif status == 404:
        suggestion, retryable = "check EMBEDDING_MODEL exists on this server", False
    elif status in (400, 422):
        suggestion, retryable = "check EMBEDDING_MODEL and EMBEDDING_DIMENSIONS", False
    elif status == 429:
        suggestion, retryable = "rate limited after retries; wait or raise the account limit", True
    else:
        suggestion, retryable = "the embedding server failed after retries; try again later", True
    return EmbeddingError(
        f"embedding request failed with HTTP {status}", suggestion=suggestion, retryable=retryable
    )
