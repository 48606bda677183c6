"""When the companion speaks unprompted after a silence, what it says, and why (the why goes
to the log).

After a silence it offers a nudge fitted to mood, needs and the follow-ups now due, bounded per
session, never repeated word for word, never while a tool runs or the user is speaking. (The
greeting, the companion's first unprompted words, is `services.people.greeting`.)

This module is the service that does the I/O (due follow-ups, the personality snapshot). The
pure decisions live in `services.persona.proactive_decisions` and the per-session timer in
`services.persona.silence_watcher`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.config import Settings
from core.dates import utc_now
from services.people.companion_service import Companion
from services.people.follow_up_service import FollowUpService
from services.persona.personality_service import PersonalityService
from services.persona.proactive_decisions import (
    Nudge,
    NudgeLedger,
    compose_nudge,
    nudge_candidates,
    proactive_score,
)
from services.persona.silence_watcher import SilenceWatcher

logger = logging.getLogger(__name__)


class ProactiveService:
    """Silence nudges: whether to speak up, and about what.

    Args:
        follow_ups: the follow-ups due, and the mark of the ones a nudge raised.
        personality: gives mood and needs for the nudges' content and score.
        settings: `proactive_threshold`, `silence_nudge_after_s`, `max_nudges_per_session`.
        clock: returns "now" (aware); tests pass a controllable one.
    """

    def __init__(
        self,
        *,
        follow_ups: FollowUpService,
        personality: PersonalityService,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._follow_ups = follow_ups
        self._personality = personality
        self._settings = settings
        self._clock = clock

    async def plan_nudge(
        self,
        user_id: uuid.UUID,
        companion: Companion,
        *,
        silence_s: float,
        engagement: float,
        ledger: NudgeLedger,
        session_started_at: datetime | None = None,
    ) -> Nudge | None:
        """A nudge after `silence_s` of silence, or None (limit reached, score below the
        threshold, nothing new to say); the reason is logged either way. Records nothing.

        `session_started_at` (default now) decides which undated follow-ups are due."""
        if ledger.exhausted:
            logger.info("no nudge (reason=limit reached, nudges=%s)", ledger.count)
            return None
        snapshot = await self._personality.snapshot(user_id, companion)
        score = proactive_score(
            since_contact_s=silence_s, reference_s=self._settings.silence_nudge_after_s,
            need_urgency=snapshot.needs.urgency("social"),
            extraversion=companion.traits.extraversion, engagement=engagement,
        )
        if score < self._settings.proactive_threshold:
            logger.info("no nudge yet (reason=score below threshold, score=%.2f, threshold=%.2f)",
                        score, self._settings.proactive_threshold)
            return None
        follow_ups = await self._follow_ups.due(
            user_id, companion.id, session_started_at=session_started_at or self._clock()
        )
        nudge = compose_nudge(
            nudge_candidates(snapshot, follow_ups), ledger,
            emotion=snapshot.mood.emotion, score=score,
        )
        if nudge is None:
            logger.info("no nudge (reason=nothing new to say, nudges=%s)", ledger.count)
        return nudge

    def watcher(
        self,
        user_id: uuid.UUID,
        companion: Companion,
        *,
        on_nudge: Callable[[str], Any],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> SilenceWatcher:
        """A `SilenceWatcher` for one session of this user and companion, starting now."""
        started = self._clock()

        async def decide(silence_s: float, engagement: float, ledger: NudgeLedger) -> Nudge | None:
            return await self.plan_nudge(
                user_id, companion, silence_s=silence_s, engagement=engagement, ledger=ledger,
                session_started_at=started,
            )

        async def delivered(nudge: Nudge) -> None:
            if nudge.follow_up_id is not None:
                self._follow_ups.mark_raised(user_id, [nudge.follow_up_id])

        return SilenceWatcher(
            decide=decide,
            on_nudge=on_nudge,
            on_delivered=delivered,
            after_s=self._settings.silence_nudge_after_s,
            max_nudges=self._settings.max_nudges_per_session,
            monotonic=monotonic,
        )
