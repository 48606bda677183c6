"""Acting as a Supabase client: the `authenticated` role with the JWT claims PostgREST sets."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def as_authenticated(
    dsn: str, claims: dict[str, str] | None, *, form: str = "claims"
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction running as Supabase's `authenticated` role with these JWT claims.

    `form` "claims" sets `request.jwt.claims` (PostgREST 10+), anything else the older
    `request.jwt.claim.sub`; `auth.uid()` reads either.
    """
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("set local role authenticated")
            if claims is not None and form == "claims":
                await conn.execute(
                    "select set_config('request.jwt.claims', $1, true)", json.dumps(claims)
                )
            elif claims is not None:
                await conn.execute(
                    "select set_config('request.jwt.claim.sub', $1, true)", claims["sub"]
                )
            yield conn
    finally:
        await conn.close()


def claims_for(user_id: uuid.UUID) -> dict[str, str]:
    return {"sub": str(user_id), "role": "authenticated"}
