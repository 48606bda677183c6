"""The embedded Postgres 16 + pgvector (PyPI `pgserver`) used when DATABASE_URL is unset.

pgserver keeps a list of the processes using a data directory and an inter-process lock, so
several LiveKit job processes can share one server; the last one to leave stops it. The worker
holds a handle from its start to its end, so jobs join a running server instead of starting
one. Within one process (console runs its job in a thread of the worker) handles are counted:
the server stays up until the last one in the process is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
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
        self._closed = False

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
            server = await asyncio.to_thread(_enter, get_server, data_dir)
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
        """Release this handle: the process leaves when its last handle is closed, and
        pgserver stops the server when no process is left. Closing twice is a no-op."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(_exit, self._server)


def _enter(get_server: Callable[..., PostgresServer], data_dir: Path) -> PostgresServer:
    # pgserver returns the same object for a data directory within one process; entering it
    # counts this handle, so one handle's close does not stop the server under another's feet.
    server = get_server(data_dir, cleanup_mode="stop")
    server.__enter__()  # type: ignore[no-untyped-call]
    return server


def _exit(server: PostgresServer) -> None:
    server.__exit__(None, None, None)  # type: ignore[no-untyped-call]


def _prepare(data_dir: Path) -> Path:
    """The absolute data directory, its parent created (the server creates the directory)."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return data_dir
