"""The LiveKit AgentServer of the companion: the database is made ready once per worker.

LiveKit runs each job in its own process (forked from a forkserver on Linux; `console` runs it
in a thread of the worker). Migrations are once-per-deployment work, so the worker applies
them before it starts taking jobs, and keeps its handle on the embedded Postgres (when
DATABASE_URL is unset) until it stops, so jobs join a running server. A job only checks that
the schema is current (`services.composition.build_services`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit.agents import AgentServer

from core.config import Settings, load_settings
from infrastructure.database import Database, open_migrated

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

    def prepare(self, settings: Settings) -> list[str]:
        """Open and migrate the database now, outside any event loop; the versions applied.

        Raises:
            CompanionError: the database cannot be reached, or a migration failed or changed.
        """
        database, applied = asyncio.run(open_migrated(settings))
        self._database = database
        return applied

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        if self._database is None:
            self._database, _ = await open_migrated(load_settings())
        try:
            await super().run(devmode=devmode, unregistered=unregistered)
        finally:
            database, self._database = self._database, None
            if database is not None:
                await database.aclose()
