"""When the companion speaks unprompted, what it says, and why (the why goes to the log).

It greets first on join; raises stored follow-ups ("the interview on Friday") in the first
session after their date; and after a silence it offers a nudge fitted to mood, needs and what
is open, bounded per session, never repeated word for word, never while a tool runs or the
user is speaking.

Pure decisions (`proactive_score`, `SilencePolicy`, `NudgeLedger`, `nudge_candidates`) take
times and states as arguments; `SilenceWatcher` adds the timer and is driven by the agent:

    watcher = proactive.watcher(user_id, companion, on_nudge=lambda text:
                                session.generate_reply(instructions=text))
    session.on("user_state_changed", lambda ev: watcher.user_state(ev.new_state))
    session.on("agent_state_changed", lambda ev: watcher.agent_state(ev.new_state))
    with watcher.tool_running(): ...          # inside each function tool
    watcher.user_turn()                       # in on_user_turn_completed
    ctx.add_shutdown_callback(watcher.aclose)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import Any

from core.config import Settings
from core.dates import utc_now
from core.errors import InvalidInput
from core.validators import clean_text
from infrastructure.connection_pool import ConnectionPool
from services.companion_service import Companion
from services.personality_service import PersonalityService, PersonalitySnapshot

logger = logging.getLogger(__name__)

MAX_TOPIC_CHARS = 200
MAX_DETAIL_CHARS = 500
FOLLOW_UPS_IN_GREETING = 2
# Reference durations of "time since contact": a silence in a session, a gap between sessions.
CONTACT_REFERENCE_S = 86_400.0
ENGAGEMENT_WINDOW_S = 300.0
ENGAGEMENT_FULL_TURNS = 4
NUDGE_BACKOFF = 2.0
# Agent states in which the companion is producing something; silence does not run then.
_AGENT_BUSY = frozenset({"initializing", "thinking", "speaking"})
_FOLLOW_UP_COLUMNS = (
    "id, user_id, companion_id, session_id, topic, detail, due_at, status, raised_at, created_at"
)
_TONE = {
    "excited": "upbeat and lively", "happy": "cheerful", "content": "warm and easy",
    "calm": "gentle and calm", "sad": "soft and gentle", "anxious": "reassuring",
    "fearful": "reassuring", "angry": "patient and even", "bored": "light and playful",
    "neutral": "warm",
}
_NEED_ACTIONS = {
    "social": "Ask warmly how they are doing, or what is on their mind today.",
    "intellectual": "Share a small curious thought or ask their view on something they care "
                    "about.",
    "creative": "Suggest a small playful or imaginative idea you could explore together.",
    "rest": "Say softly that you are happy just to be here, with no need to talk.",
}
_CARE_EMOTIONS = frozenset({"sad", "anxious", "fearful", "angry"})


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FollowUp:
    """Something to ask about next time, such as "the interview on Friday".

    Attributes:
        due_at: from when to raise it; None means in the next session.
        status: 'open', 'raised', 'done' or 'dropped'.
        companion_id: None for a follow-up any of the user's companions may raise.
    """

    id: uuid.UUID
    user_id: uuid.UUID
    companion_id: uuid.UUID | None
    session_id: uuid.UUID | None
    topic: str
    detail: str
    due_at: datetime | None
    status: str
    raised_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> FollowUp:
        return cls(**{k: row[k] for k in _FOLLOW_UP_COLUMNS.split(", ")})


@dataclass(frozen=True)
class Nudge:
    """A decision to speak unprompted: the instructions for the LLM and the reason for it."""

    instructions: str
    topic: str
    reason: str
    score: float
    follow_up_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Opening:
    """How the companion opens a session (it always speaks first)."""

    instructions: str
    reason: str
    score: float
    follow_ups: tuple[FollowUp, ...] = ()


@dataclass(frozen=True)
class _Candidate:
    topic: str
    action: str
    reason: str
    follow_up_id: uuid.UUID | None = None


# --- pure decisions --------------------------------------------------------------------------


def proactive_score(
    *,
    since_contact_s: float,
    reference_s: float,
    need_urgency: float,
    extraversion: float,
    engagement: float,
) -> float:
    """How much the companion wants to speak up, in [0, 1].

    Time since contact saturates (1 - e^(-t/reference)); the social need's urgency, the
    companion's extraversion and the user's recent engagement (0..1) add to it.
    """

    def unit(x: float) -> float:
        return 0.0 if math.isnan(x) else min(1.0, max(0.0, x))

    recency = 1.0 - math.exp(-max(0.0, since_contact_s) / reference_s) if reference_s > 0 else 1.0
    score = (
        0.4 * unit(recency) + 0.25 * unit(need_urgency) + 0.2 * unit(extraversion)
        + 0.15 * unit(engagement)
    )
    return unit(score)


@dataclass
class NudgeLedger:
    """What one session has nudged: how many, about what, and the exact texts used."""

    max_nudges: int
    count: int = 0
    topics: set[str] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)

    @property
    def exhausted(self) -> bool:
        return self.count >= self.max_nudges

    def record(self, nudge: Nudge) -> None:
        self.count += 1
        self.topics.add(nudge.topic)
        self.texts.add(nudge.instructions)


def nudge_candidates(
    snapshot: PersonalitySnapshot, follow_ups: Sequence[FollowUp]
) -> list[_Candidate]:
    """What a nudge could be about, best first: due follow-ups, pressing needs, care, check-ins."""
    found = [
        _Candidate(
            f"follow_up:{f.id}",
            f"Ask how {f.topic} went" + (f" ({f.detail})." if f.detail else "."),
            "a follow-up is due",
            f.id,
        )
        for f in follow_ups
    ]
    needs = snapshot.needs
    wanting = sorted(
        (n for n in ("social", "intellectual", "creative") if needs.urgency(n) >= 0.5),
        key=lambda n: -needs.urgency(n),
    )
    found += [_Candidate(f"need:{n}", _NEED_ACTIONS[n], f"{n} need is high") for n in wanting]
    if needs.urgency("rest") >= 0.6:
        found.append(_Candidate("need:rest", _NEED_ACTIONS["rest"], "the companion is tired"))
    if snapshot.mood.emotion in _CARE_EMOTIONS:
        found.append(_Candidate(
            "mood:care", "Check in softly on how they are feeling, with no pressure to talk.",
            "the mood calls for care",
        ))
    found.append(_Candidate(
        "check_in", "Lightly check whether they are still there and want to keep talking.",
        "a plain check-in",
    ))
    found.append(_Candidate(
        "open_door", "Say you are here whenever they want to talk, and let them take their time.",
        "leaving the door open",
    ))
    return found


def compose_nudge(
    candidates: Sequence[_Candidate], ledger: NudgeLedger, *, emotion: str, score: float
) -> Nudge | None:
    """The first candidate this session has not used yet, as instructions; None if none left."""
    tone = _TONE.get(emotion, "warm")
    for candidate in candidates:
        if candidate.topic in ledger.topics:
            continue
        earlier = (
            " Say something new: do not repeat your earlier check-ins." if ledger.count else ""
        )
        text = (
            f"The user has gone quiet. {candidate.action} Tone: {tone}. One short sentence in "
            f"your own words; do not mention the silence.{earlier}"
        )
        if text in ledger.texts:
            continue
        return Nudge(text, candidate.topic, candidate.reason, score, candidate.follow_up_id)
    return None


class SilencePolicy:
    """When a nudge may be considered, from user/agent/tool states and a monotonic `now`.

    Silence runs only while the user is not speaking, the agent is idle or listening and no
    tool runs. The first nudge may come `after_s` into a silence; each further one without a
    user turn in between waits `NUDGE_BACKOFF` times longer.
    """

    def __init__(self, *, after_s: float, backoff: float = NUDGE_BACKOFF) -> None:
        self.after_s = after_s
        self.backoff = backoff
        self.user_speaking = False
        self.agent_busy = True  # the session starts with the agent initializing
        self.tools_running = 0
        self.quiet_since: float | None = None
        self.unanswered = 0
        self.deferred_until: float | None = None

    @property
    def quiet(self) -> bool:
        return not self.user_speaking and not self.agent_busy and self.tools_running == 0

    def user_state(self, state: str, now: float) -> None:
        self.user_speaking = state == "speaking"
        if self.user_speaking:
            self.unanswered = 0
        self._update(now)

    def agent_state(self, state: str, now: float) -> None:
        self.agent_busy = state in _AGENT_BUSY
        self._update(now)

    def tool_started(self, now: float) -> None:
        self.tools_running += 1
        self._update(now)

    def tool_finished(self, now: float) -> None:
        self.tools_running = max(0, self.tools_running - 1)
        self._update(now)

    def silence_s(self, now: float) -> float:
        return 0.0 if self.quiet_since is None else max(0.0, now - self.quiet_since)

    def threshold_s(self) -> float:
        return self.after_s * self.backoff ** self.unanswered

    def next_check_at(self) -> float | None:
        """When to look again, or None while someone is speaking or working."""
        if self.quiet_since is None:
            return None
        at = self.quiet_since + self.threshold_s()
        return max(at, self.deferred_until) if self.deferred_until is not None else at

    def due(self, now: float) -> bool:
        at = self.next_check_at()
        return at is not None and now >= at

    def defer(self, now: float, seconds: float) -> None:
        """Not now (score too low): look again `seconds` later if the silence lasts."""
        self.deferred_until = now + seconds

    def nudged(self, now: float) -> None:
        self.unanswered += 1
        self.deferred_until = None
        # The next silence is measured from the nudge, even before the agent starts speaking.
        self.quiet_since = now if self.quiet else None

    def _update(self, now: float) -> None:
        if not self.quiet:
            self.quiet_since = None
            self.deferred_until = None
        elif self.quiet_since is None:
            self.quiet_since = now


# --- the timer -------------------------------------------------------------------------------

DecideFn = Callable[[float, float, NudgeLedger], Awaitable[Nudge | None]]


class SilenceWatcher:
    """One per session: fed with state changes, calls `on_nudge(instructions)` after silence.

    Args:
        decide: async (silence_s, engagement, ledger) -> Nudge | None; None defers.
        on_nudge: called with the instructions; may return an awaitable (awaited, errors
            logged).
        after_s: silence before the first nudge.
        max_nudges: nudges allowed in this session.
        on_delivered: async callback after a nudge was handed to `on_nudge` (marks follow-ups).
        monotonic: the clock for durations; tests may pass their own.
    """

    def __init__(
        self,
        *,
        decide: DecideFn,
        on_nudge: Callable[[str], Any],
        after_s: float,
        max_nudges: int,
        on_delivered: Callable[[Nudge], Awaitable[None]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = SilencePolicy(after_s=after_s)
        self.ledger = NudgeLedger(max_nudges=max_nudges)
        self._decide = decide
        self._on_nudge = on_nudge
        self._on_delivered = on_delivered
        self._now = monotonic
        self._recheck_s = max(after_s / 2, 0.01)
        self._turns: deque[float] = deque(maxlen=64)
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._epoch = 0
        self._closed = False
        self._deferrals = 0
        self._errors = 0

    # Inputs from the agent.

    def user_state(self, state: str) -> None:
        self._change(lambda now: self.policy.user_state(state, now))

    def agent_state(self, state: str) -> None:
        self._change(lambda now: self.policy.agent_state(state, now))

    def tool_started(self) -> None:
        self._change(self.policy.tool_started)

    def tool_finished(self) -> None:
        self._change(self.policy.tool_finished)

    @contextlib.contextmanager
    def tool_running(self) -> Iterator[None]:
        self.tool_started()
        try:
            yield
        finally:
            self.tool_finished()

    def user_turn(self) -> None:
        """A completed user turn; feeds "recent engagement"."""
        self._turns.append(self._now())

    def engagement(self) -> float:
        cutoff = self._now() - ENGAGEMENT_WINDOW_S
        recent = sum(1 for t in self._turns if t >= cutoff)
        return min(1.0, recent / ENGAGEMENT_FULL_TURNS)

    @property
    def nudges(self) -> int:
        return self.ledger.count

    def stats(self) -> dict[str, Any]:
        return {
            "nudges": self.ledger.count,
            "max_nudges": self.ledger.max_nudges,
            "deferrals": self._deferrals,
            "errors": self._errors,
            "quiet": self.policy.quiet,
        }

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._timer, *self._tasks) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # Internals.

    def _change(self, apply: Callable[[float], None]) -> None:
        apply(self._now())
        self._epoch += 1
        self._reschedule()

    def _reschedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Fed before the session's loop runs: the state is kept, timing starts later.
            return
        # The firing task reschedules itself at its end; it must not cancel itself.
        current = asyncio.current_task()
        if self._timer is not None and self._timer is not current and not self._timer.done():
            self._timer.cancel()
        self._timer = None
        if self._closed or self.ledger.exhausted:
            return
        at = self.policy.next_check_at()
        if at is None:
            return
        delay = max(0.0, at - self._now())
        self._timer = loop.create_task(
            self._wait_and_fire(delay, self._epoch), name="silence-watcher"
        )

    async def _wait_and_fire(self, delay: float, epoch: int) -> None:
        await asyncio.sleep(delay)
        now = self._now()
        if epoch != self._epoch or not self.policy.due(now) or self.ledger.exhausted:
            return
        try:
            nudge = await self._decide(self.policy.silence_s(now), self.engagement(), self.ledger)
        except Exception as exc:
            self._errors += 1
            logger.warning("nudge decision failed (%s); will look again", type(exc).__name__)
            nudge = None
        # Someone spoke or a tool started while we decided: that silence is over.
        if epoch != self._epoch or not self.policy.quiet:
            return
        now = self._now()
        if nudge is None:
            self._deferrals += 1
            self.policy.defer(now, self._recheck_s)
            self._reschedule()
            return
        self.ledger.record(nudge)
        self.policy.nudged(now)
        logger.info(
            "nudging the user (reason=%s, topic=%s, score=%.2f, nudge=%s/%s)",
            nudge.reason, nudge.topic.split(":")[0], nudge.score, self.ledger.count,
            self.ledger.max_nudges,
        )
        self._track(self._deliver(nudge))
        self._reschedule()

    async def _deliver(self, nudge: Nudge) -> None:
        try:
            result = self._on_nudge(nudge.instructions)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._errors += 1
            logger.warning("delivering a nudge failed (%s)", type(exc).__name__)
            return
        if self._on_delivered is not None:
            try:
                await self._on_delivered(nudge)
            except Exception as exc:
                self._errors += 1
                logger.warning("recording a delivered nudge failed (%s)", type(exc).__name__)

    def _track(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# --- the service -----------------------------------------------------------------------------


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
            f"created_at) values ($1, $2, $3, $4, $5, $6, $7) returning {_FOLLOW_UP_COLUMNS}",
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
            f"select {_FOLLOW_UP_COLUMNS} from follow_ups where user_id = $1 "
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
        tone = _TONE.get(snapshot.mood.emotion, "warm")
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
