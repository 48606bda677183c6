"""What the loopback OpenAI server answers the companion's background LLM calls (session
summaries, profile refreshes, memory consolidation), recognised by their system prompts."""

from __future__ import annotations

from typing import Any

SUMMARY_MARK = "notes a caring friend keeps"
PROFILE_MARK = "You keep a short profile"


def system_prompt(body: dict[str, Any]) -> str:
    """The system (and developer) messages of a chat request, joined."""
    return "\n".join(
        m.get("content") or "" for m in body.get("messages") or []
        if m.get("role") in ("system", "developer") and isinstance(m.get("content"), str)
    )


def background_reply(body: dict[str, Any]) -> Any:
    """A chat step for a background call (summary, profile, consolidation), or None when the
    request is a conversational one."""
    system = system_prompt(body)
    if SUMMARY_MARK in system:
        return {"json": {"summary": "They talked.", "follow_ups": []}}
    if PROFILE_MARK in system:
        return "A person the companion is getting to know."
    if body.get("response_format"):
        return {"json": {"memories": []}}
    return None
