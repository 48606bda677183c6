"""Marker tokens for isolation checks, and a stub LLM brain that repeats them.

Every person gets a user-level token (`pu042`) and each of their companions a pair token
(`mk042a`, `mk042b`). Everything seeded or said for a pair carries its token, so any text the
companion produces or reads can be checked: the tokens it contains must all belong to the
person and the companion the text is for.

The background LLM calls (session summary, memory consolidation, profile summary) are answered
by `marker_brain`, which writes the tokens it was given back into its answer, as a real model
summarizing those turns would. A summary, memory or profile that mixed people up would then
carry a foreign token into the next session, where the checks see it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MARKER = re.compile(r"\b(?:mk\d{3,5}[ab]|pu\d{3,5})\b")
SUMMARY_MARK = "notes a caring friend keeps"
PROFILE_MARK = "You keep a short profile"
CONSOLIDATION_MARK = "into long-term memories about the person"
COMPANION_SUFFIXES = ("a", "b")
_USER_LINE = re.compile(r"^User: (.*)$", re.MULTILINE)
_REF_LINE = re.compile(r"^\[(m\d+)\] user \([^)]*\): (.*)$", re.MULTILINE)


def user_token(user_index: int) -> str:
    return f"pu{user_index:03d}"


def pair_token(user_index: int, companion_index: int) -> str:
    return f"mk{user_index:03d}{COMPANION_SUFFIXES[companion_index]}"


def markers_in(text: str | None) -> set[str]:
    return set(MARKER.findall(text or ""))


@dataclass(frozen=True)
class Scope:
    """What one person with one companion may see."""

    user_index: int
    companion_index: int

    @property
    def own(self) -> str:
        return pair_token(self.user_index, self.companion_index)

    @property
    def shared(self) -> str:
        return user_token(self.user_index)

    @property
    def sibling(self) -> str:
        return pair_token(self.user_index, 1 - self.companion_index)

    @property
    def pair_allowed(self) -> frozenset[str]:
        """Tokens an answer in a session with this companion may contain (memories, greeting,
        profile, tool results, stats): the pair's and the person's shared ones."""
        return frozenset({self.own, self.shared})

    @property
    def user_allowed(self) -> frozenset[str]:
        """Tokens an answer about the whole person (an export) may contain: both companions'."""
        return frozenset({self.own, self.shared, self.sibling})


@dataclass(frozen=True)
class Leak:
    """One foreign token found in an answer."""

    where: str
    scope: Scope
    token: str

    @property
    def kind(self) -> str:
        owner = re.sub(r"\D", "", self.token)
        if int(owner) != self.scope.user_index:
            return "cross_user"
        return "cross_companion"


def leaks(text: str | None, allowed: Iterable[str], *, where: str, scope: Scope) -> list[Leak]:
    allowed_set = set(allowed)
    return [Leak(where, scope, t) for t in sorted(markers_in(text) - allowed_set)]


def check_block(block: str | None, scope: Scope, *, where: str) -> list[Leak]:
    """A memory block, line by line: its profile line ("About them:") is the companion's own
    profile summary, so every line may carry only the pair's and the person's tokens."""
    found: list[Leak] = []
    for line in (block or "").splitlines():
        kind = f"{where}:profile_line" if line.startswith("About them:") else where
        found += leaks(line, scope.pair_allowed, where=kind, scope=scope)
    return found


def _system(body: dict[str, Any]) -> str:
    return "\n".join(
        m.get("content") or "" for m in body.get("messages") or []
        if m.get("role") in ("system", "developer") and isinstance(m.get("content"), str)
    )


def _last_user(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


def marker_brain(body: dict[str, Any]) -> Any:
    """Answers the background calls from what they were given; the tokens go back out."""
    system, given = _system(body), _last_user(body)
    if SUMMARY_MARK in system:
        said = _USER_LINE.findall(given)
        tokens = sorted(markers_in(" ".join(said)))
        follow_ups = [
            {"topic": f"ask about {tokens[0]}", "detail": "how it went", "due": None}
        ] if tokens else []
        return {"json": {"summary": "They told you: " + " / ".join(said)[:400],
                         "follow_ups": follow_ups}}
    if CONSOLIDATION_MARK in system or body.get("response_format"):
        memories = []
        for ref, text in _REF_LINE.findall(given):
            for token in sorted(markers_in(text)):
                memories.append({
                    "category": "FACT", "key": f"mentioned_{token}", "value": f"{token} came up",
                    "importance": 0.6, "source_message_ids": [ref],
                })
        return {"json": {"memories": memories}}
    if PROFILE_MARK in system:
        tokens = sorted(markers_in(given))
        return "Knows about: " + (", ".join(tokens) if tokens else "little yet") + "."
    if not body.get("stream"):
        return "Noted."
    return "Okay."


def dumps(obj: Any) -> str:
    """JSON of a tool result or stats dict, for scanning (UUIDs and dates as strings)."""
    return json.dumps(obj, default=str, ensure_ascii=False)
