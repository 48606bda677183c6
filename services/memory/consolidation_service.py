"""Background memory work: the LLM distills sessions into explicit memories; periodic upkeep.

So the companion remembers even when the model never called a tool, each session's new
messages are sent to the LLM after the session (and every few turns of a long one), which
answers with {category, key, value, source_message_ids} items saved through
`MemoryService.remember` (so supersession applies), except a key the person asked to forget
after the words it comes from (`forgotten_keys`). Nothing here runs on a turn's critical path.

Crash safety: `sessions.consolidated_through` advances only after a batch's memories are
saved, and a memory whose key already cites one of the batch's messages is not saved again,
so a run cut short midway (a crash, a deadline) resumes where it stopped without writing
anything twice. The same update marks the companion's profile summary due
(`sessions.profile_due_at`): it is written after consolidation, from what it saved. One process
consolidates a session at a time: it holds a short lease on the session row
(`consolidating_until`), renewed with every batch, instead of a lock held across LLM calls.

The prompt and the reading of the answer are `consolidation_answer`. What finds unfinished
sessions and runs them (at a session's end, at the next start, in the maintenance pass) is
`after_session`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from core.config import Settings
from core.dates import utc_now
from core.deadline import Deadline, within
from core.errors import CompanionError, InvalidInput, LLMUnavailable, QuotaExceeded
from core.memory_records import Memory, normalize_key
from core.prompts import render
from core.tasks import BackgroundTasks
from infrastructure.connection_pool import ConnectionPool
from infrastructure.model_clients import ModelClients
from services.memory.consolidation_answer import (
    answer_items,
    known_keys_text,
    parse_item,
    transcript,
)
from services.memory.forgotten_keys import forgotten_keys
from services.memory.memory_service import MemoryService

logger = logging.getLogger(__name__)

ORIGIN = "consolidation"
# Mid-session runs leave the newest seconds alone: their messages may still be in the batcher.
SETTLE_S = 10.0
MAX_ITEMS_PER_BATCH = 40
# How long a run may hold a session before another process may take it over; renewed with
# every batch, so only a run that died (or hangs) loses it. A run with a deadline (a job's end)
# holds it no longer than that: the process may be gone before it can release it.
LEASE_S = 120.0
_MAX_KNOWN_KEYS = 60


def _lease_s(deadline: Deadline | None) -> float:
    """How long a run holds a session's lease (LEASE_S, and never past its deadline)."""
    return LEASE_S if deadline is None else min(LEASE_S, deadline.remaining())


@dataclass(frozen=True)
class ConsolidationResult:
    """What one run over a session did.

    Attributes:
        messages: messages read (user and assistant).
        saved: memories saved as new values.
        unchanged: items whose value was already current (or already saved from these turns).
        rejected: items dropped (malformed, or not sourced to any of the person's messages).
        busy: sessions left alone because another process is consolidating them.
        forgotten: items not saved: their key was forgotten after words they come from.
    """

    messages: int = 0
    saved: int = 0
    unchanged: int = 0
    rejected: int = 0
    busy: int = 0
    forgotten: int = 0

    def __add__(self, other: ConsolidationResult) -> ConsolidationResult:
        return ConsolidationResult(
            self.messages + other.messages,
            self.saved + other.saved,
            self.unchanged + other.unchanged,
            self.rejected + other.rejected,
            self.busy + other.busy,
            self.forgotten + other.forgotten,
        )


@dataclass(frozen=True)
class _Session:
    id: uuid.UUID
    user_id: uuid.UUID
    companion_id: uuid.UUID | None
    consolidated_through: datetime | None
    timezone: str | None


