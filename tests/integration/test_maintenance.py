"""The memory maintenance pass over real Postgres, with the LLM as a loopback server: crash
recovery then profile summaries, one process at a time, no transaction across LLM calls, only
scopes with new memories checked; as `manage.py maintenance` and as the worker's schedule."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.config import PROJECT_ROOT, Settings
from livekit_layer.maintenance_schedule import MaintenanceSchedule
from services.composition import Services, build_services
from tests.support.background_replies import PROFILE_MARK, background_reply, system_prompt
from tests.support.openai_server import OpenAIStubServer

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
# Bounds a test that would otherwise hang; nothing is timed.
GIVE_UP_S = 300.0
FOREIGN = ("OPENAI_", "LIVEKIT_", "UPLIFTAI_", "DATABASE_", "REDIS_", "SUPABASE_", "LOG_LEVEL",
           "EMBEDDED_", "EMBEDDING_", "LLM_", "MAINTENANCE_", "CONSOLIDATION_")


def brain(body: dict[str, Any]) -> Any:
    """Consolidation finds the cat; the profile summary repeats its material."""
    if PROFILE_MARK in system_prompt(body):
        return "About them: " + body["messages"][-1]["content"]
    if body.get("response_format") and "[m1]" in body["messages"][-1]["content"]:
        return {"json": {"memories": [
            {"category": "PERSON", "key": "cat_name", "value": "Miso",
             "source_message_ids": ["m1"]},
        ]}}
    return background_reply(body) or "Noted."


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStubServer]:
    async with OpenAIStubServer(chat_script=brain) as server:
        yield server


@pytest.fixture
def settings_values(db_dsn: str, stub: OpenAIStubServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "database_url": db_dsn, "openai_base_url": stub.base_url, "openai_api_key": "test-key",
        "openai_max_retries": 0, "llm_model": "stub-model", "embedding_provider": "openai",
        "embedding_model": "text-embedding-3-small", "embedding_dimensions": 384,
        "redis_enabled": False, "batch_spool_dir": str(tmp_path / "spool"),
        "embedded_pg_dir": str(tmp_path / "pg"),
    }


@pytest.fixture
async def services(settings_values: dict[str, Any]) -> AsyncIterator[Services]:
    built = await build_services(Settings(_env_file=None, **settings_values))
    try:
        yield built
    finally:
        await built.aclose()


async def crashed_session(services: Services) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A session a job left when it died: never ended, silent for an hour, nothing distilled."""
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    session_id = uuid.uuid4()
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await services.pool.execute(
        "insert into public.sessions (id, user_id, companion_id, started_at, last_activity_at) "
        "values ($1, $2, $3, $4, $4)",
        session_id, user_id, companion.id, hour_ago,
    )
    await services.pool.execute(
        "insert into public.messages (session_id, user_id, companion_id, role, content, "
        "created_at) values ($1, $2, $3, 'user', 'My cat is called Miso.', $4)",
        session_id, user_id, companion.id, hour_ago,
    )
    return user_id, companion.id, session_id


async def test_a_pass_recovers_a_crashed_session_then_writes_the_profile_from_its_memories(
    services: Services, stub: OpenAIStubServer
) -> None:
    user_id, companion_id, session_id = await crashed_session(services)

    report = await services.maintenance.run_pass()

    assert report["skipped"] is False
    assert (report["sessions"], report["saved"], report["failed"]) == (1, 1, 0)
    assert (report["profiles"], report["profiles_left"]) == (1, 0)
    current = await services.memory.current(user_id, companion_id)
    assert [(m.key, m.value) for m in current] == [("cat_name", "Miso")]
    # The summary was written after the consolidation, from the memory it saved.
    summary = await services.users.companion_summary(user_id, companion_id)
    assert summary is not None and "cat name: Miso" in summary
    row = await services.pool.fetchrow(
        "select consolidated_through, profile_due_at from public.sessions where id = $1",
        session_id,
    )
    assert row is not None and row["consolidated_through"] is not None
    assert row["profile_due_at"] is None
    calls = len(stub.requests_to(CHAT))

    again = await services.maintenance.run_pass()

    assert (again["sessions"], again["profiles"]) == (0, 0)
    assert "decayed" not in again  # decay ran in the first pass; it runs at most hourly
    assert len(stub.requests_to(CHAT)) == calls


async def test_while_one_process_holds_the_pass_another_skips_it_until_the_lease_expires(
    services: Services,
) -> None:
    await services.pool.execute(
        "insert into public.maintenance_state (name, holder, lease_until) "
        "values ('memory', 'another worker', now() + interval '1 minute')"
    )
    assert await services.maintenance.run_pass() == {"skipped": True}

    # That worker died: its lease runs out and the pass is taken over.
    await services.pool.execute(
        "update public.maintenance_state set lease_until = now() - interval '1 second'"
    )
    report = await services.maintenance.run_pass()
    assert report["skipped"] is False
    state = await services.pool.fetchrow("select holder, last_pass_at from maintenance_state")
    assert state is not None and state["holder"] is None and state["last_pass_at"] is not None


