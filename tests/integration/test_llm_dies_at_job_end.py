"""The LLM dies or hangs while a job ends: the job still ends on its own, loses nothing, and
what the LLM could not do is done later.

A real job process (tests/support/talking_job.py: the real CompanionAgent in an AgentSession,
over the real services) has a conversation with the loopback OpenAI server, which runs in a
process of its own (tests/support/openai_process.py). The job gets SIGTERM and runs its end
(`end_job`: summary, consolidation, then the profile summary). Once the server has received
the consolidation's (or the profile's) request, it is killed (SIGKILL) or frozen (SIGSTOP).
LiveKit would kill the job 10 s after its SIGTERM; the harness does too, and the test checks
it did not have to. Then, with the server back, a maintenance pass or the person's next session
start finishes the work: memories from that session, the profile summary written by the LLM,
nothing left due.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from core.config import Settings
from infrastructure.connection_pool import ConnectionPool
from livekit_layer.session_open import open_session
from services.composition import Services, build_services
from tests.support.child_process import LIVEKIT_KILLS_AFTER_S, Child, start_child

pytestmark = pytest.mark.integration

TOKEN = "mk321a"
TURNS = (f"My neighbour {TOKEN} lends me her ladder", f"and {TOKEN} grows tomatoes")
# What the loopback LLM (markers.marker_brain) writes as the profile from those turns.
PROFILE_BY_LLM = f"Knows about: {TOKEN}."


class ModelServer:
    """The loopback OpenAI server's process: killed, frozen, and back."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.child: Child | None = None
        self.base_url = ""
        self.frozen = False

    async def start(self, *args: str) -> Child:
        self.child = await start_child(
            "tests.support.openai_process", list(args), self.log_dir / "openai.log"
        )
        self.base_url = (await self.child.wait_for("listening"))["base_url"]
        return self.child

    async def kill(self) -> None:
        assert self.child is not None
        await self.child.kill()

    def freeze(self) -> None:
        assert self.child is not None
        os.kill(self.child.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen and self.child is not None:
            os.kill(self.child.proc.pid, signal.SIGCONT)
            self.frozen = False

    async def back(self) -> None:
        """Answering again, at the address the job was given."""
        if self.frozen:
            self.thaw()
            return
        port = urlsplit(self.base_url).port
        await self.start("--port", str(port))

    async def aclose(self) -> None:
        self.thaw()
        if self.child is not None and self.child.proc.returncode is None:
            await self.child.kill()


@pytest.fixture
async def model_server(tmp_path: Path) -> AsyncIterator[ModelServer]:
    server = ModelServer(tmp_path)
    try:
        yield server
    finally:
        await server.aclose()


async def session_row(pool: ConnectionPool, session_id: uuid.UUID) -> Any:
    return await pool.fetchrow(
        "select s.ended_at, s.summary, s.consolidated_through, s.profile_due_at, "
        "(select max(created_at) from public.messages m where m.session_id = s.id "
        " and m.user_id = s.user_id) as last_message_at "
        "from public.sessions s where s.id = $1",
        session_id,
    )


async def stored_messages(pool: ConnectionPool, session_id: uuid.UUID) -> list[list[str]]:
    rows = await pool.fetch(
        "select role, content from public.messages where session_id = $1 order by created_at",
        session_id,
    )
    return [[r["role"], r["content"]] for r in rows]


async def memories_from(services: Services, user_id: uuid.UUID, session_id: uuid.UUID) -> list[str]:
    """The explicit memories consolidation saved from that session."""
    rows = await services.pool.fetch(
        "select value from public.memories where user_id = $1 and kind = 'explicit' "
        "and source ->> 'session_id' = $2",
        user_id, str(session_id),
    )
    return [r["value"] for r in rows]


async def end_a_job_while_the_llm_fails(
    db_dsn: str, tmp_path: Path, server: ModelServer, user_id: uuid.UUID, *, fault: str,
    stage: str,
) -> tuple[Child, dict[str, Any], int | None]:
    """A job talks, gets SIGTERM, and the LLM fails once `stage`'s request has arrived;
    returns the job, what it said it logged, and its exit code (None: LiveKit had to kill
    it)."""
    await server.start("--hold", stage)
    args = ["--dsn", db_dsn, "--spool", str(tmp_path / "spool"), "--openai-url",
            server.base_url, "--user-id", str(user_id)]
    for turn in TURNS:
        args += ["--say", turn]
    job = await start_child("tests.support.talking_job", args, tmp_path / "job.log")
    try:
        talked = await job.wait_for("talked")
        loop = asyncio.get_running_loop()
        job.proc.send_signal(signal.SIGTERM)
        signalled = loop.time()
        assert server.child is not None
        await server.child.wait_for("request", kind=stage, held=True)
        if fault == "kill":
            await server.kill()
        else:
            server.freeze()
        code = await job.exit_or_kill(LIVEKIT_KILLS_AFTER_S - (loop.time() - signalled))
    finally:
        if job.proc.returncode is None:
            await job.kill()
    return job, talked, code


@pytest.mark.parametrize(
    ("fault", "stage", "completed_by"),
    [
        ("kill", "consolidation", "maintenance"),
        ("hang", "consolidation", "next_session"),
        ("hang", "profile", "maintenance"),
    ],
)
async def test_an_llm_dying_at_a_jobs_end_lets_the_job_end_in_time_and_the_work_is_done_later(
    db_dsn: str, pool: ConnectionPool, tmp_path: Path, model_server: ModelServer,
    make_settings: Any, fault: str, stage: str, completed_by: str,
) -> None:
    user_id = uuid.uuid4()
    job, talked, code = await end_a_job_while_the_llm_fails(
        db_dsn, tmp_path, model_server, user_id, fault=fault, stage=stage
    )

    # It ended by itself, with its normal exit code: LiveKit's kill was not needed.
    assert code == 0, job.tail()
    done = await job.wait_for("done")
    assert done["after_session"]["left_for_later"] == 1, done
    assert done["after_session"]["finished"] == 0, done
    session_id = uuid.UUID(talked["session_id"])
    # Every message the job logged is in Postgres (the greeting, both turns, the replies).
    said = talked["messages"]
    assert [m for m in said if m[0] == "user"] == [["user", t] for t in TURNS]
    assert await stored_messages(pool, session_id) == said
    row = await session_row(pool, session_id)
    # The summary came before the LLM failed; what came after is recorded as not done.
    assert row["ended_at"] is not None and TOKEN in (row["summary"] or "")
    if stage == "consolidation":
        assert row["consolidated_through"] is None and row["profile_due_at"] is None
    else:
        assert row["consolidated_through"] == row["last_message_at"]
        assert row["profile_due_at"] is not None

    # The LLM is back; the work is finished by whichever comes first.
    await model_server.back()
    settings: Settings = make_settings(
        database_url=db_dsn, openai_base_url=model_server.base_url, openai_api_key="test-key",
        llm_model="stub-model", embedding_provider="openai",
        embedding_model="text-embedding-3-small", embedding_dimensions=384,
        # The person comes back later than a rejoin (which would continue that session).
        session_resume_grace_s=0,
    )
    later = await build_services(settings)
    try:
        companion_id = (await later.companions.resolve(user_id)).id
        if completed_by == "maintenance":
            report = await later.maintenance.run_pass()
            assert report["sessions"] == (1 if stage == "consolidation" else 0), report
            assert report["failed"] == 0 and report["profiles"] == 1, report
        else:
            opened = await open_session(later, user_id=user_id, room="next")
            assert opened.conversation.id != session_id
            await asyncio.gather(*list(later.background))
            assert later.after_session.stats()["caught_up"] == 1

        assert f"{TOKEN} came up" in await memories_from(later, user_id, session_id)
        profile = await later.users.profile_for(user_id, companion_id)
        assert profile is not None and profile.profile_summary == PROFILE_BY_LLM
        row = await session_row(later.pool, session_id)
        assert row["consolidated_through"] == row["last_message_at"]
        assert row["profile_due_at"] is None
        assert await later.consolidation.pending_sessions(limit=10, user_id=user_id) == []
        assert await later.profiles.due(limit=10, user_id=user_id) == []
    finally:
        await later.aclose()
