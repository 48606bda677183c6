"""`python agent.py ...` as a user runs it: clear messages instead of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.agent

ROOT = Path(__file__).resolve().parents[2]


def run_agent(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "LIVEKIT_", "UPLIFTAI_", "DATABASE_", "REDIS_"))
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "agent.py", *args], cwd=ROOT, env=clean, capture_output=True,
        text=True, timeout=timeout,
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
