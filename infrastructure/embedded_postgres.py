"""The embedded Postgres 16 + pgvector (PyPI `pgserver`) used when DATABASE_URL is unset.

pgserver keeps a list of the processes using a data directory and an inter-process lock, so
several LiveKit job processes can share one server; the last one to leave stops it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import StorageUnavailable

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

logger = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Handle on a pgserver instance; `dsn` is a unix-socket connection string."""

    def __init__(self, server: PostgresServer, data_dir: Path) -> None:
        self._server = server
        self.data_dir = data_dir

    @classmethod
    async def start(cls, data_dir: Path) -> EmbeddedPostgres:
        data_dir = await asyncio.to_thread(_prepare, data_dir)
        try:
            from pgserver.postgres_server import get_server
        except ImportError as exc:
            raise StorageUnavailable(
                "the embedded Postgres needs the pgserver package",
                suggestion="run scripts/setup.sh, or set DATABASE_URL to your Postgres",
                retryable=False,
            ) from exc
        try:
            server = await asyncio.to_thread(get_server, data_dir, cleanup_mode="stop")
        except Exception as exc:
            raise StorageUnavailable(
                f"the embedded Postgres in {data_dir} did not start: {exc}",
                suggestion=f"see {data_dir / 'log'}; delete {data_dir} to start empty",
                retryable=False,
            ) from exc
        logger.info("embedded postgres ready in %s", data_dir)
        return cls(server, data_dir)

    @property
    def dsn(self) -> str:
        return self._server.get_uri()

    async def aclose(self) -> None:
        # Releases this process's handle; pgserver stops the server when no process holds one.
        await asyncio.to_thread(self._server.cleanup)


def _prepare(data_dir: Path) -> Path:
    """The absolute data directory, its parent created (the server creates the directory)."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return data_dir
