"""The profile summary: a few LLM-written sentences about the person, always in the prompt.

Each companion keeps its own, rebuilt from its memories (and the person's shared ones) and its
recent session summaries in the background after a session, so the next session's
instructions start from it without any work on the way in. It is per companion because it is
written from that companion's memories: one companion's facts must not reach another.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from core.config import Settings
from core.prompts import render
from core.validators import clean_text
from infrastructure.connection_pool import ConnectionPool
from infrastructure.model_clients import ModelClients
from services.people.user_service import (
    MAX_PROFILE_SUMMARY_CHARS,
    UserProfile,
    UserService,
)

if TYPE_CHECKING:
    from services.memory.memory_service import MemoryService

logger = logging.getLogger(__name__)

MAX_LINE_CHARS = 600
MEMORIES_FOR_SUMMARY = 40
SESSIONS_FOR_SUMMARY = 5


def profile_line(profile: UserProfile | None) -> str | None:
    """One compact line about the person for the instructions and the per-turn context."""
    if profile is None:
        return None
    parts: list[str] = []
    if profile.display_name:
        name = profile.display_name
        if profile.preferred_name and profile.preferred_name != profile.display_name:
            name += f" (likes to be called {profile.preferred_name})"
        parts.append(f"Name: {name}.")
    elif profile.preferred_name:
        parts.append(f"Call them {profile.preferred_name}.")
    if profile.interests:
        parts.append("Interests: " + ", ".join(profile.interests) + ".")
    if profile.timezone:
        parts.append(f"Time zone: {profile.timezone}.")
    if profile.profile_summary:
        parts.append(profile.profile_summary)
    if not parts:
        return None
    line = " ".join(parts)
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 3].rstrip() + "..."


class ProfileService:
    """Builds and refreshes the profile summary; the refresh runs off the critical path.

    Args:
        pool: the shared database pool.
        models: `models.openai` writes the summary.
        users: where the summary is stored (per companion: companions.profile_summary).
        memory: the person's current explicit memories.
        settings: LLM model.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        models: ModelClients,
        users: UserService,
        memory: MemoryService,
        settings: Settings,
    ) -> None:
        self._pool = pool
        self._models = models
        self._users = users
        self._memory = memory
        self._settings = settings
        self._tasks: dict[tuple[uuid.UUID, uuid.UUID], asyncio.Task[Any]] = {}
        self._counters = {"refreshed_by_llm": 0, "refreshed_fallback": 0, "refresh_failures": 0}

    async def refresh(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None
    ) -> UserProfile | None:
        """Rewrite this companion's profile summary from its memories and session summaries.

        Returns the person as this companion now knows them (None if the user does not exist).
        Without a companion there is nowhere to keep a summary: the profile comes back as is.
        """
        if companion_id is None:
            return await self._users.get(user_id)
        profile = await self._users.profile_for(user_id, companion_id)
        if profile is None:
            return None
        memories = await self._memory.current(user_id, companion_id, limit=MEMORIES_FOR_SUMMARY)
        rows = await self._pool.fetch(
            "select summary from public.sessions where user_id = $1 "
            "and companion_id is not distinct from $2 and summary is not null "
            "order by started_at desc limit $3",
            user_id, companion_id, SESSIONS_FOR_SUMMARY,
        )
        facts = [f"- {m.category}: {m.content}" for m in memories]
        sessions = [f"- {r['summary']}" for r in rows]
        if not facts and not sessions:
            return profile
        material = "\n".join(
            ["Known facts:", *(facts or ["- none"]), "Recent conversations:",
             *(sessions or ["- none"])]
        )
        summary = await self._write_summary(profile, material)
        if summary is None:
            summary = _fallback_summary(memories)
            self._counters["refreshed_fallback"] += 1
        else:
            self._counters["refreshed_by_llm"] += 1
        if not summary:
            return profile
        stored = await self._users.set_companion_summary(user_id, companion_id, summary)
        return replace(profile, profile_summary=stored)

    async def _write_summary(self, profile: UserProfile, material: str) -> str | None:
        try:
            response = await self._models.openai.chat.completions.create(
                model=self._settings.llm_model,
                messages=[
                    {"role": "system", "content": render(
                        "profile_summary",
                        name=profile.address_as or "the user",
                        previous=profile.profile_summary or "none",
                        max_chars=MAX_PROFILE_SUMMARY_CHARS // 2,
                    )},
                    {"role": "user", "content": material},
                ],
                temperature=0.2,
            )
        except Exception as exc:
            logger.warning("profile LLM unavailable, using a plain list (%s)", type(exc).__name__)
            return None
        text = response.choices[0].message.content or ""
        return clean_text(
            text, field="profile summary", max_chars=MAX_PROFILE_SUMMARY_CHARS // 2, truncate=True
        ) or None

    def schedule_refresh(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> None:
        """Refresh in the background; one already running for this companion is enough."""
        if companion_id is None:
            return
        key = (user_id, companion_id)
        running = self._tasks.get(key)
        if running is not None and not running.done():
            return
        task = asyncio.ensure_future(self._refresh_quietly(user_id, companion_id))
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._forget_task(key, t))

    def _forget_task(self, key: tuple[uuid.UUID, uuid.UUID], task: asyncio.Task[Any]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    async def _refresh_quietly(self, user_id: uuid.UUID, companion_id: uuid.UUID) -> None:
        try:
            await self.refresh(user_id, companion_id)
        except Exception as exc:
            self._counters["refresh_failures"] += 1
            logger.warning("profile refresh failed (%s)", type(exc).__name__)

    def stats(self) -> dict[str, Any]:
        return {**self._counters, "pending_tasks": len(self._tasks)}

    async def drain(self) -> None:
        while self._tasks:
            pending: list[Awaitable[Any]] = list(self._tasks.values())
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()


def _fallback_summary(memories: list[Any]) -> str:
    # Without an LLM the summary is the most important facts, in their own words.
    pieces = [m.content for m in memories[:6]]
    return "; ".join(pieces)[: MAX_PROFILE_SUMMARY_CHARS // 2]
