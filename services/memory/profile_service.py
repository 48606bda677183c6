"""The profile summary: a few LLM-written sentences about the person, always in the prompt.

Each companion keeps its own, rebuilt from its memories (and the person's shared ones) and its
recent session summaries after a session's consolidation (`after_session`), so the next
session's instructions start from it without any work on the way in. It is per companion
because it is written from that companion's memories: one companion's facts must not reach
another.

A consolidation marks the summary due (`sessions.profile_due_at`); a refresh the LLM wrote
clears the marks it read. Without the LLM the marks stay, and the summary is a plain list of
facts only when there is none yet (a list never replaces a written summary): the next session
start or maintenance pass writes it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.config import Settings
from core.deadline import Deadline, within
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
    """Builds and refreshes the profile summary (never on a turn's critical path).

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
        self._counters = {"refreshed_by_llm": 0, "refreshed_fallback": 0, "refresh_failures": 0}

    async def due(
        self,
        *,
        limit: int,
        user_id: uuid.UUID | None = None,
        companion_id: uuid.UUID | None = None,
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(person, companion) pairs whose summary a consolidation made due, and whose
        sessions are all consolidated (the summary is written from what consolidation saved).
        """
        rows = await self._pool.fetch(
            "select distinct s.user_id, s.companion_id from public.sessions s "
            "where s.profile_due_at is not null and s.companion_id is not null "
            "and ($2::uuid is null or s.user_id = $2) "
            "and ($3::uuid is null or s.companion_id = $3) "
            "and not exists (select 1 from public.sessions p "
            "  join public.messages m on m.session_id = p.id and m.user_id = p.user_id "
            "  where p.user_id = s.user_id and p.companion_id = s.companion_id "
            "  and m.role = 'user' "
            "  and m.created_at > coalesce(p.consolidated_through, '-infinity'::timestamptz)) "
            "limit $1",
            limit, user_id, companion_id,
        )
        return [(r["user_id"], r["companion_id"]) for r in rows]

    async def refresh_if_due(
        self, user_id: uuid.UUID, companion_id: uuid.UUID, *, deadline: Deadline | None = None
    ) -> bool:
        """Refresh when `due` names this pair; True when it is not due (any more)."""
        if not await self.due(limit=1, user_id=user_id, companion_id=companion_id):
            return True
        await self.refresh(user_id, companion_id, deadline=deadline)
        return not await self.due(limit=1, user_id=user_id, companion_id=companion_id)

    async def refresh(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        deadline: Deadline | None = None,
    ) -> UserProfile | None:
        """Rewrite this companion's profile summary from its memories and session summaries.

        Returns the person as this companion now knows them (None if the user does not exist).
        Without a companion there is nowhere to keep a summary: the profile comes back as is.
        With `deadline` (the end of a job), the LLM call ends by it; what it could not write
        stays due.
        """
        if companion_id is None:
            return await self._users.get(user_id)
        # Marks set from now on are for material this refresh may not have read.
        started: datetime = await self._pool.fetchval("select now()")
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
            await self._done(user_id, companion_id, started)
            return profile
        material = "\n".join(
            ["Known facts:", *(facts or ["- none"]), "Recent conversations:",
             *(sessions or ["- none"])]
        )
        summary = await self._write_summary(profile, material, deadline)
        if summary is None:
            if profile.profile_summary:
                # The written summary, a session behind, says more than a list: it stays, and
                # so does the mark, for a refresh with the LLM.
                return profile
            summary = _fallback_summary(memories)
            self._counters["refreshed_fallback"] += 1
            written_by_llm = False
        else:
            self._counters["refreshed_by_llm"] += 1
            written_by_llm = True
        if not summary:
            return profile
        stored = await self._users.set_companion_summary(user_id, companion_id, summary)
        if written_by_llm:
            await self._done(user_id, companion_id, started)
        return replace(profile, profile_summary=stored)

    async def _done(self, user_id: uuid.UUID, companion_id: uuid.UUID, started: datetime) -> None:
        await self._pool.execute(
            "update public.sessions set profile_due_at = null "
            "where user_id = $1 and companion_id = $2 and profile_due_at <= $3",
            user_id, companion_id, started,
        )

    async def _write_summary(
        self, profile: UserProfile, material: str, deadline: Deadline | None
    ) -> str | None:
        try:
            client = self._models.openai_until(deadline)
            async with within(deadline):
                response = await client.chat.completions.create(
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
            self._counters["refresh_failures"] += 1
            logger.warning("profile LLM unavailable; summary left due (%s)", type(exc).__name__)
            return None
        text = response.choices[0].message.content or ""
        return clean_text(
            text, field="profile summary", max_chars=MAX_PROFILE_SUMMARY_CHARS // 2, truncate=True
        ) or None

    def stats(self) -> dict[str, Any]:
        return dict(self._counters)


def _fallback_summary(memories: list[Any]) -> str:
    # Without an LLM the summary is the most important facts, in their own words.
    pieces = [m.content for m in memories[:6]]
    return "; ".join(pieces)[: MAX_PROFILE_SUMMARY_CHARS // 2]
