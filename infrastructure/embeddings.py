"""Text embeddings: the `Embedder` protocol every backend meets, and the cache they share.

Backends (`OpenAIEmbedder` in openai_embedder, `LocalEmbedder` in local_embedder) return
float32, L2-normalized vectors, cache them in-process by a hash of model and text, and keep
counters for `stats()`. The composition root chooses between them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core.errors import EmbeddingDimensionMismatch, EmbeddingError, MigrationError
from core.latency import LatencyWindow

if TYPE_CHECKING:
    from infrastructure.connection_pool import ConnectionPool

logger = logging.getLogger(__name__)

DEFAULT_CACHE_ENTRIES = 4096
# After this many calls in a row failed (each after the client's own retries), callers get an
# EmbeddingError at once for FAILURE_COOLDOWN_S instead of waiting through the retries again.
FAILURES_TO_OPEN = 2
FAILURE_COOLDOWN_S = 20.0


class Embedder(Protocol):
    """What retrieval and memory code needs from an embedding backend.

    Attributes:
        name: backend and model, for logs and stats (e.g. "openai:text-embedding-3-small").
        dimensions: length of every vector returned; must match the memories.embedding column.
    """

    name: str
    dimensions: int

    async def embed(self, text: str) -> np.ndarray:
        """One float32, L2-normalized vector of length `dimensions`."""
        ...

    async def embed_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One vector per text, in order. Backends that can batch override this."""
        return [await self.embed(text) for text in texts]

    def stats(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class VectorCache:
    """In-process LRU of vectors keyed by sha256(model, dimensions, text).

    Vectors are stored read-only so a caller cannot alter what later callers receive.
    """

    def __init__(self, model: str, dimensions: int, max_entries: int = DEFAULT_CACHE_ENTRIES):
        self._prefix = f"{model}\x00{dimensions}\x00".encode()
        self._max = max_entries
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def key(self, text: str) -> str:
        return hashlib.sha256(self._prefix + text.encode("utf-8")).hexdigest()

    def get(self, key: str) -> np.ndarray | None:
        vector = self._items.get(key)
        if vector is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return vector

    def put(self, key: str, vector: np.ndarray) -> np.ndarray:
        vector.flags.writeable = False
        self._items[key] = vector
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)
        return vector

    def __len__(self) -> int:
        return len(self._items)


def normalized(rows: np.ndarray) -> list[np.ndarray]:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0  # a zero vector stays zero rather than becoming NaN
    return list(rows / norms)


