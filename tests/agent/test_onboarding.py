"""New people: set up from the app's onboarding data, or by a short first conversation."""

from __future__ import annotations

import json
import uuid

import pytest

from livekit_layer.session_open import open_session
from services.people.onboarding_service import OnboardingData
from tests.agent.conftest import end_conversation, start_conversation
from tests.support.scripted_llm import ScriptedLLM, system_texts

pytestmark = pytest.mark.agent

METADATA = json.dumps({
    "onboarding": {
        "name": "Margaret Lee",
        "address_as": "Maggie",
        "interests": ["climbing", "jazz"],
        "timezone": "Europe/Berlin",
        "companion": {"name": "Mira", "persona": "A calm gardener who loves tea.",
                      "character": "mentor"},
    }
})


def test_onboarding_data_is_read_from_metadata_json_and_string_attributes() -> None:
    data = OnboardingData.from_participant(METADATA, {"companion": "Ignored"})
    assert data == OnboardingData(
        name="Margaret Lee", preferred_name="Maggie", interests=("climbing", "jazz"),
        timezone="Europe/Berlin", companion="Mira",
        companion_persona="A calm gardener who loves tea.", companion_character="mentor",
    )
    from_attributes = OnboardingData.from_participant(
        None, {"name": "Tom", "interests": "chess, cooking", "companion": "Veda"}
    )
    assert from_attributes == OnboardingData(
        name="Tom", interests=("chess", "cooking"), companion="Veda"
    )


async def test_a_new_user_with_onboarding_data_is_set_up_from_it(services) -> None:
    user_id = uuid.uuid4()
    data = OnboardingData.from_participant(METADATA, None)

    session = await open_session(services, user_id=user_id, onboarding=data)

    assert session.created_now
    profile = session.profile
    assert (profile.display_name, profile.preferred_name, profile.interests, profile.timezone) == (
        "Margaret Lee", "Maggie", ("climbing", "jazz"), "Europe/Berlin",
    )
    assert profile.onboarding_state == "done"
    assert session.companion.name == "Mira"
    assert session.companion.persona == "A calm gardener who loves tea."
    instructions = session.instructions()
    assert "You are Mira" in instructions and "calm gardener" in instructions
    assert "Maggie" in instructions and "Getting to know them" not in instructions
    await session.close()


async def test_onboarding_data_does_not_overwrite_what_was_learned_later(services) -> None:
    user_id = uuid.uuid4()
    first = await open_session(
        services, user_id=user_id, onboarding=OnboardingData(name="Tom", interests=("chess",))
    )
    await first.update_profile(preferred_name="Tommy")
    await first.close()

    again = await open_session(
        services, user_id=user_id, onboarding=OnboardingData(name="Thomas", preferred_name="T")
    )
    assert (again.profile.display_name, again.profile.preferred_name) == ("Tom", "Tommy")
    await again.close()


async def test_without_data_the_first_conversation_asks_and_the_profile_tool_completes_it(
    services,
) -> None:
    user_id = uuid.uuid4()
    model = ScriptedLLM([
        "Hi, I'm Veda! What's your name?",
        {"tool": "update_profile", "args": {"name": "Priya", "preferred_name": None,
                                            "interests": ["painting"], "timezone": None}},
        "Lovely to meet you, Priya!",
    ])
    conversation = await start_conversation(services, model, user_id=user_id)

    greeting_system = "\n".join(system_texts(model.calls[0]))
    assert "Getting to know them" in greeting_system
    assert "their name" in greeting_system and "update_profile" in greeting_system
    assert "ask for it" in greeting_system
    profile = await services.users.get(user_id)
    assert profile is not None and profile.onboarding_state == "in_progress"

    await conversation.type("I'm Priya and I love painting")

    profile = await services.users.get(user_id)
    assert profile is not None
    assert (profile.display_name, profile.interests, profile.onboarding_state) == (
        "Priya", ("painting",), "done",
    )
    # The follow-up call already runs on the new instructions.
    after_tool = "\n".join(system_texts(model.calls[-1]))
    assert "Name: Priya" in after_tool and "Getting to know them" not in after_tool
    await end_conversation(conversation)


async def test_an_unknown_companion_without_a_persona_falls_back_to_the_default(services) -> None:
    session = await open_session(
        services, user_id=uuid.uuid4(), onboarding=OnboardingData(companion="Nobody")
    )
    assert session.companion.name == services.settings.default_companion_name
    await session.close()