class ConsolidationService:
    """Turns conversations into explicit memories.

    Args:
        pool: the shared database pool.
        models: `models.openai` is the LLM.
        memory: saves the distilled memories (supersession, dates, importance).
        settings: model name, batch sizes, turn interval, idle time of a quiet session.
        clock: returns "now".
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        models: ModelClients,
        memory: MemoryService,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._models = models
        self._memory = memory
        self._settings = settings
        self._clock = clock
        self._tasks = BackgroundTasks("consolidation")
        # One run per session at a time; a lock lives only while someone holds or awaits it.
        self._locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._turns: dict[uuid.UUID, int] = {}
        self._holder = f"consolidation:{uuid.uuid4()}"
        self._counters: dict[str, int] = {
            "runs": 0,
            "failures": 0,
            "llm_calls": 0,
            "saved": 0,
            "unchanged": 0,
            "rejected": 0,
            "over_quota": 0,
            "busy": 0,
            "forgotten": 0,
        }

    # --- triggers ---------------------------------------------------------------------------

    def note_turn(self, session_id: uuid.UUID) -> None:
        """Count a message of a live session; every N of them, consolidate in the background."""
        every = self._settings.consolidation_every_turns
        count = self._turns.get(session_id, 0) + 1
        self._turns[session_id] = count
        if every and count % every == 0:
            self.schedule(session_id)

    def schedule(self, session_id: uuid.UUID, *, final: bool = False) -> None:
        """Consolidate `session_id` in a tracked background task; failures are logged."""
        self._tasks.spawn(self._consolidate_quietly(session_id, final))

    async def _consolidate_quietly(self, session_id: uuid.UUID, final: bool) -> None:
        try:
            await self.consolidate_session(session_id, final=final)
        except Exception as exc:
            self._counters["failures"] += 1
            logger.warning("consolidation failed, will resume later (%s)", type(exc).__name__)

    # --- consolidation ------------------------------------------------------------------------

    async def consolidate_session(
        self, session_id: uuid.UUID, *, final: bool = True, deadline: Deadline | None = None
    ) -> ConsolidationResult:
        """Distill the session's messages not yet consolidated into explicit memories.

        Args:
            session_id: the session to read.
            final: False for a run in the middle of a live session, which leaves the last few
                seconds of messages for the next run.
            deadline: every LLM call ends by it (the end of a job); what is not done by then
                stays for a later run.

        Returns:
            What was done; `busy` 1 when another process is consolidating the session now
            (nothing was done here: that run finishes it).

        Raises:
            LLMUnavailable: the LLM failed or the deadline came; nothing of the failed batch
                was marked done.
        """
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        async with lock:
            self._counters["runs"] += 1
            session = await self._load_session(session_id)
            if session is None:
                raise InvalidInput(
                    "no such session to consolidate", suggestion="pass the id of a stored session"
                )
            if not await self._claim(session, _lease_s(deadline)):
                self._counters["busy"] += 1
                return ConsolidationResult(busy=1)
            try:
                result = await self._consolidate(session, final, deadline)
            finally:
                await self._release(session)
        if final:
            # The session is distilled now: its person's old turns may expire.
            await self._apply_retention(session.user_id, deadline)
        return result

    async def _apply_retention(self, user_id: uuid.UUID, deadline: Deadline | None) -> None:
        try:
            async with within(deadline):
                await self._memory.apply_retention(user_id)
        except Exception as exc:  # the next session end or maintenance pass tries again
            logger.warning("retention after consolidation failed (%s)", type(exc).__name__)

    async def _consolidate(
        self, session: _Session, final: bool, deadline: Deadline | None
    ) -> ConsolidationResult:
        total = ConsolidationResult()
        upper = None if final else self._clock() - timedelta(seconds=SETTLE_S)
        while True:
            rows = await self._next_batch(session, upper)
            if not rows:
                return total
            total += await self._consolidate_batch(session, rows, deadline)
            through = rows[-1]["created_at"]
            # The profile summary is written from what this saved: it is due now.
            await self._pool.execute(
                "update public.sessions set consolidated_through = "
                "greatest(coalesce(consolidated_through, '-infinity'), $2), "
                "profile_due_at = case when $4 then now() else profile_due_at end, "
                "consolidating_until = now() + make_interval(secs => $5) "
                "where id = $1 and user_id = $3",
                session.id, through, session.user_id,
                any(row["role"] == "user" for row in rows), _lease_s(deadline),
            )
            session = _Session(
                session.id, session.user_id, session.companion_id, through, session.timezone
            )

    async def _claim(self, session: _Session, lease_s: float) -> bool:
        """Take the session's lease for `lease_s`, unless another live run holds it."""
        claimed = await self._pool.fetchval(
            "update public.sessions set consolidating_until = now() + make_interval(secs => $3), "
            "consolidation_holder = $4 "
            "where id = $1 and user_id = $2 and (consolidating_until is null "
            "or consolidating_until < now() or consolidation_holder = $4) returning true",
            session.id, session.user_id, lease_s, self._holder,
        )
        return bool(claimed)

    async def _release(self, session: _Session) -> None:
        try:
            await self._pool.execute(
                "update public.sessions set consolidating_until = null, "
                "consolidation_holder = null "
                "where id = $1 and user_id = $2 and consolidation_holder = $3",
                session.id, session.user_id, self._holder,
            )
        except Exception as exc:
            # The lease runs out by itself.
            logger.warning("releasing a consolidation lease failed (%s)", type(exc).__name__)

    async def _load_session(self, session_id: uuid.UUID) -> _Session | None:
        row = await self._pool.fetchrow(
            "select s.id, s.user_id, s.companion_id, s.consolidated_through, u.timezone "
            "from public.sessions s join public.users u on u.id = s.user_id where s.id = $1",
            session_id,
        )
        if row is None:
            return None
        return _Session(
            row["id"], row["user_id"], row["companion_id"], row["consolidated_through"],
            row["timezone"],
        )

    async def _next_batch(self, session: _Session, upper: datetime | None) -> list[asyncpg.Record]:
        limit = self._settings.consolidation_max_messages
        rows = await self._pool.fetch(
            "select id, role, content, created_at from public.messages "
            "where session_id = $1 and user_id = $5 and role in ('user', 'assistant') "
            "and created_at > coalesce($2, '-infinity'::timestamptz) "
            "and ($3::timestamptz is null or created_at <= $3) "
            "order by created_at, id limit $4",
            session.id, session.consolidated_through, upper, limit, session.user_id,
        )
        if len(rows) == limit:
            # Never split messages sharing the boundary timestamp across two batches: the
            # watermark is a timestamp, so the rest of them would be skipped for good.
            last = rows[-1]["created_at"]
            seen = {r["id"] for r in rows}
            rest = await self._pool.fetch(
                "select id, role, content, created_at from public.messages "
                "where session_id = $1 and user_id = $3 and role in ('user', 'assistant') "
                "and created_at = $2 order by id",
                session.id, last, session.user_id,
            )
            rows = rows + [r for r in rest if r["id"] not in seen]
        return rows

    async def _consolidate_batch(
        self, session: _Session, rows: list[asyncpg.Record], deadline: Deadline | None
    ) -> ConsolidationResult:
        refs = {f"m{i + 1}": row for i, row in enumerate(rows)}
        if not any(row["role"] == "user" for row in rows):
            return ConsolidationResult(messages=len(rows))
        known = await self._memory.current(
            session.user_id, session.companion_id, limit=_MAX_KNOWN_KEYS
        )
        items = await self._ask_llm(session, refs, known, deadline)
        already = await self._keys_citing(session, [row["id"] for row in rows])
        forgets = await forgotten_keys(
            self._pool, self._memory.forgotten, session.user_id, session.companion_id,
            rows[0]["created_at"],
        )
        saved = unchanged = rejected = forgotten = 0
        for item in items[:MAX_ITEMS_PER_BATCH]:
            parsed = parse_item(item, refs)
            if parsed is None:
                rejected += 1
                continue
            category, key, value, importance, sources = parsed
            if forgets.covers(key, min(row["created_at"] for row in sources)):
                # The person asked to forget it after saying this: it is not saved again.
                forgotten += 1
                continue
            try:
                cited = already.get((category, normalize_key(key)), set())
                if cited & {row["id"] for row in sources}:
                    # A previous run (cut short before the watermark moved) saved this already.
                    unchanged += 1
                    continue
                memory = await self._memory.remember(
                    session.user_id,
                    session.companion_id,
                    category,
                    key,
                    value,
                    importance=importance,
                    occurred_at=max(row["created_at"] for row in sources),
                    source={
                        "origin": ORIGIN,
                        "session_id": str(session.id),
                        "message_ids": [str(row["id"]) for row in sources],
                    },
                )
            except InvalidInput:
                rejected += 1
                continue
            except QuotaExceeded:
                # The person keeps all the memories the quota allows: a new key waits until
                # they forget something (changed values of kept keys still go through).
                self._counters["over_quota"] += 1
                rejected += 1
                continue
            if memory.source.get("origin") == ORIGIN and set(
                memory.source.get("message_ids", [])
            ) == {str(row["id"]) for row in sources}:
                saved += 1
            else:
                unchanged += 1
        self._counters["saved"] += saved
        self._counters["unchanged"] += unchanged
        self._counters["rejected"] += rejected
        self._counters["forgotten"] += forgotten
        return ConsolidationResult(len(rows), saved, unchanged, rejected, forgotten=forgotten)

    async def _ask_llm(
        self,
        session: _Session,
        refs: dict[str, asyncpg.Record],
        known: list[Memory],
        deadline: Deadline | None,
    ) -> list[Any]:
        system = render(
            "memory_consolidation",
            today=self._clock().date().isoformat(),
            timezone=session.timezone or "UTC",
            known_keys=known_keys_text(known),
        )
        self._counters["llm_calls"] += 1
        try:
            client = self._models.openai_until(deadline)
            async with within(deadline):
                response = await client.chat.completions.create(
                    model=self._settings.llm_model,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": transcript(refs)},
                    ],
                    response_format={"type": "json_object"},
                    temperature=0,
                )
            content = response.choices[0].message.content or ""
        except CompanionError:
            raise
        except Exception as exc:
            raise LLMUnavailable(
                f"consolidation LLM call failed ({type(exc).__name__})",
            ) from exc
        return answer_items(content)

    async def _keys_citing(
        self, session: _Session, message_ids: list[uuid.UUID]
    ) -> dict[tuple[str, str], set[uuid.UUID]]:
        """(category, key) -> ids among `message_ids` that saved memories already cite."""
        rows = await self._pool.fetch(
            "select m.category, m.key, cited.value as message_id from public.memories m "
            "cross join lateral jsonb_array_elements_text(m.source -> 'message_ids') cited "
            "where m.user_id = $1 and m.companion_id is not distinct from $2 "
            "and m.kind = 'explicit' and m.source ->> 'origin' = $3 "
            "and m.source ->> 'session_id' = $4 and cited.value = any($5::text[])",
            session.user_id, session.companion_id, ORIGIN, str(session.id),
            [str(i) for i in message_ids],
        )
        found: dict[tuple[str, str], set[uuid.UUID]] = {}
        for row in rows:
            found.setdefault((row["category"], row["key"]), set()).add(
                uuid.UUID(row["message_id"])
            )
        return found

    async def pending_sessions(
        self,
        *,
        limit: int,
        user_id: uuid.UUID | None = None,
        companion_id: uuid.UUID | None = None,
    ) -> list[uuid.UUID]:
        """Sessions that ended (or went quiet) with messages of the person not yet
        consolidated, oldest activity first; with `user_id`, only that person's (and with
        `companion_id`, only that companion's)."""
        idle_before = self._clock() - timedelta(seconds=self._settings.consolidation_idle_s)
        rows = await self._pool.fetch(
            "select s.id from public.sessions s "
            "where (s.ended_at is not null or s.last_activity_at < $1) "
            "and ($3::uuid is null or s.user_id = $3) "
            "and ($4::uuid is null or s.companion_id = $4) "
            "and exists (select 1 from public.messages m "
            "  where m.session_id = s.id and m.user_id = s.user_id "
            "  and m.role = 'user' "
            "  and m.created_at > coalesce(s.consolidated_through, '-infinity'::timestamptz)) "
            "order by s.last_activity_at limit $2",
            idle_before, limit, user_id, companion_id,
        )
        return [row["id"] for row in rows]

    async def consolidate_pending(
        self,
        *,
        limit: int = 50,
        user_id: uuid.UUID | None = None,
        companion_id: uuid.UUID | None = None,
    ) -> ConsolidationResult:
        """Resume sessions that ended (or went quiet) with messages not yet consolidated
        (`pending_sessions`).

        This is what picks up after a crash or a job that ran out of time: nothing is lost,
        only delayed. A session that fails is logged and left for the next run.
        """
        total = ConsolidationResult()
        for session_id in await self.pending_sessions(
            limit=limit, user_id=user_id, companion_id=companion_id
        ):
            try:
                total += await self.consolidate_session(session_id, final=True)
            except Exception as exc:
                self._counters["failures"] += 1
                logger.warning("pending consolidation failed (%s)", type(exc).__name__)
        return total

    # --- stats and lifecycle --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {**self._counters, "pending_tasks": len(self._tasks)}

    async def drain(self) -> None:
        await self._tasks.drain()

    async def aclose(self) -> None:
        await self.drain()
