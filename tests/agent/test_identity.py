"""Who a session is for: UUID identities only (any name in dev mode, mapped to a stable id),
the dev user in console, writes pinned to it."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from typing import Any
from unittest.mock import MagicMock

import pytest
from livekit.agents import AgentSession
from livekit.agents.voice.run_result import RunResult

from agent import CompanionAgent
from core.config import DEFAULT_DEV_USER_ID, PROJECT_ROOT
from core.errors import InvalidIdentity
from core.validators import parse_user_id
from livekit_layer.companion_session import SessionUser
from livekit_layer.session_open import open_session
from services.people.onboarding_service import OnboardingData
from services.people.user_service import dev_user_id_for, resolve_identity
from tests.support.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.agent


def test_a_room_participant_is_the_uuid_in_its_identity() -> None:
    user_id = uuid.uuid4()
    assert resolve_identity(
        str(user_id), console=False, dev_mode=False, dev_user_id=DEFAULT_DEV_USER_ID
    ) == user_id


def test_in_console_the_user_is_the_dev_user_whatever_the_participant_is_called() -> None:
    assert resolve_identity(
        "mock_user", console=True, dev_mode=True, dev_user_id=DEFAULT_DEV_USER_ID
    ) == DEFAULT_DEV_USER_ID


@pytest.mark.parametrize(
    "identity",
    ["mock_user", "", None, "42", "{12345678-1234-5678-1234-567812345678}",
     "12345678123456781234567812345678", "'; drop table users; --"],
)
def test_an_identity_that_is_not_a_canonical_uuid_is_refused_with_a_clear_message(
    identity: object,
) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        resolve_identity(identity, console=False, dev_mode=False, dev_user_id=DEFAULT_DEV_USER_ID)
    assert "UUID" in str(caught.value)


PLAYGROUND_IDENTITY = "voice_assistant_user_1234"
# Pinned: the id a dev identity stands for must never change, or a developer's companion
# would forget them. (uuid5 of the project's namespace and the identity.)
PLAYGROUND_USER = uuid.UUID("b15404fe-3920-518a-9181-bacecdc5c7bd")


def test_in_dev_mode_a_playground_identity_stands_for_the_same_user_on_every_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="services.people.user_service"):
        user_id = resolve_identity(
            PLAYGROUND_IDENTITY, console=False, dev_mode=True, dev_user_id=DEFAULT_DEV_USER_ID
        )
    assert user_id == PLAYGROUND_USER == dev_user_id_for(PLAYGROUND_IDENTITY)
    assert parse_user_id(str(user_id)) == user_id  # a real id, not a placeholder
    assert dev_user_id_for("voice_assistant_user_1235") != user_id
    [record] = caplog.records
    assert record.levelno == logging.WARNING and str(user_id) in record.getMessage()
    assert PLAYGROUND_IDENTITY not in record.getMessage()
    assert getattr(record, "pii.identity") == PLAYGROUND_IDENTITY


def test_another_process_maps_a_dev_identity_to_the_same_user() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from services.people.user_service import dev_user_id_for; "
         f"print(dev_user_id_for({PLAYGROUND_IDENTITY!r}))"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    assert done.stdout.strip() == str(PLAYGROUND_USER)


def test_outside_dev_mode_a_playground_identity_is_refused() -> None:
    with pytest.raises(InvalidIdentity, match="not a valid UUID"):
        resolve_identity(
            PLAYGROUND_IDENTITY, console=False, dev_mode=False, dev_user_id=DEFAULT_DEV_USER_ID
        )


@pytest.mark.parametrize(
    "identity",
    ["", "   ", "00000000-0000-0000-0000-000000000000", "12345678123456781234567812345678",
     "{12345678-1234-5678-1234-567812345678}"],
)
def test_in_dev_mode_an_empty_identity_or_a_placeholder_or_malformed_uuid_is_still_refused(
    identity: str,
) -> None:
    with pytest.raises(InvalidIdentity):
        resolve_identity(identity, console=False, dev_mode=True, dev_user_id=DEFAULT_DEV_USER_ID)


def test_in_dev_mode_a_uuid_identity_is_that_user() -> None:
    user_id = uuid.uuid4()
    assert resolve_identity(
        str(user_id), console=False, dev_mode=True, dev_user_id=DEFAULT_DEV_USER_ID
    ) == user_id


async def test_opening_a_session_for_a_non_uuid_writes_nothing(services) -> None:
    with pytest.raises(InvalidIdentity):
        await open_session(services, user_id="mock_user")  # type: ignore[arg-type]
    assert await services.pool.fetchval("select count(*) from users") == 0
    assert await services.pool.fetchval("select count(*) from sessions") == 0


def test_consoles_mock_metadata_and_attributes_are_ignored() -> None:
    assert OnboardingData.from_participant(MagicMock(), MagicMock()) is None
    assert OnboardingData.from_participant("not json", {}) is None
    assert OnboardingData.from_participant("", None) is None


async def test_a_tool_in_one_users_session_cannot_write_for_another_user(services) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    alice_session = await open_session(services, user_id=alice)
    bob_session = await open_session(services, user_id=bob)
    model = ScriptedLLM([
        "Hi!",
        {"tool": "remember", "args": {"category": "FACT", "key": "pet", "value": "cat"}},
        "Saved?",
        {"tool": "update_profile", "args": {"name": "Mallory", "preferred_name": None,
                                            "interests": None, "timezone": None}},
        "Saved?",
    ])
    # Alice's agent in a session whose identity is Bob's: the guard must refuse every write.
    session = AgentSession(llm=model, userdata=SessionUser(bob, bob_session.companion.id))
    await session.start(CompanionAgent(alice_session))

    result: RunResult[Any] = await session.run(user_input="remember my pet")
    output = next(e.item for e in result.events if e.type == "function_call_output")
    assert output.is_error and "another user" in output.output
    result = await session.run(user_input="call me Mallory")
    output = next(e.item for e in result.events if e.type == "function_call_output")
    assert output.is_error and "another user" in output.output
    await session.aclose()

    explicit = "select count(*) from memories where kind = 'explicit'"
    assert await services.pool.fetchval(explicit) == 0
    names = await services.pool.fetch("select display_name from users")
    assert [r["display_name"] for r in names] == [None, None]
    await alice_session.close()
    await bob_session.close()


async def test_tools_take_no_user_id_argument(services) -> None:
    companion = await open_session(services, user_id=uuid.uuid4())
    agent = CompanionAgent(companion)
    from livekit.agents.llm import ToolContext

    schemas = ToolContext(agent.tools).parse_function_tools("openai", strict=True)
    for schema in schemas:
        properties = schema["function"]["parameters"].get("properties", {})
        assert not {"user_id", "user", "companion_id"} & set(properties), schema["function"]["name"]
    await companion.close()