async def test_no_transaction_is_open_while_the_pass_waits_for_the_llm(
    services: Services, stub: OpenAIStubServer
) -> None:
    await crashed_session(services)
    stub.hang_next(1, seconds=GIVE_UP_S, path_prefix=CHAT)

    running = asyncio.create_task(services.maintenance.run_pass())
    await asyncio.wait_for(stub.received(CHAT), GIVE_UP_S)
    database = await services.pool.fetchval("select current_database()")
    open_transactions = await services.pool.fetchval(
        "select count(*) from pg_stat_activity where datname = $1 "
        "and state like 'idle in transaction%'",
        database,
    )
    running.cancel()
    await asyncio.wait([running])

    assert open_transactions == 0


async def test_a_later_pass_checks_only_the_scopes_with_memories_added_since_the_last(
    services: Services,
) -> None:
    memory = services.memory
    old_user, new_user = uuid.uuid4(), uuid.uuid4()
    for user_id in (old_user, new_user):
        await services.users.ensure(user_id)
    # Checked by an earlier pass (an hour ago): not looked at again.
    await memory.remember(old_user, None, "PREFERENCE", "favorite_color", "blue")
    await memory.remember(old_user, None, "PREFERENCE", "favourite_color", "green")
    await services.pool.execute(
        "update public.memories set created_at = now() - interval '1 day' where user_id = $1",
        old_user,
    )
    await services.pool.execute(
        "insert into public.maintenance_state (name, decayed_at, upkeep_through) "
        "values ('memory', now(), now() - interval '1 hour')"
    )
    blue = await memory.remember(new_user, None, "PREFERENCE", "favorite_color", "blue")
    red = await memory.remember(new_user, None, "PREFERENCE", "favorit_color", "red")
    older = await memory.remember(new_user, None, "PREFERENCE", "favorite_food", "sushi")
    newer = await memory.remember(new_user, None, "PREFERENCE", "favourite_food", "Sushi")

    report = await services.maintenance.run_pass()

    assert (report["scopes"], report["merged"], report["contradictions"]) == (1, 1, 2)
    current = {m.id: m for m in await memory.current(new_user, None)}
    assert set(current) == {blue.id, red.id, newer.id} and older.id not in current
    assert current[blue.id].source["contradicts"] == [str(red.id)]
    assert current[red.id].source["contradicts"] == [str(blue.id)]
    assert not any(m.source.get("contradicts") for m in await memory.current(old_user, None))


def clean_environment(values: dict[str, Any]) -> dict[str, str]:
    """The process environment without the developer's settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update({k.upper(): str(v) for k, v in values.items()})
    return env


async def test_manage_maintenance_runs_one_pass_and_says_what_it_did(
    services: Services, settings_values: dict[str, Any], tmp_path: Path
) -> None:
    user_id, companion_id, _ = await crashed_session(services)

    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROJECT_ROOT / "manage.py"), "maintenance", cwd=tmp_path,
        env=clean_environment(settings_values), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), GIVE_UP_S)

    assert proc.returncode == 0, err.decode()
    line = out.decode().strip()
    assert line.startswith("maintenance pass: 1 session(s) consolidated (1 messages, "
                           "1 memories saved, 0 failed); 1 profile summary(ies) written"), line
    assert [m.key for m in await services.memory.current(user_id, companion_id)] == ["cat_name"]


async def test_the_workers_schedule_runs_a_pass_soon_after_the_worker_starts(
    services: Services, settings_values: dict[str, Any], tmp_path: Path
) -> None:
    user_id, companion_id, _ = await crashed_session(services)
    environment = [f"{k}={v}" for k, v in clean_environment(settings_values).items()]
    schedule = MaintenanceSchedule(
        first_delay_s=0, interval_s=GIVE_UP_S, timeout_s=GIVE_UP_S, cwd=tmp_path,
        command=["env", "-i", *environment, sys.executable, str(PROJECT_ROOT / "manage.py"),
                 "maintenance", "--json"],
    )
    waiting = asyncio.ensure_future(schedule.next_pass())
    schedule.start()
    try:
        code = await asyncio.wait_for(waiting, GIVE_UP_S)
    finally:
        await schedule.aclose()

    assert code == 0 and schedule.failures == 0
    assert [m.key for m in await services.memory.current(user_id, companion_id)] == ["cat_name"]
    assert await services.users.companion_summary(user_id, companion_id)
