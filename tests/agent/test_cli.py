"""`python agent.py ...` as a user runs it: clear messages instead of tracebacks."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from livekit.agents.telemetry.loop_monitor import LoopMonitorThresholds

from infrastructure import migrations
from livekit_layer.worker_server import CompanionServer
from livekit_layer.worker_start import prepare_cli

pytestmark = pytest.mark.agent

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
FOREIGN = ("OPENAI_", "LIVEKIT_", "UPLIFTAI_", "DATABASE_", "REDIS_", "SUPABASE_", "LOG_LEVEL")


def clean_env(**env: str) -> dict[str, str]:
    """The environment without the developer's settings, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    clean.update(env)
    return clean


def run_agent(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "agent.py", *args], cwd=ROOT, env=clean_env(**env),
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize("command", ["console", "dev", "start"])
def test_without_an_llm_configured_it_stops_at_once_and_says_what_to_set(command: str) -> None:
    done = run_agent(command)
    assert done.returncode == 2
    assert "OPENAI_API_KEY" in done.stderr and "OPENAI_BASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["dev", "start"])
def test_serving_rooms_without_a_livekit_server_says_what_to_set(command: str) -> None:
    done = run_agent(command, OPENAI_API_KEY="sk-test")
    assert done.returncode == 2
    assert "LIVEKIT_URL" in done.stderr and "Traceback" not in done.stderr


def test_an_invalid_setting_is_named_in_one_message_without_a_traceback() -> None:
    done = run_agent("console", LOG_LEVEL="LOUD", OPENAI_API_KEY="sk-test")
    assert done.returncode == 2
    assert "LOG_LEVEL" in done.stderr and "Traceback" not in done.stderr
    assert "sk-test" not in done.stderr


def test_download_files_needs_no_llm_and_succeeds_offline() -> None:
    done = run_agent("download-files", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_supabase_keys_without_database_url_stop_the_start_naming_the_string_to_copy() -> None:
    done = run_agent(
        "console", OPENAI_API_KEY="sk-test", SUPABASE_URL="https://abcd.supabase.co",
        SUPABASE_SERVICE_ROLE_KEY="service-role-secret",
    )
    assert done.returncode == 2
    assert "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are set" in done.stderr
    assert "Project Settings > Database > Connection string" in done.stderr
    assert "service-role-secret" not in done.stderr and "Traceback" not in done.stderr


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def worker_log_until_connect_fails(
    log_level: str, database_url: str, command: tuple[str, ...] = ("agent.py", "dev")
) -> list[str]:
    """`agent.py dev` (or `command`) against a LiveKit URL that refuses connections: the
    levels of the log lines it prints up to and including its first "failed to connect"
    warning."""
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"ws://127.0.0.1:{refusing.getsockname()[1]}"
        env = clean_env(
            OPENAI_API_KEY="sk-test", LOG_LEVEL=log_level, LIVEKIT_URL=url,
            LIVEKIT_API_KEY="devkey", LIVEKIT_API_SECRET="a-secret-of-at-least-32-characters",
            DATABASE_URL=database_url,
        )
        worker = subprocess.Popen(
            [sys.executable, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )
        levels: list[str] = []
        try:
            assert worker.stdout is not None
            for line in worker.stdout:
                words = ANSI.sub("", line).split()
                level = next((w for w in words[:5] if w in LEVELS), None)
                if level is not None:
                    levels.append(level)
                if "failed to connect to livekit" in line:
                    return levels
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    raise AssertionError(f"the worker exited before trying to connect; it logged {levels}")


@pytest.mark.parametrize(
    ("log_level", "shown", "hidden"),
    [("WARNING", {"WARNING"}, {"DEBUG", "INFO"}),
     ("INFO", {"INFO", "WARNING"}, {"DEBUG"}),
     ("DEBUG", {"DEBUG", "INFO", "WARNING"}, set())],
)
def test_log_level_is_the_level_of_the_worker_logs(
    log_level: str, shown: set[str], hidden: set[str], db_dsn: str
) -> None:
    levels = set(worker_log_until_connect_fails(log_level, db_dsn))
    assert shown <= levels and not levels & hidden


async def ledger_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("select count(*) from companion_schema_migrations"))
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "command",
    [("agent.py", "dev"),
     # LiveKit's own launcher (what `lk agent` runs) finds agent.server and calls its run().
     ("-m", "livekit.agents", "start", "agent.py", "--dev")],
)
def test_a_worker_migrates_a_fresh_database_once_at_its_start_before_it_takes_jobs(
    empty_db: str, command: tuple[str, ...]
) -> None:
    worker_log_until_connect_fails("INFO", empty_db, command)
    assert asyncio.run(ledger_count(empty_db)) == len(migrations.discover())


@pytest.mark.parametrize("command", ["start", "dev", "console"])
def test_a_worker_whose_database_cannot_be_reached_stops_at_once_and_says_so(
    command: str,
) -> None:
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        done = run_agent(
            command, OPENAI_API_KEY="sk-test", LIVEKIT_URL="ws://127.0.0.1:9",
            LIVEKIT_API_KEY="devkey", LIVEKIT_API_SECRET="a-secret-of-at-least-32-characters",
            DATABASE_URL=f"postgresql://postgres:hunter2@127.0.0.1:{port}/companion",
        )
    assert done.returncode == 2
    assert "the database is not ready: could not connect to Postgres" in done.stderr
    assert "DATABASE_URL" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_help_for_a_worker_command_does_not_open_the_database() -> None:
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        done = run_agent(
            "start", "--help", OPENAI_API_KEY="sk-test", LIVEKIT_URL="ws://127.0.0.1:9",
            DATABASE_URL=f"postgresql://postgres@127.0.0.1:{refusing.getsockname()[1]}/x",
        )
    assert done.returncode == 0, done.stderr
    assert "--log-level" in done.stdout and "database" not in done.stderr


@pytest.mark.parametrize(
    ("env", "warn_s"),
    [({}, 0.25), ({"LOOP_BLOCK_WARN_MS": "400"}, 0.4), ({"LOOP_BLOCK_WARN_MS": "0"}, None),
     ({"LOOP_BLOCK_WARN_MS": "400", "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS": "100"}, 0.1)],
)
def test_the_job_loop_monitor_threshold_is_the_setting_unless_livekits_own_variable_is_set(
    env: dict[str, str], warn_s: float | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("LOOP_BLOCK_WARN_MS", "LOG_LEVEL", "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS",
                 "LIVEKIT_LOG_LEVEL", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.setenv(name, "")  # so that teardown restores what prepare_cli sets
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    prepare_cli(["agent.py", "download-files"], CompanionServer())
    # As the worker's job processes, which inherit the environment, read it.
    thresholds = LoopMonitorThresholds.from_env()
    assert (thresholds.warn if thresholds is not None else None) == warn_s
