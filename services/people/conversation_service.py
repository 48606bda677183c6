"""Conversations: sessions and their messages, the greeting's context, summaries, follow-ups.

The greeting needs the person's name, when they last talked, what about, and what to ask
again; all of it comes from one query (laterals and subselects) and is cached. Messages go
through the batcher, never on the turn's critical path. At the end the session is summarized
by the LLM in a background task and its follow-ups ("how did the interview go?") stored.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from core.config import Settings
from core.dates import parse_date, timezone_named, utc_now
from core.errors import InvalidInput
from core.prompts import render
from core.tasks import BackgroundTasks
from core.validators import MAX_UTTERANCE_CHARS, clean_text
from infrastructure.cache import Cache
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.model_clients import ModelClients
from services.persona.proactive_service import due_from_day

logger = logging.getLogger(__name__)

MESSAGE_OP = "conversation.message"
ACTIVITY_OP = "conversation.activity"
FOLLOW_UP_RAISED_OP = "conversation.follow_up_raised"
ROLES = ("user", "assistant", "system", "tool")
RESUME_TURNS = 20
MAX_FOLLOW_UPS = 3
MAX_SUMMARY_CHARS = 600
# The summarizer sees at most this much of the transcript (the end of it).
MAX_TRANSCRIPT_CHARS = 12_000
SHUTDOWN_SUMMARY_TIMEOUT_S = 4.0

_MESSAGE_SQL = (
    "insert into public.messages (id, session_id, user_id, companion_id, role, content, modality,"
    " created_at) values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (id) do nothing"
)
_ACTIVITY_SQL = (
    "update public.sessions set last_activity_at = greatest(last_activity_at, $2) where id = $1"
)
_FOLLOW_UP_RAISED_SQL = (
    "update public.follow_ups set status = 'raised', raised_at = coalesce(raised_at, $2) "
    "where id = $1 and status = 'open'"
)

# One round trip: the user, the latest session (for time-since and resume), the latest
# summary (the latest session may have ended before anything was said), open follow-ups.
_GREETING_SQL = """
select u.display_name, u.preferred_name, u.interests, u.onboarding_state, u.timezone,
       last.id as last_id, last.started_at as last_started_at,
       last.last_activity_at as last_activity_at, last.ended_at as last_ended_at,
       summ.summary as last_summary, summ.started_at as last_summary_at,
       (select count(*) from public.sessions s
         where s.user_id = u.id and s.companion_id is not distinct from $2) as session_count,
       coalesce((
         select json_agg(json_build_object('id', f.id, 'topic', f.topic, 'detail', f.detail,
                                           'due_at', f.due_at) order by f.rank)
         from (select f.*, row_number() over (order by f.due_at nulls last, f.created_at desc)
                 as rank
               from public.follow_ups f
               where f.user_id = u.id and f.status = 'open'
                 and (f.companion_id is not distinct from $2 or f.companion_id is null)
                 and (f.due_at is null or f.due_at <= now())
               order by rank limit $3) f
       ), '[]'::json) as follow_ups
