"""When the companion speaks unprompted, what it says, and why (the why goes to the log).

It greets first on join; raises stored follow-ups ("the interview on Friday") in the first
session after their date; and after a silence it offers a nudge fitted to mood, needs and what
is open, bounded per session, never repeated word for word, never while a tool runs or the
user is speaking.

This module is the service that does the I/O (the follow_ups table, the personality snapshot).
The pure decisions live in `services.persona.proactive_decisions` and the per-session timer in
`services.persona.silence_watcher`; their public names are re-exported here for existing importers.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import Any

from core.config import Settings
from core.dates import utc_now
from core.errors import InvalidInput
from core.validators import clean_text
from infrastructure.connection_pool import ConnectionPool
from services.people.companion_service import Companion
from services.persona.personality_service import PersonalityService
from services.persona.proactive_decisions import (
    FOLLOW_UP_COLUMNS,
    TONE,
    FollowUp,
    Nudge,
    NudgeLedger,
    Opening,
    compose_nudge,
    nudge_candidates,
    proactive_score,
)
from services.persona.silence_watcher import (
    ENGAGEMENT_FULL_TURNS,
    ENGAGEMENT_WINDOW_S,
    NUDGE_BACKOFF,
    DecideFn,
    SilencePolicy,
    SilenceWatcher,
)

__all__ = [
    "CONTACT_REFERENCE_S",
    "ENGAGEMENT_FULL_TURNS",
    "ENGAGEMENT_WINDOW_S",
    "FOLLOW_UPS_IN_GREETING",
    "MAX_DETAIL_CHARS",
    "MAX_TOPIC_CHARS",
    "NUDGE_BACKOFF",
    "DecideFn",
    "FollowUp",
    "Nudge",
    "NudgeLedger",
    "Opening",
    "ProactiveService",
    "SilencePolicy",
    "SilenceWatcher",
    "compose_nudge",
    "due_from_day",
    "nudge_candidates",
    "proactive_score",
]

logger = logging.getLogger(__name__)

MAX_TOPIC_CHARS = 200
MAX_DETAIL_CHARS = 500
FOLLOW_UPS_IN_GREETING = 2
# Reference durations of "time since contact": a silence in a session, a gap between sessions.
CONTACT_REFERENCE_S = 86_400.0


def due_from_day(day: date, tz: tzinfo) -> datetime:
    """A follow-up about something on `day` is due from the start of the next day in `tz`."""
    return datetime.combine(day + timedelta(days=1), dtime.min, tzinfo=tz)


class ProactiveService:
    """Follow-ups, the opening of a session, and silence nudges.

    Args:
        pool: the shared connection pool (follow_ups table).
        personality: gives mood and needs for the nudges' content and score.
        settings: `proactive_threshold`, `silence_nudge_after_s`, `max_nudges_per_session`.
        clock: returns "now" (aware); tests pass a controllable one.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        personality: PersonalityService,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._personality = personality
        self._settings = settings
        self._clock = clock

    # Follow-ups.

    async def add_follow_up(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        topic: str,
        *,
        detail: str = "",
        due: datetime | date | None = None,
        tz: tzinfo | None = None,
        session_id: uuid.UUID | None = None,
    ) -> FollowUp:
        """Store something to ask about later.

        Args:
            topic: what to ask about, as it reads in "ask how <topic> went".
            due: a moment, or a day (then due from the next day in `tz`, UTC by default);
                None: due in the next session.
        """
        topic = clean_text(topic, field="topic", max_chars=MAX_TOPIC_CHARS)
        if not topic:
            raise InvalidInput("a follow-up needs a topic", suggestion="say what to ask about")
        detail = clean_text(detail, field="detail", max_chars=MAX_DETAIL_CHARS)
        due_at: datetime | None
        if isinstance(due, datetime):
            if due.tzinfo is None:
                raise InvalidInput("due must carry a timezone", suggestion="pass an aware datetime")
            due_at = due
        elif isinstance(due, date):
            due_at = due_from_day(due, tz or UTC)
        else:
            due_at = None
        row = await self._pool.fetchrow(
            f"insert into follow_ups (user_id, companion_id, session_id, topic, detail, due_at, "
            f"created_at) values ($1, $2, $3, $4, $5, $6, $7) returning {FOLLOW_UP_COLUMNS}",
            user_id, companion_id, session_id, topic, detail, due_at, self._clock(),
        )
        logger.info("follow-up stored (dated=%s)", due_at is not None)
        return FollowUp.from_row(row)

    async def due_follow_ups(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        session_started_at: datetime | None = None,
        limit: int = 10,
    ) -> list[FollowUp]:
        """Open follow-ups to raise now: dated ones whose date has come, undated ones made
        before this session began (`session_started_at`, default now). User-level ones
        (no companion) count for every companion."""
        now = self._clock()
        started = session_started_at or now
        rows = await self._pool.fetch(
            f"select {FOLLOW_UP_COLUMNS} from follow_ups where user_id = $1 "
            "and (companion_id = $2 or companion_id is null) and status = 'open' "
            "and ((due_at is not null and due_at <= $3) or (due_at is null and created_at < $4)) "
            "order by due_at nulls last, created_at limit $5",
            user_id, companion_id, now, started, limit,
        )
        return [FollowUp.from_row(r) for r in rows]

    async def mark_raised(self, user_id: uuid.UUID, follow_up_ids: Sequence[uuid.UUID]) -> int:
        """Mark follow-ups as raised so no later session raises them again."""
        if not follow_up_ids:
            return 0
        status = await self._pool.execute(
            "update follow_ups set status = 'raised', raised_at = $3 "
            "where user_id = $1 and id = any($2::uuid[]) and status = 'open'",
            user_id, list(follow_up_ids), self._clock(),
        )
        return int(status.split()[-1])

    async def close_follow_up(
        self, user_id: uuid.UUID, follow_up_id: uuid.UUID, *, status: str = "done"
    ) -> bool:
        """Mark a follow-up done (or dropped); False if it is not this user's."""
        if status not in ("done", "dropped"):
            raise InvalidInput("status must be done or dropped", suggestion="pass status='done'")
        result = await self._pool.execute(
            "update follow_ups set status = $3 where user_id = $1 and id = $2",
            user_id, follow_up_id, status,
        )
        return result.endswith(" 1")

    # Opening.

    async def opening(
        self,
        user_id: uuid.UUID,
        companion: Companion,
        *,
        last_seen_at: datetime | None,
        session_started_at: datetime | None = None,
        user_name: str | None = None,
        mark_raised: bool = True,
    ) -> Opening:
        """Instructions for the companion's first words: a greeting, a check-in after a long
        gap, and the follow-ups now due (marked raised unless `mark_raised` is False)."""
        now = self._clock()
        snapshot = await self._personality.snapshot(user_id, companion)
        due = await self.due_follow_ups(
            user_id, companion.id, session_started_at=session_started_at,
            limit=FOLLOW_UPS_IN_GREETING,
        )
        gap_s = (now - last_seen_at).total_seconds() if last_seen_at is not None else 0.0
        score = proactive_score(
            since_contact_s=gap_s, reference_s=CONTACT_REFERENCE_S,
            need_urgency=snapshot.needs.urgency("social"),
            extraversion=companion.traits.extraversion, engagement=0.5,
        )
        who = user_name or "the user"
        tone = TONE.get(snapshot.mood.emotion, "warm")
        if last_seen_at is None:
            parts = [f"Speak first: greet {who} and introduce yourself as {companion.name}, "
                     f"their {companion.character}, in one or two short sentences."]
            reason = "first meeting"
        else:
            parts = [f"Speak first: greet {who} warmly and briefly, as {companion.name} who "
                     "knows them."]
            reason = "returning user"
            days = int(gap_s // 86_400)
            if days >= 1 and score >= self._settings.proactive_threshold:
                parts.append(f"It has been {days} day{'s' if days > 1 else ''} since you last "
                             "talked; say you are glad they are back.")
                reason = "returning after a gap"
        if due:
            topics = "; ".join(f.topic + (f" ({f.detail})" if f.detail else "") for f in due)
            parts.append(f"Early on, ask how these went, one at a time: {topics}.")
            reason += " with follow-ups"
        parts.append(f"Tone: {tone}.")
        if due and mark_raised:
            await self.mark_raised(user_id, [f.id for f in due])
        logger.info("opening decided (reason=%s, follow_ups=%s, score=%.2f)",
                    reason, len(due), score)
        return Opening(" ".join(parts), reason, score, tuple(due))

    # Silence.

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
        threshold, nothing new to say); the reason is logged either way. Records nothing."""
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
        follow_ups = await self.due_follow_ups(
            user_id, companion.id, session_started_at=session_started_at
        )
        nudge = compose_nudge(
            nudge_candidates(snapshot, follow_ups), ledger,
            emotion=snapshot.mood.emotion, score=score,
        )
        if nudge is None:
            logger.info("no nudge (reason=nothing new to say, nudges=%s)", ledger.count)
        return nudge

    async def nudge_for_silence(
        self,
        user_id: uuid.UUID,
        companion: Companion,
        *,
        silence_s: float,
        ledger: NudgeLedger,
        engagement: float = 0.0,
        session_started_at: datetime | None = None,
    ) -> str | None:
        """Instructions for a nudge now, or None; records it in `ledger` (one per session)
        and marks a raised follow-up. Prefer `watcher()`, which also handles timing."""
        nudge = await self.plan_nudge(
            user_id, companion, silence_s=silence_s, engagement=engagement, ledger=ledger,
            session_started_at=session_started_at,
        )
        if nudge is None:
            return None
        ledger.record(nudge)
        await self.nudge_delivered(user_id, nudge)
        logger.info("nudge planned (reason=%s, score=%.2f)", nudge.reason, nudge.score)
        return nudge.instructions

    async def nudge_delivered(self, user_id: uuid.UUID, nudge: Nudge) -> None:
        if nudge.follow_up_id is not None:
            await self.mark_raised(user_id, [nudge.follow_up_id])

    def new_ledger(self) -> NudgeLedger:
        return NudgeLedger(max_nudges=self._settings.max_nudges_per_session)

    def watcher(
        self,
        user_id: uuid.UUID,
        companion: Companion,
        *,
        on_nudge: Callable[[str], Any],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> SilenceWatcher:
        """A `SilenceWatcher` for one session of this user and companion."""
        started = self._clock()

        async def decide(silence_s: float, engagement: float, ledger: NudgeLedger) -> Nudge | None:
            return await self.plan_nudge(
                user_id, companion, silence_s=silence_s, engagement=engagement, ledger=ledger,
                session_started_at=started,
            )

        async def delivered(nudge: Nudge) -> None:
            await self.nudge_delivered(user_id, nudge)

        return SilenceWatcher(
            decide=decide,
            on_nudge=on_nudge,
            on_delivered=delivered,
            after_s=self._settings.silence_nudge_after_s,
            max_nudges=self._settings.max_nudges_per_session,
            monotonic=monotonic,
        )
