"""pgvector's text form <-> numpy float32 arrays, and the codec that makes asyncpg use it."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import numpy as np
import numpy.typing as npt


def encode_vector(value: Sequence[float] | npt.NDArray[np.floating]) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in value) + "]"


def decode_vector(text: str) -> npt.NDArray[np.float32]:
    if len(text) <= 2:
        return np.zeros(0, dtype=np.float32)
    return np.array(text[1:-1].split(","), dtype=np.float32)


async def register_vector_codec(conn: asyncpg.Connection) -> None:
    """Pool `init` hook: `vector` columns read as float32 arrays and accept sequences."""
    schema = await conn.fetchval(
        "select n.nspname from pg_type t join pg_namespace n on n.oid = t.typnamespace "
        "where t.typname = 'vector' limit 1"
    )
    if schema is not None:
        await conn.set_type_codec(
            "vector", schema=schema, encoder=encode_vector, decoder=decode_vector, format="text"
        )
