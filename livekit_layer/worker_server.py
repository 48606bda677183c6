"""The LiveKit AgentServer of the companion: the database is made ready once per worker, and
the worker runs the memory maintenance pass.

LiveKit runs each job in its own process (forked from a forkserver on Linux; `console` runs it
in a thread of the worker). Migrations are once-per-deployment work, so the worker applies
them before it starts taking jobs, and keeps its handle on the embedded Postgres (when
DATABASE_URL is unset) until it stops, so jobs join a running server. A job only checks that
the schema is current (`services.composition.build_services`). Maintenance (crash recovery,
profile summaries left due, decay, merges, contradictions) is once-per-worker work too
(`maintenance_schedule`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit.agents import AgentServer

from core.config import Settings, load_settings
from infrastructure.database import Database, open_migrated
from livekit_layer.maintenance_schedule import MaintenanceSchedule

logger = logging.getLogger(__name__)


class CompanionServer(AgentServer):
    """An AgentServer whose `run` first opens and migrates the database, once per worker.

    `python agent.py ...` calls `prepare` before the CLI starts, so a database that cannot be
    reached or migrated stops it with one message and exit code 2; a worker started another
    way (`python -m livekit.agents start agent.py`, `lk agent ...`) prepares in `run`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._database: Database | None = None
        self._settings: Settings | None = None

    def prepare(self, settings: Settings) -> list[str]:
        """Open and migrate the database now, outside any event loop; the versions applied.

        Raises:
            CompanionError: the database cannot be reached, or a migration failed or changed.
        """
        database, applied = asyncio.run(open_migrated(settings))
        self._database, self._settings = database, settings
        return applied

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        settings = self._settings or load_settings()
        if self._database is None:
            self._database, _ = await open_migrated(settings)
        maintenance = MaintenanceSchedule.from_settings(settings)
        if maintenance is not None:
            maintenance.start()
        try:
            await super().run(devmode=devmode, unregistered=unregistered)
        finally:
            if maintenance is not None:
                await maintenance.aclose()
            database, self._database = self._database, None
            if database is not None:
                await database.aclose()
