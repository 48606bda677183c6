"""The profile summary: LLM-written from memories and sessions, short, with a plain fallback,
and kept per companion: each companion's summary comes from its own memories only."""

from __future__ import annotations

import uuid

import pytest

from core.errors import InvalidIdentity, InvalidInput
from services.memory.profile_service import profile_line
from services.people.user_service import MAX_PROFILE_SUMMARY_CHARS
from tests.support.background_replies import PROFILE_MARK, system_prompt

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
    stored = await services.users.profile_for(user_id, companion.id)
    assert stored is not None and stored.profile_summary == profile.profile_summary
    assert "Rex" in (profile_line(stored) or "")
    assert await services.pool.fetchval(
        "select profile_summary from companions where id = $1", companion.id
    ) == profile.profile_summary


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


async def test_a_due_summary_stays_due_until_the_llm_writes_it_and_a_list_never_replaces_it(
    services, stub
) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "FACT", "job", "baker")
    # What a consolidation of a session leaves: the companion's summary is due.
    await services.pool.execute(
        "insert into sessions (user_id, companion_id, summary, profile_due_at) "
        "values ($1, $2, 'They talked about bread.', now())",
        user_id, companion.id,
    )
    assert await services.profiles.due(limit=10) == [(user_id, companion.id)]

    stub.fail_next(1, status=500, path_prefix="/chat/completions")
    assert await services.profiles.refresh_if_due(user_id, companion.id) is False
    # No summary yet: the plain list stands in, and the summary stays due.
    assert await services.users.companion_summary(user_id, companion.id) == "job: baker"

    stub.brain.background = lambda body: (
        "A baker who talks about bread." if PROFILE_MARK in system_prompt(body) else None
    )
    assert await services.profiles.refresh_if_due(user_id, companion.id) is True
    assert await services.profiles.due(limit=10) == []
    written = "A baker who talks about bread."
    assert await services.users.companion_summary(user_id, companion.id) == written

    # Due again, and the LLM fails: the written summary stays (a list never replaces it).
    await services.pool.execute(
        "update sessions set profile_due_at = now() where user_id = $1", user_id
    )
    stub.fail_next(1, status=500, path_prefix="/chat/completions")
    assert await services.profiles.refresh_if_due(user_id, companion.id) is False
    assert await services.users.companion_summary(user_id, companion.id) == written


async def test_each_companion_keeps_its_own_summary_and_the_user_row_keeps_none(
    services, stub
) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    veda = await services.companions.resolve(user_id)
    luna = await services.companions.create(user_id, name="Luna")
    await services.users.update_profile(user_id, display_name="Margaret")
    await services.memory.remember(user_id, veda.id, "PERSON", "dog_name", "Rex")
    await services.memory.remember(user_id, luna.id, "FACT", "telescope", "a Dobsonian")
    await services.memory.remember(user_id, None, "FACT", "home_city", "Lisbon")
    stub.brain.background = lambda body: (
        "About: " + body["messages"][-1]["content"] if PROFILE_MARK in system_prompt(body)
        else None
    )

    await services.profiles.refresh(user_id, veda.id)
    await services.profiles.refresh(user_id, luna.id)

    for_veda = await services.users.profile_for(user_id, veda.id)
    for_luna = await services.users.profile_for(user_id, luna.id)
    assert for_veda is not None and for_luna is not None
    assert "Rex" in for_veda.profile_summary and "Dobsonian" not in for_veda.profile_summary
    assert "Dobsonian" in for_luna.profile_summary and "Rex" not in for_luna.profile_summary
    # Shared memories and the person's own fields reach both.
    assert "Lisbon" in for_veda.profile_summary and "Lisbon" in for_luna.profile_summary
    assert for_veda.display_name == for_luna.display_name == "Margaret"
    user_level = await services.users.get(user_id)
    assert user_level is not None and user_level.profile_summary is None
    assert await services.pool.fetchval(
        "select profile_summary from users where id = $1", user_id
    ) is None


async def test_the_summary_cannot_be_written_per_user_or_for_someone_elses_companion(
    services,
) -> None:
    user_id, stranger = uuid.uuid4(), uuid.uuid4()
    await services.users.ensure(user_id)
    await services.users.ensure(stranger)
    theirs = await services.companions.resolve(stranger)

    with pytest.raises(InvalidInput, match="per companion|one companion"):
        await services.users.update_profile(user_id, profile_summary="Likes tea.")
    with pytest.raises(InvalidIdentity):
        await services.users.set_companion_summary(user_id, theirs.id, "Likes tea.")
    assert await services.users.companion_summary(stranger, theirs.id) is None


def test_the_profile_line_is_compact_and_says_how_to_address_them() -> None:
    from datetime import UTC, datetime

    from services.people.user_service import UserProfile

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
