"""Embedding memory contents: one at a time without ever losing the write, or in bulk."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from core.errors import CompanionError, EmbeddingError
from infrastructure.embeddings import Embedder

logger = logging.getLogger(__name__)


class MemoryVectors:
    """The embedder as the memory parts use it; counts the failures it absorbs.

    Args:
        embedder: the embedding backend.
    """

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self.failures = 0

    async def embed_or_none(self, text: str) -> np.ndarray | None:
        """The vector, or None when embedding fails: a memory without a vector is still found
        by full-text search, so the write goes on."""
        try:
            return await self._embedder.embed(text)
        except Exception as exc:
            self.failures += 1
            logger.warning("embedding failed, storing without vector (%s)", type(exc).__name__)
            return None

    async def embed_all(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One vector per text, in one batch.

        Raises:
            EmbeddingError: the backend failed; nothing of the batch was stored.
        """
        try:
            return await self._embedder.embed_batch(texts)
        except CompanionError:
            raise
        except Exception as exc:
            raise EmbeddingError(
                f"embedding a batch of episodes failed ({type(exc).__name__})",
                suggestion="check the embedding backend and import again; nothing "
                "is stored twice",
            ) from exc
