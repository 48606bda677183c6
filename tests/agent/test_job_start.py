"""The real entrypoint at a job's start, in a LiveKit JobContext over LiveKit's own mock room
(its participant is "mock_user", as the Playground's are names, not UUIDs): who it lets in
in dev mode and with `start`, and what it does on a database whose schema is behind."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest
from livekit.agents import JobExecutorType, JobProcess
from livekit.agents.ipc.mock_room import create_mock_room
from livekit.agents.job import JobAcceptArguments, JobContext, RunningJobInfo
from livekit.protocol import agent as agent_proto
from livekit.protocol import models
from pydantic import SecretStr

from agent import entrypoint
from core.config import Settings
from services.people.user_service import dev_user_id_for

pytestmark = pytest.mark.agent


class NoInference:
    async def do_inference(self, method: str, data: bytes) -> bytes | None:
        raise NotImplementedError("no local inference in this test")


def room_job(settings: Settings, shutdowns: list[str]) -> JobContext:
    """A room job (not console's fake one) whose process was prewarmed with `settings`."""
    room = create_mock_room()
    proc = JobProcess(executor_type=JobExecutorType.THREAD, user_arguments=None, http_proxy=None)
    proc.userdata["settings"] = settings
    info = RunningJobInfo(
        accept_arguments=JobAcceptArguments(identity="agent", name="", metadata=""),
        job=agent_proto.Job(id="job-1", room=models.Room(name="playground", sid="RM_1"),
                            type=agent_proto.JobType.JT_ROOM),
        url="", token="", worker_id="w", fake_job=False,
    )
    return JobContext(proc=proc, info=info, room=room, on_connect=lambda: None,
                      on_shutdown=shutdowns.append, inference_executor=NoInference())


async def rows(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"select count(*) from {table}"))
    finally:
        await conn.close()


async def test_outside_dev_mode_a_participant_named_like_the_playground_is_refused(
    agent_settings: Settings, db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIVEKIT_DEV_MODE", raising=False)  # `python agent.py start`
    shutdowns: list[str] = []
    await entrypoint(room_job(agent_settings, shutdowns))
    assert len(shutdowns) == 1 and shutdowns[0].startswith("invalid identity:")
    assert await rows(db_dsn, "users") == 0


async def test_a_job_on_a_schema_that_is_behind_stops_saying_to_run_migrate(
    agent_settings: Settings, behind_dsn: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Dev mode: the participant's name is accepted (mapped), so the job goes on to its services.
    monkeypatch.setenv("LIVEKIT_DEV_MODE", "1")
    behind = agent_settings.model_copy(update={"database_url": SecretStr(behind_dsn)})
    shutdowns: list[str] = []
    with caplog.at_level(logging.WARNING):
        await entrypoint(room_job(behind, shutdowns))
    assert len(shutdowns) == 1
    assert shutdowns[0].startswith("cannot start: the database schema is behind")
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "run `python manage.py migrate`" in error.getMessage()
    mapped: list[Any] = [r for r in caplog.records if getattr(r, "pii.identity", None)]
    assert [r.getMessage() for r in mapped] == [
        f"dev mode: the participant identity is not a UUID; it stands for user "
        f"{dev_user_id_for('mock_user')} (`python agent.py start` refuses such an identity)"
    ]
    assert await rows(behind_dsn, "users") == 0
