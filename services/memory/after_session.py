"""What a session leaves for the memory layer, in order: its consolidation, then its
companion's profile summary, written from what the consolidation saved.

At the end of a session both run at once, within the job's deadline when it is the job's end
(every LLM call ends by it, without retries that could not). What does not finish is already
recorded in the session row: messages past `consolidated_through`, and `profile_due_at`.
It is finished later, never lost:

- when the person next starts a session with that companion (`catch_up`, in the background),
- or by the maintenance pass (`MemoryMaintenance`), whichever comes first.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from core.deadline import Deadline, within
from services.memory.consolidation_service import ConsolidationService
from services.memory.profile_service import ProfileService

logger = logging.getLogger(__name__)

# At a session start: at most this many earlier sessions are consolidated in the background
# (a person back after a long outage gets the rest from the maintenance pass).
CATCH_UP_SESSIONS = 5


class AfterSession:
    """Runs a session's consolidation and then its profile refresh; finds what earlier
    sessions left undone.

    Args:
        consolidation: distills sessions into memories.
        profiles: rewrites a companion's profile summary.
    """

    def __init__(
        self, *, consolidation: ConsolidationService, profiles: ProfileService
    ) -> None:
        self._consolidation = consolidation
        self._profiles = profiles
        self._counters = {"finished": 0, "left_for_later": 0, "caught_up": 0}

    async def finish(
        self,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        deadline: Deadline | None = None,
    ) -> bool:
        """Consolidate the ended session, then refresh the profile summary; True when both
        are done. Otherwise what is left is recorded for later (module docstring), and so is
        what `deadline` cuts short."""
        try:
            async with within(deadline):
                return await self._finish(session_id, user_id, companion_id, deadline)
        except TimeoutError as exc:
            return self._left("consolidation and profile (the deadline came)", exc)

    async def _finish(
        self,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        deadline: Deadline | None,
    ) -> bool:
        try:
            result = await self._consolidation.consolidate_session(
                session_id, final=True, deadline=deadline
            )
        except Exception as exc:
            return self._left("consolidation", exc)
        if result.busy:
            # Another process is consolidating it; the profile comes after, from there.
            self._counters["left_for_later"] += 1
            return False
        if companion_id is not None:
            try:
                refreshed = await self._profiles.refresh_if_due(
                    user_id, companion_id, deadline=deadline
                )
            except Exception as exc:
                return self._left("profile refresh", exc)
            if not refreshed:
                self._counters["left_for_later"] += 1
                logger.warning("profile refresh left for later (no summary from the LLM)")
                return False
        self._counters["finished"] += 1
        return True

    async def catch_up(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> None:
        """At a session start: finish what the person's earlier sessions with this companion
        left (consolidation first, then the profile summary). Failures are logged; the
        maintenance pass tries again."""
        try:
            result = await self._consolidation.consolidate_pending(
                limit=CATCH_UP_SESSIONS, user_id=user_id, companion_id=companion_id
            )
            profile_done = companion_id is None or await self._profiles.refresh_if_due(
                user_id, companion_id
            )
        except Exception as exc:
            logger.warning("catching up on earlier sessions failed (%s)", type(exc).__name__)
            return
        if result.messages:
            self._counters["caught_up"] += 1
        logger.info(
            "earlier sessions caught up (messages=%s, saved=%s, profile_done=%s)",
            result.messages, result.saved, profile_done,
        )

    def _left(self, what: str, exc: BaseException) -> bool:
        self._counters["left_for_later"] += 1
        logger.warning("%s left for later (%s)", what, type(exc).__name__)
        return False

    def stats(self) -> dict[str, Any]:
        return dict(self._counters)
