"""Which database errors are worth retrying: the same statement may work once the server or
the network is back."""

from __future__ import annotations

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base

from core.errors import StorageUnavailable

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    # Raised when a server shutdown kills a connection mid-statement. (Not InterfaceError:
    # its subclass DataError is a bad argument, which no retry can fix.)
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.ConnectionFailureError,
)

# Client-side asyncpg errors that subclass InterfaceError (so look transient) but are about the
# arguments or the setup: retrying the same call cannot help.
_CLIENT_MISTAKES: tuple[type[BaseException], ...] = (
    asyncpg_base.DataError,
    asyncpg_base.ClientConfigurationError,
    asyncpg_base.UnsupportedClientFeatureError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether the same write may succeed later, unchanged."""
    if isinstance(exc, StorageUnavailable):
        # ConnectionPool wraps driver errors; judge by the original one when it is kept.
        if exc.__cause__ is None:
            return exc.retryable
        return is_transient(exc.__cause__)
    if isinstance(exc, _CLIENT_MISTAKES):
        return False
    return isinstance(exc, TRANSIENT_DB_ERRORS)


def error_name(exc: BaseException) -> str:
    """The type name to count and log: the driver's error when the pool wrapped one."""
    if isinstance(exc, StorageUnavailable) and exc.__cause__ is not None:
        return type(exc.__cause__).__name__
    return type(exc).__name__
