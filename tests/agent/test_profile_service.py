"""The profile summary: LLM-written from memories and sessions, short, with a plain fallback."""

from __future__ import annotations

import uuid

import pytest

from services.profile_service import profile_line
from services.user_service import MAX_PROFILE_SUMMARY_CHARS
from tests.agent.conftest import PROFILE_MARK, system_prompt

pytestmark = pytest.mark.integration


async def test_refresh_writes_the_llm_summary_from_memories_and_session_notes(
    services, stub
) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "PERSON", "dog_name", "Rex")
    await services.pool.execute(
        "insert into sessions (user_id, companion_id, summary) values ($1, $2, $3)",
        user_id, companion.id, "They practised for a job interview.",
    )
    stub.brain.background = lambda body: (
        "Owns a dog named Rex; preparing for a job interview."
        if PROFILE_MARK in system_prompt(body) else None
    )

    profile = await services.profiles.refresh(user_id, companion.id)

    assert profile is not None
    assert profile.profile_summary == "Owns a dog named Rex; preparing for a job interview."
    request = [r.json for r in stub.requests_to("/chat/completions")][-1]
    material = request["messages"][1]["content"]
    assert "dog name: Rex" in material and "job interview" in material
    stored = await services.users.get(user_id)
    assert stored is not None and stored.profile_summary == profile.profile_summary
    assert "Rex" in (profile_line(stored) or "")


async def test_an_overlong_llm_summary_is_cut_to_the_limit(services, stub) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "FACT", "job", "baker")
    stub.brain.background = (
        lambda body: "word " * 400 if PROFILE_MARK in system_prompt(body) else None
    )

    profile = await services.profiles.refresh(user_id, companion.id)

    assert profile is not None and profile.profile_summary is not None
    assert len(profile.profile_summary) <= MAX_PROFILE_SUMMARY_CHARS // 2


async def test_without_an_llm_the_summary_lists_the_most_important_facts(services, stub) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "FACT", "job", "baker")
    stub.fail_next(5, status=500, path_prefix="/chat/completions")

    profile = await services.profiles.refresh(user_id, companion.id)

    assert profile is not None and profile.profile_summary == "job: baker"
    assert services.profiles.stats()["refreshed_fallback"] == 1


async def test_a_scheduled_refresh_runs_in_the_background_once_per_user(services, stub) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "FACT", "job", "baker")

    services.profiles.schedule_refresh(user_id, companion.id)
    services.profiles.schedule_refresh(user_id, companion.id)
    assert services.profiles.stats()["pending_tasks"] == 1
    await services.profiles.drain()

    profile = await services.users.get(user_id)
    assert profile is not None and profile.profile_summary
    assert services.profiles.stats()["refreshed_by_llm"] == 1


def test_the_profile_line_is_compact_and_says_how_to_address_them() -> None:
    from datetime import UTC, datetime

    from services.user_service import UserProfile

    profile = UserProfile(
        id=uuid.uuid4(), display_name="Margaret", preferred_name="Maggie", timezone=None,
        interests=("climbing", "jazz"), profile_summary="Has a beagle.",
        onboarding_state="done", created_at=datetime.now(UTC), last_seen_at=None,
    )
    line = profile_line(profile)
    assert line == (
        "Name: Margaret (likes to be called Maggie). Interests: climbing, jazz. Has a beagle."
    )
    assert profile_line(None) is None
