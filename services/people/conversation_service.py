"""Conversations: sessions and their messages, the greeting's context, summaries.

The greeting needs the person's name, when they last talked, what about, and what to ask
again; all of it comes from one query (laterals and subselects) and is cached. Messages go
through the batcher, never on the turn's critical path. At the end the session is summarized
by the LLM in a background task and its follow-ups ("how did the interview go?") stored
(`follow_up_service`); `greeting` turns the context into the first words' instructions.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.config import Settings
from core.dates import timezone_named, utc_now
from core.deadline import Deadline
from core.errors import InvalidInput
from core.prompts import render
from core.tasks import BackgroundTasks
from core.validators import MAX_UTTERANCE_CHARS, clean_text
from infrastructure.cache import Cache
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.model_clients import ModelClients
from infrastructure.write_kinds import WriteKind
from services.people.follow_up_service import (
    DUE_ORDER,
    FOLLOW_UP_COLUMNS,
    FollowUp,
    FollowUpService,
    due_condition,
)
from services.people.greeting import GreetingContext
from services.people.session_summary import (
    MAX_FOLLOW_UPS,
    SessionSummary,
    extract_summary,
    parse_summary,
    transcript,
    without_forgotten,
)

logger = logging.getLogger(__name__)

MESSAGE_OP = "conversation.message"
ACTIVITY_OP = "conversation.activity"
END_OP = "conversation.end"
SUMMARY_OP = "conversation.summary"
ROLES = ("user", "assistant", "system", "tool")
RESUME_TURNS = 20
SHUTDOWN_SUMMARY_TIMEOUT_S = 4.0
# Less time than this left at shutdown: the summary is an extract, without the LLM.
MIN_SUMMARY_S = 0.5

_MESSAGE_SQL = (
    "insert into public.messages (id, session_id, user_id, companion_id, role, content, modality,"
    " created_at) values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (id) do nothing"
)
_ACTIVITY_SQL = (
    "update public.sessions set last_activity_at = greatest(last_activity_at, $2) "
    "where id = $1 and user_id = $3"
)
_END_SQL = (
    "update public.sessions set ended_at = $2, last_activity_at = greatest(last_activity_at, $2), "
    "turn_count = (select count(*) from public.messages m where m.session_id = $1 "
    "and m.user_id = $3) where id = $1 and user_id = $3"
)
# The summary and the follow-ups it asks for, in one statement: a resumed session summarized
# again (or a replayed line) replaces the earlier open follow-ups.
_SUMMARY_SQL = """
with s as (
  update public.sessions set summary = $2, summarized_at = $4
  where id = $1 and user_id = $3 returning id
), cleared as (
  delete from public.follow_ups
  where session_id = $1 and user_id = $3 and status = 'open' and exists (select 1 from s)
)
insert into public.follow_ups (user_id, companion_id, session_id, topic, detail, due_at, created_at)
select $3, $5, $1, f.topic, f.detail, f.due_at, $4
from unnest($6::text[], $7::text[], $8::timestamptz[]) as f(topic, detail, due_at)
where exists (select 1 from s)
"""
END_KIND = WriteKind.of(END_OP, _END_SQL, "session_id:uuid ended_at:time user_id:uuid")
SUMMARY_KIND = WriteKind.of(
    SUMMARY_OP, _SUMMARY_SQL,
    "session_id:uuid summary:text user_id:uuid summarized_at:time companion_id:uuid? "
    "topics:text[] details:text[] due_at:time?[]",
)
MESSAGE_KIND = WriteKind.of(
    MESSAGE_OP, _MESSAGE_SQL,
    "id:uuid session_id:uuid user_id:uuid companion_id:uuid? role:text content:text "
    "modality:text created_at:time",
)
ACTIVITY_KIND = WriteKind.of(
    ACTIVITY_OP, _ACTIVITY_SQL, "session_id:uuid at:time user_id:uuid", version=2
)
# Version 1 named no user; kept to replay lines spooled before the upgrade.
ACTIVITY_KIND_V1 = WriteKind.of(
    ACTIVITY_OP,
    "update public.sessions set last_activity_at = greatest(last_activity_at, $2) where id = $1",
    "session_id:uuid at:time",
)
WRITE_KINDS = (MESSAGE_KIND, ACTIVITY_KIND, END_KIND, SUMMARY_KIND)
OLDER_KINDS = {ACTIVITY_OP: (ACTIVITY_KIND_V1,)}

# One round trip: the user, the latest session (for time-since and resume), the latest
# summary (the latest session may have ended before anything was said), the due follow-ups.
_GREETING_SQL = f"""
select u.display_name, u.preferred_name, u.interests, u.onboarding_state, u.timezone,
       last.id as last_id, last.started_at as last_started_at,
       last.last_activity_at as last_activity_at, last.ended_at as last_ended_at,
       summ.summary as last_summary, summ.started_at as last_summary_at,
       (select count(*) from public.sessions s
         where s.user_id = u.id and s.companion_id is not distinct from $2) as session_count,
       coalesce((
         select json_agg(json_build_object('id', f.id, 'topic', f.topic, 'detail', f.detail,
                                           'due_at', f.due_at) order by f.rank)
         from (select {FOLLOW_UP_COLUMNS}, row_number() over (order by {DUE_ORDER}) as rank
               from public.follow_ups f where {due_condition("f")}
               order by rank limit $5) f
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
    # Words of what the person had forgotten during the session: its summary leaves them out.
    forgotten_words: set[str] = field(default_factory=set)


class ConversationService:
    """Persists sessions and messages, builds the greeting, summarizes finished sessions.

    Args:
        pool: the shared database pool.
        models: `models.openai` writes the summaries.
        cache: caches the greeting context per user and companion.
        batcher: carries message writes off the critical path.
        follow_ups: stores the follow-ups a session's summary asks for.
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
        follow_ups: FollowUpService,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._models = models
        self._cache = cache
        self._batcher = batcher
        self._follow_ups = follow_ups
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
        for kind in WRITE_KINDS:
            batcher.register(kind, older=OLDER_KINDS.get(kind.op, ()))

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
        now = self._clock()
        # A join is about to begin a session: what is due is due as of now.
        row = await self._pool.fetchrow(
            _GREETING_SQL, user_id, companion_id, now, now, MAX_FOLLOW_UPS
        )
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
            follow_ups=tuple(FollowUp.from_json(f) for f in follow_ups),
        )
        await self._cache.set_json(key, context.to_json(), self._settings.cache_default_ttl_s)
        return context

    async def invalidate(self, user_id: uuid.UUID, companion_id: uuid.UUID | None) -> None:
        """Drop the cached greeting context (after a profile change or a session)."""
        await self._cache.delete(self.greeting_key(user_id, companion_id))

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
        self._batcher.enqueue(ACTIVITY_OP, (session.id, now, session.user_id))
        self._counters["messages_logged"] += 1

    # --- end ----------------------------------------------------------------------------------

    async def end(
        self,
        session: ConversationSession,
        *,
        wait: bool = False,
        deadline: Deadline | None = None,
    ) -> None:
        """Close the session; its summary and follow-ups are written in the background.

        Every write goes through the batcher, so a database that does not answer costs none
        of them: at the end of a job (`DatabaseBatcher.finish_by`) they are spooled. Safe to
        call twice (session close and shutdown both call it). With `wait`, returns once the
        summary is stored (used on shutdown), or at `deadline`.
        """
        if session.ended:
            if wait:
                await self._tasks.drain(deadline)
            return
        session.ended = True
        # Queued behind the session's messages, so the row's turn count agrees with them.
        self._batcher.enqueue(END_OP, (session.id, self._clock(), session.user_id))
        self._counters["sessions_ended"] += 1
        if any(t.role == "user" for t in session.turns):
            # Before the flush: the summary needs the LLM, not the database, so a database
            # that does not answer at shutdown costs no summary (it is spooled with the rest).
            self._tasks.spawn(self._summarize_and_store(session, hurried=wait, deadline=deadline))
        if wait:
            await self._tasks.drain(deadline)
        await self._batcher.flush()
        await self.invalidate(session.user_id, session.companion_id)

    async def _summarize_and_store(
        self, session: ConversationSession, *, hurried: bool, deadline: Deadline | None
    ) -> None:
        try:
            summary = await self.summarize(session, hurried=hurried, deadline=deadline)
            if session.forgotten_words:
                summary = without_forgotten(summary, frozenset(session.forgotten_words))
            topics, details, due = self._follow_ups.columns(
                summary.follow_ups, timezone_named(session.timezone)
            )
            self._batcher.enqueue(SUMMARY_OP, (
                session.id, summary.summary, session.user_id, self._clock(),
                session.companion_id, topics, details, due,
            ))
            await self._batcher.flush()
            await self.invalidate(session.user_id, session.companion_id)
        except Exception as exc:
            self._counters["summary_failures"] += 1
            logger.warning("session summary failed (%s)", type(exc).__name__)

    async def summarize(
        self,
        session: ConversationSession,
        *,
        hurried: bool = False,
        deadline: Deadline | None = None,
    ) -> SessionSummary:
        """The LLM's summary and follow-ups; a plain extract when no LLM answers in time.

        `hurried` (shutdown): one short attempt, because LiveKit kills a job whose shutdown
        callbacks outlast its limit (10 s), and the drain after the summary must still run;
        it ends by `deadline` too.
        """
        said = transcript([(t.role, t.text) for t in session.history + session.turns])
        try:
            client = self._models.openai
            if hurried:
                limit = SHUTDOWN_SUMMARY_TIMEOUT_S
                if deadline is not None:
                    limit = deadline.bound(limit)
                if limit < MIN_SUMMARY_S:
                    raise TimeoutError("no time left for the summary LLM")
                client = client.with_options(timeout=limit, max_retries=0)
            response = await client.chat.completions.create(
                model=self._settings.llm_model,
                messages=[
                    {"role": "system", "content": render(
                        "session_summary", today=session.started_at.date().isoformat(),
                        previous=session.previous_summary or "none",
                    )},
                    {"role": "user", "content": said},
                ],
                response_format={"type": "json_object"},
                temperature=0.2,
            )
            parsed = parse_summary(
                response.choices[0].message.content or "", now=self._clock(),
                tz_name=session.timezone,
            )
            self._counters["summaries_by_llm"] += 1
            return parsed
        except Exception as exc:
            logger.warning("summary LLM unavailable, using an extract (%s)", type(exc).__name__)
            self._counters["summaries_fallback"] += 1
            return extract_summary([t.text for t in session.turns if t.role == "user"])

    # --- queries, stats, lifecycle --------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {**self._counters, "pending_tasks": len(self._tasks)}

    async def drain(self, deadline: Deadline | None = None) -> None:
        """Wait for the summaries under way (until `deadline`; then they are cancelled)."""
        if not await self._tasks.drain(deadline):
            self._tasks.cancel()

    async def aclose(self, deadline: Deadline | None = None) -> None:
        await self.drain(deadline)
