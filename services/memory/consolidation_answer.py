"""What the consolidation LLM is shown (a session's messages, the keys in use) and how its
answer is read: items sourced to at least one of the person's own messages, nothing else."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from core.errors import LLMUnavailable
from core.memory_records import Memory


def transcript(refs: dict[str, asyncpg.Record]) -> str:
    """The messages as "[m1] user (2026-11-21 12:01): ..." lines; the model cites the refs."""
    return "\n".join(
        f"[{ref}] {row['role']} ({row['created_at'].strftime('%Y-%m-%d %H:%M')}): "
        f"{row['content']}"
        for ref, row in refs.items()
    )


def known_keys_text(known: list[Memory]) -> str:
    """The current memories as "- CATEGORY/key: value" lines, so the model reuses their keys."""
    return "\n".join(
        f"- {m.category}/{m.key}: {m.value}" for m in known if m.key is not None
    ) or "- none"


def answer_items(content: str) -> list[Any]:
    """The items of the model's answer ({"memories": [...]}, or a bare list).

    Raises:
        LLMUnavailable: the answer is not JSON, or has no list of memories.
    """
    try:
        data = json.loads(_strip_fences(content))
    except ValueError as exc:
        raise LLMUnavailable(
            f"consolidation LLM call failed ({type(exc).__name__})",
        ) from exc
    items = data.get("memories") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise LLMUnavailable(
            "consolidation LLM answered without a 'memories' list",
            suggestion="use a model that supports response_format json_object",
        )
    return items

def parse_item(
    item: Any, refs: dict[str, asyncpg.Record]
) -> tuple[str, str, str, float | None, list[asyncpg.Record]] | None:
    """A valid item sourced to at least one of the person's own messages, or None."""
    if not isinstance(item, dict):
        return None
    category, key, value = item.get("category"), item.get("key"), item.get("value")
    if not all(isinstance(v, str) and v.strip() for v in (category, key, value)):
        return None
    raw_refs = item.get("source_message_ids") or []
    if not isinstance(raw_refs, list):
        return None
    # The companion's own words are never facts about the person: only user turns count.
    sources = [
        refs[ref] for ref in dict.fromkeys(str(r) for r in raw_refs)
        if ref in refs and refs[ref]["role"] == "user"
    ]
    if not sources:
        return None
    importance = item.get("importance")
    if not isinstance(importance, int | float) or isinstance(importance, bool):
        importance = None
    else:
        importance = min(1.0, max(0.0, float(importance)))
    return str(category), str(key), str(value), importance, sources


def _strip_fences(text: str) -> str:
    """Some OpenAI-compatible servers wrap JSON in a Markdown code fence despite json_object."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