from public.users u
left join lateral (
  select s.id, s.started_at, s.last_activity_at, s.ended_at from public.sessions s
  where s.user_id = u.id and s.companion_id is not distinct from $2
  order by s.last_activity_at desc limit 1
) last on true
left join lateral (
  select s.summary, s.started_at from public.sessions s
  where s.user_id = u.id and s.companion_id is not distinct from $2 and s.summary is not null
  order by s.started_at desc limit 1
) summ on true
where u.id = $1
"""


@dataclass(frozen=True)
class FollowUpNote:
    """Something to ask about next time, from an earlier session."""

    id: uuid.UUID
    topic: str
    detail: str
    due_at: datetime | None


@dataclass(frozen=True)
class GreetingContext:
    """What the companion knows when someone joins, loaded in one query and cached."""

    user_id: uuid.UUID
    companion_id: uuid.UUID | None
    display_name: str | None
    preferred_name: str | None
    interests: tuple[str, ...]
    onboarding_state: str
    timezone: str | None
    last_session_id: uuid.UUID | None
    last_started_at: datetime | None
    last_activity_at: datetime | None
    last_ended_at: datetime | None
    last_summary: str | None
    last_summary_at: datetime | None
    session_count: int
    follow_ups: tuple[FollowUpNote, ...]

    @property
    def address_as(self) -> str | None:
        return self.preferred_name or self.display_name

    def resumable(self, now: datetime, grace_s: int) -> bool:
        """Whether a join now continues the latest session instead of starting a new one."""
        if self.last_session_id is None or self.last_activity_at is None or grace_s <= 0:
            return False
        return now - self.last_activity_at <= timedelta(seconds=grace_s)

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "user_id": str(self.user_id),
            "companion_id": str(self.companion_id) if self.companion_id else None,
            "display_name": self.display_name,
            "preferred_name": self.preferred_name,
            "interests": list(self.interests),
            "onboarding_state": self.onboarding_state,
            "timezone": self.timezone,
            "last_session_id": str(self.last_session_id) if self.last_session_id else None,
            "last_started_at": iso(self.last_started_at),
            "last_activity_at": iso(self.last_activity_at),
            "last_ended_at": iso(self.last_ended_at),
            "last_summary": self.last_summary,
            "last_summary_at": iso(self.last_summary_at),
            "session_count": self.session_count,
            "follow_ups": [
                {"id": str(f.id), "topic": f.topic, "detail": f.detail, "due_at": iso(f.due_at)}
                for f in self.follow_ups
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GreetingContext:
        def dt(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        def uid(value: str | None) -> uuid.UUID | None:
            return uuid.UUID(value) if value else None

        return cls(
            user_id=uuid.UUID(data["user_id"]),
            companion_id=uid(data.get("companion_id")),
            display_name=data.get("display_name"),
            preferred_name=data.get("preferred_name"),
            interests=tuple(data.get("interests") or ()),
            onboarding_state=data.get("onboarding_state", "new"),
            timezone=data.get("timezone"),
            last_session_id=uid(data.get("last_session_id")),
            last_started_at=dt(data.get("last_started_at")),
            last_activity_at=dt(data.get("last_activity_at")),
            last_ended_at=dt(data.get("last_ended_at")),
            last_summary=data.get("last_summary"),
            last_summary_at=dt(data.get("last_summary_at")),
            session_count=int(data.get("session_count") or 0),
            follow_ups=tuple(
                FollowUpNote(
                    id=uuid.UUID(f["id"]), topic=f["topic"], detail=f.get("detail") or "",
                    due_at=dt(f.get("due_at")),
                )
                for f in data.get("follow_ups") or ()
            ),
        )


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    at: datetime


@dataclass
class ConversationSession:
    """One conversation, possibly resumed after a short disconnect.

    Attributes:
        resumed: True when this join continued a session that was active moments ago.
        history: earlier turns of a resumed session, oldest first (seed for the chat context).
        turns: turns said since this join.
    """

    id: uuid.UUID
    user_id: uuid.UUID
    companion_id: uuid.UUID | None
    room: str | None
    started_at: datetime
    resumed: bool = False
    history: list[Turn] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    previous_summary: str | None = None
    timezone: str | None = None
    ended: bool = False


@dataclass(frozen=True)
class SessionSummary:
    summary: str
    follow_ups: tuple[tuple[str, str, date | None], ...]
    by_llm: bool


def describe_gap(gap: timedelta) -> str:
    """'3 days', 'a few minutes': how long ago the last talk was, as a person would say it."""
    seconds = max(0.0, gap.total_seconds())
    if seconds < 120:
        return "only a moment"
    if seconds < 3600:
        return f"{int(seconds // 60)} minutes"
    hours = seconds / 3600
    if hours < 24:
        return "about an hour" if hours < 1.5 else f"about {round(hours)} hours"
    days = int(hours // 24)
    if days == 1:
        return "a day"
    if days < 14:
        return f"{days} days"
    if days < 60:
        return f"{days // 7} weeks"
    return f"{days // 30} months"


class ConversationService:
    """Persists sessions and messages, builds the greeting, summarizes finished sessions.

    Args:
        pool: the shared database pool.
        models: `models.openai` writes the summaries.
        cache: caches the greeting context per user and companion.
        batcher: carries message writes off the critical path.
        settings: LLM model, resume grace period, cache TTL.
        clock: returns "now" (tests pin it).
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        models: ModelClients,
        cache: Cache,
        batcher: DatabaseBatcher,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._models = models
        self._cache = cache
        self._batcher = batcher
        self._settings = settings
        self._clock = clock
        self._tasks = BackgroundTasks("conversation")
        self._counters = {
            "sessions_started": 0,
            "sessions_resumed": 0,
            "sessions_ended": 0,
            "messages_logged": 0,
            "summaries_by_llm": 0,
            "summaries_fallback": 0,
            "summary_failures": 0,
            "greeting_cache_hits": 0,
            "greeting_cache_misses": 0,
        }
        batcher.register(MESSAGE_OP, _MESSAGE_SQL)
        batcher.register(ACTIVITY_OP, _ACTIVITY_SQL)
        batcher.register(FOLLOW_UP_RAISED_OP, _FOLLOW_UP_RAISED_SQL)

    @staticmethod
    def greeting_key(user_id: uuid.UUID, companion_id: uuid.UUID | None) -> str:
        return f"greeting:{user_id}:{companion_id or 'none'}"

    # --- join ---------------------------------------------------------------------------------

    async def greeting_context(
        self, user_id: uuid.UUID, companion_id: uuid.UUID | None
    ) -> GreetingContext:
        """Everything the greeting needs, from the cache or one query.

        Raises:
            InvalidInput: the user does not exist (call UserService.ensure first).
        """
        key = self.greeting_key(user_id, companion_id)
        cached = await self._cache.get_json(key)
        if cached is not None:
            self._counters["greeting_cache_hits"] += 1
            return GreetingContext.from_json(cached)
        self._counters["greeting_cache_misses"] += 1
        row = await self._pool.fetchrow(_GREETING_SQL, user_id, companion_id, MAX_FOLLOW_UPS)
        if row is None:
            raise InvalidInput(
                f"user {user_id} does not exist", suggestion="call UserService.ensure first"
            )
        follow_ups = row["follow_ups"]
        if isinstance(follow_ups, str):
            follow_ups = json.loads(follow_ups)
        context = GreetingContext(
            user_id=user_id,
            companion_id=companion_id,
            display_name=row["display_name"],
            preferred_name=row["preferred_name"],
            interests=tuple(row["interests"] or ()),
            onboarding_state=row["onboarding_state"],
            timezone=row["timezone"],
            last_session_id=row["last_id"],
            last_started_at=row["last_started_at"],
            last_activity_at=row["last_activity_at"],
            last_ended_at=row["last_ended_at"],
            last_summary=row["last_summary"],
            last_summary_at=row["last_summary_at"],
            session_count=int(row["session_count"]),
            follow_ups=tuple(
                FollowUpNote(
                    id=uuid.UUID(f["id"]),
                    topic=f["topic"],
                    detail=f.get("detail") or "",
                    due_at=datetime.fromisoformat(f["due_at"]) if f.get("due_at") else None,
                )
                for f in follow_ups
            ),
        )
        await self._cache.set_json(key, context.to_json(), self._settings.cache_default_ttl_s)
        return context

    async def invalidate(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> None:
        """Drop the cached greeting context (after a profile change or a session)."""
        await self._cache.delete(self.greeting_key(user_id, companion_id))

    def greeting_instructions(
        self,
        context: GreetingContext,
        *,
        companion_name: str,
        resumed: bool = False,
        now: datetime | None = None,
    ) -> str:
        """The instructions for the companion's first words in this session."""
        now = now or self._clock()
        name = context.address_as
        if resumed:
            return render("greeting_resumed", companion=companion_name, name=name or "them")
        if context.session_count == 0:
            return render("greeting_new", companion=companion_name, name_line=(
                f"Their name is {name}." if name else
                "You do not know their name yet: ask for it."
            ))
        since = context.last_activity_at or context.last_started_at
        gap = describe_gap(now - since) if since else "a while"
        summary = (
            f"Last time you talked about: {context.last_summary}" if context.last_summary else
            "You do not have notes from last time."
        )
        if context.follow_ups:
            items = "; ".join(
                f"{f.topic}" + (f" ({f.detail})" if f.detail else "") for f in context.follow_ups
            )
            follow_ups = f"Things to ask about (pick the most natural one): {items}"
        else:
            follow_ups = "There is nothing specific to follow up on."
        return render(
            "greeting_returning",
            companion=companion_name,
            name=name or "them (you do not know their name yet: ask for it)",
            since=gap,
            summary_line=summary,
            follow_up_line=follow_ups,
        )

    def mark_raised(self, follow_ups: Sequence[FollowUpNote]) -> None:
        """The greeting brought these up; they are not raised again (written in the background)."""
        now = self._clock()
        for note in follow_ups:
            self._batcher.enqueue(FOLLOW_UP_RAISED_OP, (note.id, now))

    async def start(
        self,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        *,
        room: str | None = None,
        context: GreetingContext | None = None,
    ) -> ConversationSession:
        """Open a session, or resume the latest one when it was active within the grace period."""
        now = self._clock()
        if context is None:
            context = await self.greeting_context(user_id, companion_id)
        session: ConversationSession | None = None
        if context.resumable(now, self._settings.session_resume_grace_s):
            assert context.last_session_id is not None
            session = await self._resume(context.last_session_id, user_id, companion_id, room)
        if session is None:
            session_id = uuid.uuid4()
            await self._pool.execute(
                "insert into public.sessions (id, user_id, companion_id, room, started_at, "
                "last_activity_at) values ($1, $2, $3, $4, $5, $5)",
                session_id, user_id, companion_id, room, now,
            )
            session = ConversationSession(
                id=session_id, user_id=user_id, companion_id=companion_id, room=room,
                started_at=now,
            )
            self._counters["sessions_started"] += 1
        session.timezone = context.timezone
        # The cached context describes the time before this session; it is stale from now on.
        await self.invalidate(user_id, companion_id)
        return session

    async def _resume(
        self,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None,
        room: str | None,
    ) -> ConversationSession | None:
        rows = await self._pool.fetch(
            "with s as (update public.sessions set ended_at = null, room = coalesce($4, room) "
            "  where id = $1 and user_id = $2 and companion_id is not distinct from $3 "
            "  returning id, started_at, summary) "
            "select s.started_at, s.summary, m.role, m.content, m.created_at from s "
            "left join lateral (select role, content, created_at from public.messages "
            "  where session_id = s.id and user_id = $2 "
            "  order by created_at desc limit $5) m on true "
            "order by m.created_at",
            session_id, user_id, companion_id, room, RESUME_TURNS,
        )
        if not rows:
            return None
        history = [
            Turn(role=r["role"], text=r["content"], at=r["created_at"])
            for r in rows
            if r["role"] is not None
        ]
        self._counters["sessions_resumed"] += 1
        logger.info("session resumed", extra={"session_id": str(session_id)})
        return ConversationSession(
            id=session_id, user_id=user_id, companion_id=companion_id, room=room,
            started_at=rows[0]["started_at"], resumed=True, history=history,
            previous_summary=rows[0]["summary"],
        )

    # --- during the session -------------------------------------------------------------------

    def add_message(
        self, session: ConversationSession, role: str, text: str, *, modality: str = "text"
    ) -> None:
        """Keep one message of the session; returns at once (the batcher writes it)."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}", suggestion="use 'user'")
        content = clean_text(text, field="message", max_chars=MAX_UTTERANCE_CHARS, truncate=True)
        if not content:
            return
        now = self._clock()
        session.turns.append(Turn(role=role, text=content, at=now))
        self._batcher.enqueue(
            MESSAGE_OP,
            (uuid.uuid4(), session.id, session.user_id, session.companion_id, role, content,
             modality, now),
        )
        self._batcher.enqueue(ACTIVITY_OP, (session.id, now))
        self._counters["messages_logged"] += 1

    # --- end ----------------------------------------------------------------------------------

    async def end(self, session: ConversationSession, *, wait: bool = False) -> None:
        """Close the session; its summary and follow-ups are written in the background.

        Safe to call twice (session close and shutdown both call it). With `wait`, returns only
        once the summary is stored (used on shutdown, when the process is about to exit).
        """
        if session.ended:
            if wait:
                await self.drain()
            return
        session.ended = True
        now = self._clock()
        # Messages first, so the session row's counts and the summary agree with them.
        await self._batcher.flush()
        await self._pool.execute(
            "update public.sessions set ended_at = $2, "
            "last_activity_at = greatest(last_activity_at, $2), "
            "turn_count = (select count(*) from public.messages m "
            "  where m.session_id = $1 and m.user_id = $3) "
            "where id = $1 and user_id = $3",
            session.id, now, session.user_id,
        )
        await self.invalidate(session.user_id, session.companion_id)
        self._counters["sessions_ended"] += 1
        if any(t.role == "user" for t in session.turns):
            self._tasks.spawn(self._summarize_and_store(session, hurried=wait))
        if wait:
            await self.drain()

    async def _summarize_and_store(self, session: ConversationSession, *, hurried: bool) -> None:
        try:
            summary = await self.summarize(session, hurried=hurried)
            await self._store_summary(session, summary)
        except Exception as exc:
            self._counters["summary_failures"] += 1
            logger.warning("session summary failed (%s)", type(exc).__name__)

    async def summarize(
        self, session: ConversationSession, *, hurried: bool = False
    ) -> SessionSummary:
        """The LLM's summary and follow-ups; a plain extract when no LLM answers.

        `hurried` (shutdown): one short attempt, because LiveKit kills a job whose shutdown
        callbacks outlast its limit (10 s), and the drain after the summary must still run.
        """
        transcript = _transcript(session)
        try:
            client = self._models.openai
            if hurried:
                client = client.with_options(timeout=SHUTDOWN_SUMMARY_TIMEOUT_S, max_retries=0)
            response = await client.chat.completions.create(
                model=self._settings.llm_model,
                messages=[
                    {"role": "system", "content": render(
                        "session_summary", today=session.started_at.date().isoformat(),
                        previous=session.previous_summary or "none",
                    )},
                    {"role": "user", "content": transcript},
                ],
                response_format={"type": "json_object"},
                temperature=0.2,
            )
            parsed = _parse_summary(
                response.choices[0].message.content or "", now=self._clock(),
                tz_name=session.timezone,
            )
            self._counters["summaries_by_llm"] += 1
            return parsed
        except Exception as exc:
            logger.warning("summary LLM unavailable, using an extract (%s)", type(exc).__name__)
            self._counters["summaries_fallback"] += 1
            return _extract_summary(session)

    async def _store_summary(self, session: ConversationSession, summary: SessionSummary) -> None:
        tz = timezone_named(session.timezone)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "update public.sessions set summary = $2, summarized_at = now() "
                "where id = $1 and user_id = $3",
                session.id, summary.summary, session.user_id,
            )
            # A resumed session is summarized again; its earlier open follow-ups are replaced.
            await conn.execute(
                "delete from public.follow_ups "
                "where session_id = $1 and user_id = $2 and status = 'open'",
                session.id, session.user_id,
            )
            if summary.follow_ups:
                await conn.executemany(
                    "insert into public.follow_ups (user_id, companion_id, session_id, topic, "
                    "detail, due_at) values ($1, $2, $3, $4, $5, $6)",
                    [
                        (session.user_id, session.companion_id, session.id, topic, detail,
                         due_from_day(due, tz) if due else None)
                        for topic, detail, due in summary.follow_ups
                    ],
                )
        await self.invalidate(session.user_id, session.companion_id)

    # --- queries, stats, lifecycle --------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {**self._counters, "pending_tasks": len(self._tasks)}

    async def drain(self) -> None:
        await self._tasks.drain()

    async def aclose(self) -> None:
        await self.drain()



def _transcript(session: ConversationSession) -> str:
    speaker = {"user": "User", "assistant": "Companion"}
    lines = [
        f"{speaker.get(t.role, t.role)}: {t.text}"
        for t in session.history + session.turns
        if t.role in speaker
    ]
    text = "\n".join(lines)
    return text[-MAX_TRANSCRIPT_CHARS:]


def _parse_summary(raw: str, *, now: datetime, tz_name: str | None = None) -> SessionSummary:
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("summary"), str):
        raise ValueError("summary JSON has no 'summary' string")
    summary = clean_text(data["summary"], field="summary", max_chars=MAX_SUMMARY_CHARS,
                         truncate=True)
    follow_ups: list[tuple[str, str, date | None]] = []
    for item in data.get("follow_ups") or []:
        if not isinstance(item, dict) or not isinstance(item.get("topic"), str):
            continue
        topic = clean_text(item["topic"], field="topic", max_chars=120, truncate=True)
        detail = clean_text(str(item.get("detail") or ""), field="detail", max_chars=300,
                            truncate=True)
        due = _parse_due(item.get("due"), now, tz_name)
        if topic:
            follow_ups.append((topic, detail, due))
    return SessionSummary(summary=summary, follow_ups=tuple(follow_ups[:MAX_FOLLOW_UPS]),
                          by_llm=True)


def _parse_due(raw: object, now: datetime, tz_name: str | None) -> date | None:
    if not isinstance(raw, str) or not raw.strip() or raw.strip().lower() == "null":
        return None
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        return parse_date(raw, now=now, tz=timezone_named(tz_name))


def _extract_summary(session: ConversationSession) -> SessionSummary:
    said = [t.text for t in session.turns if t.role == "user"][:3]
    pieces = [s if len(s) <= 100 else s[:97].rstrip() + "..." for s in said]
    return SessionSummary(
        summary="They said: " + " / ".join(pieces), follow_ups=(), by_llm=False
    )
