"""scripts/check_imports.py: import loops and imports up the layers fail, with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT
from scripts.check_imports import check

pytestmark = pytest.mark.unit


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_project_has_no_import_loops_and_its_imports_point_down() -> None:
    assert check(PROJECT_ROOT) == []


def test_a_loop_dodged_with_a_function_local_import_is_reported_with_both_lines(
    tmp_path: Path,
) -> None:
    root = tree(tmp_path, {
        "services/__init__.py": '"""Services."""\n',
        "services/a.py": "from services.b import helper\n",
        "services/b.py": """\
            def helper():
                from services.a import thing
                return thing
            """,
    })
    [finding] = check(root)
    assert "import loop between 2 modules: services.a -> services.b -> services.a" in finding
    assert "services/a.py:1 (services.a -> services.b)" in finding
    assert "services/b.py:2 (services.b -> services.a)" in finding


def test_a_package_that_imports_its_own_modules_closes_a_loop(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "rag_system/__init__.py": "from rag_system.engine import Engine\n",
        "rag_system/engine.py": "from rag_system.search import search\nclass Engine: ...\n",
        "rag_system/search.py": "from rag_system import terms\ndef search(): ...\n",
        "rag_system/terms.py": "",
    })
    [finding] = check(root)
    assert finding.startswith("rag_system/__init__.py:1: import loop between 3 modules")


def test_retrieval_importing_a_service_is_named_with_its_line(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "services/__init__.py": "",
        "services/memory.py": "class Memory: ...\n",
        "rag_system/__init__.py": "",
        "rag_system/scoring.py": "import math\n\nfrom services.memory import Memory\n",
    })
    assert check(root) == [
        "rag_system/scoring.py:3: rag_system.scoring imports services.memory: rag_system may "
        "import only core, infrastructure, itself (rag_system)"
    ]


@pytest.mark.parametrize("part", ["core", "infrastructure", "rag_system", "services"])
def test_livekit_below_the_livekit_layer_is_refused(tmp_path: Path, part: str) -> None:
    root = tree(tmp_path, {
        f"{part}/__init__.py": "",
        f"{part}/glue.py": "from typing import TYPE_CHECKING\n"
                           "if TYPE_CHECKING:\n    from livekit.agents import llm\n",
    })
    [finding] = check(root)
    assert finding.startswith(f"{part}/glue.py:3: {part}.glue imports livekit: only")


def test_the_livekit_layer_may_use_everything_below_it_but_not_the_agent(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "agent.py": "from livekit_layer.session import open_session\n",
        "uplift_tts.py": "from core.config import Settings\n",
        "core/__init__.py": "", "core/config.py": "class Settings: ...\n",
        "services/__init__.py": "", "services/users.py": "from core.config import Settings\n",
        "livekit_layer/__init__.py": "",
        "livekit_layer/session.py": """\
            from livekit.agents import llm
            from services.users import Settings
            from uplift_tts import build_tts
            def open_session():
                from agent import CompanionAgent
            """,
    })
    findings = check(root)
    assert findings[0].startswith(
        "livekit_layer/session.py:5: livekit_layer.session imports agent: livekit_layer may "
        "import only core, infrastructure, rag_system, services, uplift_socket, uplift_tts"
    )
    assert len(findings) == 2 and "import loop" in findings[1]


def test_operator_commands_may_use_the_services_and_livekit_api_but_not_the_agent_side(
    tmp_path: Path,
) -> None:
    root = tree(tmp_path, {
        "manage.py": "from ops.token import COMMAND\n",
        "agent.py": "",
        "services/__init__.py": "", "services/users.py": "",
        "livekit_layer/__init__.py": "", "livekit_layer/job.py": "",
        "ops/__init__.py": "",
        "ops/token.py": """\
            from livekit.api import AccessToken
            from livekit import api
            from services.users import dev_user_id_for
            from livekit.agents import AgentSession
            from livekit_layer.job import end_job
            COMMAND = None
            """,
    })
    findings = check(root)
    assert len(findings) == 2, findings
    assert findings[0].startswith(
        "ops/token.py:4: ops.token imports livekit.agents.AgentSession: the operator commands "
        "may import only livekit.api of livekit"
    )
    assert findings[1].startswith(
        "ops/token.py:5: ops.token imports livekit_layer.job: ops may import only core, "
        "infrastructure, rag_system, services"
    )
