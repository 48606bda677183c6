"""Job processes start with what their sessions need already imported.

LiveKit forks every job process from a forkserver that imported `agent.PRELOADED_MODULES`
once. Whatever a session's first turns import on top of that is imported on the job's event
loop, while the person waits for the greeting or a reply, in every job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.agent

ROOT = Path(__file__).resolve().parents[2]


def test_a_sessions_first_turns_import_nothing_the_forkserver_did_not() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.first_turn_imports"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported == [], f"add to agent.PRELOADED_MODULES: {imported}"