class CachedEmbedder(Embedder):
    """Shared cache lookup, de-duplication and counters; subclasses compute the misses.

    While the backend keeps failing (FAILURES_TO_OPEN calls in a row, each after its retries),
    new texts are refused at once with a retryable EmbeddingError for `failure_cooldown_s`:
    a voice turn then searches by keywords within its budget instead of spending it on
    retries that will fail. After the cool-down one call goes through to see if it is back.
    """

    name: str
    dimensions: int

    def __init__(
        self,
        *,
        model: str,
        dimensions: int,
        cache_entries: int,
        failure_cooldown_s: float = FAILURE_COOLDOWN_S,
    ) -> None:
        self.model = model
        self.dimensions = dimensions
        self._cache = VectorCache(model, dimensions, cache_entries)
        self._latency = LatencyWindow()
        self._requests = 0
        self._texts_embedded = 0
        self._errors = 0
        self._coalesced = 0
        self._inflight: dict[str, asyncio.Task[dict[str, np.ndarray]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cooldown_s = failure_cooldown_s
        self._failures_in_row = 0
        self._open_until: float | None = None  # None: the backend is taken to be healthy
        self._probing = False
        self._refused = 0

    async def _compute(self, texts: list[str]) -> list[np.ndarray]:
        raise NotImplementedError

    async def embed(self, text: str) -> np.ndarray:
        return (await self.embed_batch([text]))[0]

    async def embed_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        # Lone surrogates (from broken clients) can be neither hashed nor sent as JSON.
        texts = [t.encode("utf-8", errors="replace").decode("utf-8") for t in texts]
        keys = [self._cache.key(text) for text in texts]
        found: dict[str, np.ndarray] = {}
        missing: dict[str, str] = {}
        pending: set[asyncio.Task[dict[str, np.ndarray]]] = set()
        for key, text in zip(keys, texts, strict=True):
            if key in found or key in missing:
                continue
            running = self._inflight.get(key)
            if running is not None:  # the same text is being embedded for another caller
                self._coalesced += 1
                pending.add(running)
                continue
            vector = self._cache.get(key)
            if vector is None:
                missing[key] = text
            else:
                found[key] = vector
        if missing:
            if self._refuse_now():
                self._refused += 1
                raise EmbeddingError(
                    "the embedding backend has been failing; not asking it again yet",
                    suggestion="retrieval uses full-text search until it answers again",
                )
            task = asyncio.create_task(self._compute_and_store(missing))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
            for key in missing:
                self._inflight[key] = task
            pending.add(task)
        for task in pending:
            # Shielded: a caller that gives up (a RAG time budget) leaves the work running, so
            # its vector still lands in the cache for the next caller.
            vectors = await asyncio.shield(task)
            found.update((key, vectors[key]) for key in keys if key in vectors)
        return [found[key] for key in keys]

    def _refuse_now(self) -> bool:
        """Whether to fail at once: the backend is failing and its cool-down is not over, or
        another call is already finding out whether it is back."""
        if self._open_until is None:
            return False
        if time.monotonic() < self._open_until or self._probing:
            return True
        self._probing = True
        return False

    def _failed(self, exc: EmbeddingError) -> None:
        self._errors += 1
        if not exc.retryable:
            return  # a setting is wrong: every call fails fast anyway, nothing to wait out
        self._failures_in_row += 1
        if self._failures_in_row >= FAILURES_TO_OPEN:
            if self._open_until is None:
                logger.warning(
                    "embedding backend failing; new texts get keyword-only retrieval for %.0f s",
                    self._cooldown_s,
                )
            self._open_until = time.monotonic() + self._cooldown_s

    def _succeeded(self) -> None:
        if self._open_until is not None:
            logger.info("embedding backend answers again")
        self._failures_in_row = 0
        self._open_until = None

    async def _compute_and_store(self, missing: dict[str, str]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        try:
            vectors = await self._compute(list(missing.values()))
        except EmbeddingError as exc:
            self._failed(exc)
            raise
        finally:
            self._probing = False
            for key in missing:
                self._inflight.pop(key, None)
        self._succeeded()
        self._latency.add((time.perf_counter() - started) * 1000)
        self._texts_embedded += len(missing)
        return {
            key: self._cache.put(key, vector)
            for key, vector in zip(missing, vectors, strict=True)
        }

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here so an abandoned failure is not logged as lost

    def _base_stats(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "dimensions": self.dimensions,
            "requests": self._requests,
            "texts_embedded": self._texts_embedded,
            "cache_hits": self._cache.hits,
            "cache_misses": self._cache.misses,
            "cache_entries": len(self._cache),
            "coalesced": self._coalesced,
            "errors": self._errors,
            "refused_while_failing": self._refused,
            "failing": self._open_until is not None,
            "latency_ms": self._latency.summary(),
        }

    def stats(self) -> dict[str, Any]:
        return self._base_stats()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def check_dimension(pool: ConnectionPool, embedder: Embedder) -> None:
    """Fail fast when the embedder's vectors cannot be stored in memories.embedding."""
    column = await pool.fetchval(
        "select a.atttypmod from pg_attribute a "
        "where a.attrelid = to_regclass('public.memories') and a.attname = 'embedding' "
        "and not a.attisdropped"
    )
    if column is None:
        raise MigrationError(
            "table public.memories has no embedding column",
            suggestion="run `python manage.py migrate` to apply supabase/migrations",
        )
    # pgvector keeps a vector(n) column's size in atttypmod; -1 means no fixed size.
    if column != -1 and column != embedder.dimensions:
        raise EmbeddingDimensionMismatch(
            f"EMBEDDING_DIMENSIONS is {embedder.dimensions} ({embedder.name}) but the "
            f"memories.embedding column is vector({column})",
            suggestion=f"set EMBEDDING_DIMENSIONS={column} with a model that gives {column} "
            "dimensions, or add a migration that changes the column and re-embeds the memories",
        )
