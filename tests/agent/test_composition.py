"""The composition root: one build, one close that drains before it disconnects."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from pydantic import SecretStr

from core.errors import EmbeddingDimensionMismatch, SchemaBehind
from infrastructure import migrations
from livekit_layer.session_open import open_session
from services.composition import build_services

pytestmark = pytest.mark.integration


async def connections_to(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "select count(*) from pg_stat_activity where datname = current_database() "
            "and pid <> pg_backend_pid()"
        ))
    finally:
        await conn.close()


async def test_closing_drains_queued_writes_before_the_pool_closes(agent_settings, db_dsn) -> None:
    services = await build_services(agent_settings.model_copy(
        update={"batch_flush_interval_ms": 60_000}
    ))
    session = await open_session(services, user_id=uuid.uuid4())
    services.conversations.add_message(session.conversation, "user", "written at close")

    await services.aclose()
    await services.aclose()  # a second close is harmless

    conn = await asyncpg.connect(db_dsn)
    try:
        content = await conn.fetchval(
            "select content from messages where session_id = $1", session.conversation.id
        )
    finally:
        await conn.close()
    assert content == "written at close"
    assert await connections_to(db_dsn) == 0


async def test_a_failed_start_closes_what_it_had_opened(agent_settings, db_dsn) -> None:
    wrong = agent_settings.model_copy(update={"embedding_dimensions": 1536})
    with pytest.raises(EmbeddingDimensionMismatch):
        await build_services(wrong)
    assert await connections_to(db_dsn) == 0



async def test_a_job_on_a_schema_that_is_behind_fails_with_what_to_run_and_migrates_nothing(
    agent_settings, behind_dsn
) -> None:
    behind = agent_settings.model_copy(update={"database_url": SecretStr(behind_dsn)})
    with pytest.raises(SchemaBehind) as caught:
        await build_services(behind)
    assert "python manage.py migrate" in str(caught.value)
    assert await connections_to(behind_dsn) == 0
    conn = await asyncpg.connect(behind_dsn)
    try:
        recorded = await conn.fetchval("select count(*) from companion_schema_migrations")
    finally:
        await conn.close()
    assert recorded == len(migrations.discover()) - 1
