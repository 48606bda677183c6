"""The `stack` the retrieval tests run on (test_retrieval*.py); a module that needs other
wiring defines its own `stack`, which takes precedence over this one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from infrastructure.connection_pool import ConnectionPool
from tests.support.memory_stack import memory_stack
from tests.support.openai_server import OpenAIStubServer
from tests.support.retrieval import RetrievalStack


@pytest.fixture
async def stack(pool: ConnectionPool, make_settings) -> AsyncIterator[RetrievalStack]:
    settings = make_settings()
    async with OpenAIStubServer() as server, memory_stack(
        pool=pool, settings=settings, server=server
    ) as built:
        retrieval = RetrievalStack.over(built)
        yield retrieval
        # Background work (word statistics, index loads) finishes before the pool closes.
        for engine, _ in retrieval.engines:
            await engine.aclose()
        # Each engine answered every search on the path it was built for, and none on the other.
        for engine, built_for in retrieval.engines:
            stats = engine.stats()
            used, other = ("local_searches", "sql_searches")
            if built_for == "sql":
                used, other = other, used
            assert (stats[used], stats[other]) == (stats["searches"], 0), built_for
