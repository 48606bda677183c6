"""The memory maintenance pass, run by one process at a time: a worker's maintenance child
(`livekit_layer.maintenance_schedule`) or `python manage.py maintenance`.

In order:
    1. crash recovery: sessions that ended or went quiet with messages not consolidated (a
       job that crashed, or ran out of time at its end), oldest first;
    2. the profile summaries consolidations made due (`after_session`);
    3. decay, at most hourly (a row decays at most once a day anyway);
    4. merges and contradictions, only in scopes with explicit memories created since the
       previous pass (every scope on the first pass), only pairs with one of those;
    5. retention: old distilled turns of people holding turns past the retention age
       expire (`retention`; each session's final consolidation applies it to its person).

No transaction spans the pass or an LLM call: each unit is its own statements. Which process
runs the pass is a lease on a row of `maintenance_state`, renewed after every unit and
expiring by itself if its holder dies (a session-level advisory lock would leak behind a
transaction pooler). What a pass does not reach it leaves for the next one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from core.dates import utc_now
from infrastructure.connection_pool import ConnectionPool
from services.memory.consolidation_service import ConsolidationService
from services.memory.memory_service import MemoryService
from services.memory.memory_upkeep import MemoryUpkeep
from services.memory.profile_service import ProfileService

logger = logging.getLogger(__name__)

PASS_NAME = "memory"
# Longer than one unit of work (a session's consolidation with the LLM's own retries).
LEASE_S = 600.0
DECAY_EVERY_S = 3_600.0
# Memories created this long before the previous pass began still count as new there: the
# clocks of the processes writing them differ a little.
CLOCK_SLACK_S = 300.0
SESSIONS_PER_PASS = 50
PROFILES_PER_PASS = 50


class LeaseLost(Exception):
    """Another process took the pass over (this one was too slow to renew its lease)."""


class MemoryMaintenance:
    """One maintenance pass over the memory store (module docstring).

    Args:
        pool: the shared database pool.
        consolidation: consolidates the sessions left unconsolidated.
        profiles: refreshes the profile summaries left due.
        upkeep: decay, merges and contradictions.
        memory: applies the retention rule.
        clock: returns "now".
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        consolidation: ConsolidationService,
        profiles: ProfileService,
        upkeep: MemoryUpkeep,
        memory: MemoryService,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._consolidation = consolidation
        self._profiles = profiles
        self._upkeep = upkeep
        self._memory = memory
        self._clock = clock
        self._holder = f"maintenance:{uuid.uuid4()}"
        self._counters = {"passes": 0, "skipped": 0, "lease_lost": 0}

    async def run_pass(self) -> dict[str, Any]:
        """One pass; {"skipped": True} when another process holds it. The rest of the
        report counts what each step did."""
        state = await self._claim()
        if state is None:
            self._counters["skipped"] += 1
            return {"skipped": True}
        started, wall = self._clock(), time.monotonic()
        report: dict[str, Any] = {"skipped": False}
        decayed_at: datetime | None = None
        upkeep_through: datetime | None = None
        try:
            await self._recover_sessions(report)
            await self._refresh_profiles(report)
            last_decay = state["decayed_at"]
            if last_decay is None or started - last_decay >= timedelta(seconds=DECAY_EVERY_S):
                report["decayed"] = await self._upkeep.decay()
                decayed_at = started
                await self._renew()
            if await self._tidy(report, state["upkeep_through"]):
                upkeep_through = started
            retained = await self._memory.apply_retention_due()
            report.update(expired_turns=retained.episodes, expired_values=retained.versions)
        except LeaseLost:
            self._counters["lease_lost"] += 1
            logger.warning("maintenance pass taken over by another process; stopping")
            report["lease_lost"] = True
        finally:
            await self._release(decayed_at, upkeep_through)
        self._counters["passes"] += 1
        report["seconds"] = round(time.monotonic() - wall, 3)
        logger.info("maintenance pass done", extra={"maintenance": report})
        return report

    async def _recover_sessions(self, report: dict[str, Any]) -> None:
        sessions = await self._consolidation.pending_sessions(limit=SESSIONS_PER_PASS)
        report.update(sessions=len(sessions), consolidated_messages=0, saved=0, failed=0)
        for session_id in sessions:
            try:
                result = await self._consolidation.consolidate_session(session_id)
            except Exception as exc:
                report["failed"] += 1
                logger.warning("pending consolidation failed (%s)", type(exc).__name__)
            else:
                report["consolidated_messages"] += result.messages
                report["saved"] += result.saved
            await self._renew()

    async def _refresh_profiles(self, report: dict[str, Any]) -> None:
        report["profiles"] = report["profiles_left"] = 0
        for user_id, companion_id in await self._profiles.due(limit=PROFILES_PER_PASS):
            try:
                done = await self._profiles.refresh_if_due(user_id, companion_id)
            except Exception as exc:
                done = False
                logger.warning("profile refresh failed (%s)", type(exc).__name__)
            report["profiles" if done else "profiles_left"] += 1
            await self._renew()

    async def _tidy(self, report: dict[str, Any], through: datetime | None) -> bool:
        """Merges and contradictions; True when every scope due was done."""
        since = None if through is None else through - timedelta(seconds=CLOCK_SLACK_S)
        scopes = await self._upkeep.scopes(since=since)
        report.update(scopes=len(scopes), merged=0, contradictions=0)
        complete = True
        for scope in scopes:
            try:
                report["merged"] += await self._upkeep.merge_scope(scope, since=since)
                report["contradictions"] += await self._upkeep.flag_scope(scope, since=since)
            except Exception as exc:
                complete = False
                logger.warning("memory upkeep of a scope failed (%s)", type(exc).__name__)
            await self._renew()
        return complete

    # --- the lease -------------------------------------------------------------------------

    async def _claim(self) -> Any:
        await self._pool.execute(
            "insert into public.maintenance_state (name) values ($1) "
            "on conflict (name) do nothing",
            PASS_NAME,
        )
        return await self._pool.fetchrow(
            "update public.maintenance_state "
            "set holder = $2, lease_until = now() + make_interval(secs => $3) "
            "where name = $1 and (lease_until is null or lease_until < now() or holder = $2) "
            "returning decayed_at, upkeep_through",
            PASS_NAME, self._holder, LEASE_S,
        )

    async def _renew(self) -> None:
        renewed = await self._pool.fetchval(
            "update public.maintenance_state "
            "set lease_until = now() + make_interval(secs => $3) "
            "where name = $1 and holder = $2 returning true",
            PASS_NAME, self._holder, LEASE_S,
        )
        if not renewed:
            raise LeaseLost

    async def _release(self, decayed_at: datetime | None, upkeep_through: datetime | None) -> None:
        try:
            await self._pool.execute(
                "update public.maintenance_state set holder = null, lease_until = null, "
                "last_pass_at = now(), decayed_at = coalesce($3, decayed_at), "
                "upkeep_through = coalesce($4, upkeep_through) "
                "where name = $1 and holder = $2",
                PASS_NAME, self._holder, decayed_at, upkeep_through,
            )
        except Exception as exc:
            # The lease runs out by itself; the next pass redoes what was not recorded.
            logger.warning("releasing the maintenance lease failed (%s)", type(exc).__name__)

    def stats(self) -> dict[str, Any]:
        return {**self._counters, **self._upkeep.counters}
