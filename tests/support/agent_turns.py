"""What an agent test reads back from a session's turns: the memory note of each LLM call and
the tools' outputs."""

from __future__ import annotations

from typing import Any

from livekit.agents import llm

from livekit_layer.chat_context import MEMORY_ITEM_PREFIX
from tests.support.scripted_llm import ScriptedLLM


def memory_notes(model: ScriptedLLM) -> list[str]:
    """The memory note of each LLM call ('' when a call had none)."""
    notes = []
    for ctx in model.calls:
        found = [
            item.text_content or "" for item in ctx.items
            if isinstance(item, llm.ChatMessage) and item.id.startswith(MEMORY_ITEM_PREFIX)
        ]
        notes.append(found[0] if found else "")
    return notes


def tool_outputs(result: Any) -> list[Any]:
    """The function-call outputs among a run result's events, in order."""
    return [e.item for e in result.events if e.type == "function_call_output"]
