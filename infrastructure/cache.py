"""What services use to cache JSON values and count events, and the checks every backend makes.

Backends: `RedisCache` (redis_cache, with the in-process fallback) and `InProcessCache`
(in_process_cache).
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from core.errors import InvalidInput


@runtime_checkable
class Cache(Protocol):
    """What services use to cache JSON values and count fixed-window events."""

    async def get_json(self, key: str) -> Any | None: ...

    async def set_json(self, key: str, value: Any, ttl_s: int | None = None) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def incr(self, key: str, ttl_s: int) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


def encode_json(value: Any) -> str:
    """Serialize `value` as strict JSON, or raise InvalidInput saying what to pass instead."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"cache value is not JSON-serializable: {exc}",
            suggestion="pass dicts, lists, str, int, finite float, bool or None; convert "
            "UUIDs, datetimes and numpy values to str/float/list first",
        ) from None


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidInput(
            "cache key must be a non-empty string",
            suggestion="build keys like 'profile:<user_id>'",
        )


def check_ttl(ttl_s: float) -> None:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or ttl_s <= 0:
        raise InvalidInput(
            "cache ttl_s must be a positive number of seconds",
            suggestion="pass ttl_s >= 1, or None for the default TTL",
        )


def not_a_counter() -> InvalidInput:
    return InvalidInput(
        "incr used on a cache key that holds something other than an integer",
        suggestion="use a separate key (e.g. 'rate:<user_id>') for counters",
    )
