"""What the OpenAI stub server says back, as plain functions: deterministic embeddings, the
default chat reply, token counts for usage."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

_WORD = re.compile(r"[a-z0-9']+")


def hashed_bag_of_words(text: str, dimensions: int) -> list[float]:
    """Deterministic unit vector: each lower-cased word adds +-1 at a hashed index.

    Texts sharing words get a positive cosine similarity; unrelated texts are near orthogonal.
    """
    vec = np.zeros(dimensions, dtype=np.float64)
    tokens = _WORD.findall(text.lower()) or [text]
    for token in tokens:
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        index = int.from_bytes(digest[:8], "little") % dimensions
        vec[index] += 1.0 if digest[8] & 1 else -1.0
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:  # every token cancelled out at one index; any fixed unit vector will do
        vec[0], norm = 1.0, 1.0
    return (vec / norm).tolist()


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def echo_last_user_message(body: dict[str, Any]) -> str:
    """Default chat responder: the text of the last user message, unchanged."""
    return _last_user_text(body)


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))
