"""Calling another companion by name mid-session hands the session to it (issue 5).

"Luna, ..." said (or typed) to Veda: LiveKit hands off to a CompanionAgent for Luna with its
own session (conversation row, memories, mood, instructions), Luna answers the turn from her
context alone, and Veda's session closes properly in the background. The model is scripted;
everything else is the real service graph over real Postgres and Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from livekit.agents import tts
from livekit.agents.utils import is_given

from agent import CompanionAgent
from livekit_layer.companion_session import CompanionSession
from livekit_layer.session_open import open_session
from services.composition import Services
from services.people.companion_service import Companion
from tests.agent.conftest import (
    SpokenCompanion,
    end_conversation,
    settle,
    start_conversation,
)
from tests.agent.live import start_live
from tests.support.openai_server import OpenAIStubServer
from tests.support.scripted_llm import ScriptedLLM, all_text

pytestmark = pytest.mark.agent

TO_LUNA = "Luna, what do you remember about my telescope?"
# Only Veda's context holds these: her instructions, her memory, what was said to her.
VEDA_ONLY = ("You are Veda", "Galileo", "Rex", "Hi, I'm Veda!", "What a lovely dog!")
LUNA_ONLY = ("You are Luna", "night owl", "Dobsonian")


class SharedEars(SpokenCompanion):
    """SpokenCompanion whose successors hear from the same queue, as one microphone."""

    def __init__(
        self, companion: CompanionSession, heard: asyncio.Queue[str] | None = None
    ) -> None:
        super().__init__(companion)
        if heard is not None:
            self.heard = heard

    def successor(self, companion: CompanionSession) -> CompanionAgent:
        return SharedEars(companion, self.heard)


async def two_companions_with_memories(
    services: Services, user_id: uuid.UUID
) -> tuple[Companion, Companion]:
    """Veda (the default) and Luna, each remembering a different telescope."""
    await services.users.ensure(user_id)
    veda = await services.companions.resolve(user_id)
    luna = await services.companions.create(
        user_id, name="Luna", character="mentor", persona="A calm night owl who loves stars."
    )
    await services.memory.remember(
        user_id, veda.id, "FACT", "old_telescope", "a rusty Galileo telescope"
    )
    await services.memory.remember(user_id, luna.id, "FACT", "telescope", "a Dobsonian telescope")
    return veda, luna


def talking(conversation: Any) -> CompanionSession:
    agent = conversation.session.current_agent
    assert isinstance(agent, CompanionAgent)
    return agent.companion


async def messages_of(services: Services, session_id: uuid.UUID) -> list[tuple[str, str, str]]:
    rows = await services.pool.fetch(
        "select role, content, modality from messages where session_id = $1 "
        "order by created_at, role desc",
        session_id,
    )
    return [(r["role"], r["content"], r["modality"]) for r in rows]


async def test_a_typed_turn_calling_another_companion_hands_the_session_to_it(
    services: Services,
) -> None:
    user_id = uuid.uuid4()
    veda, luna = await two_companions_with_memories(services, user_id)
    model = ScriptedLLM([
        "Hi, I'm Veda!", "What a lovely dog!", "Your Dobsonian, of course!",
        {"tool": "remember", "args": {"category": "FACT", "key": "eyepiece",
                                      "value": "a new 10mm eyepiece"}},
        "Lovely.",
    ])
    conversation = await start_conversation(services, model, user_id=user_id)
    with_veda = conversation.companion
    await conversation.type("My dog is called Rex the beagle")
    # Talking about Luna is not calling her.
    assert with_veda.addressed("Luna is a lovely name, isn't it?") is None
    asked_before = len(model.calls)

    result = await conversation.type(TO_LUNA)

    result.expect.contains_agent_handoff()
    answer = result.expect.contains_message(role="assistant").event().item
    assert answer.text_content == "Your Dobsonian, of course!"
    # Veda was never asked; Luna's one request carries her context and none of Veda's.
    assert len(model.calls) == asked_before + 1
    seen = all_text(model.calls[-1])
    assert TO_LUNA in seen
    for luna_only in LUNA_ONLY:
        assert luna_only in seen
    for veda_only in VEDA_ONLY:
        assert veda_only not in seen
    with_luna = talking(conversation)
    assert with_luna.companion.id == luna.id
    assert with_luna.conversation.id != with_veda.conversation.id
    assert conversation.session.userdata == with_luna.user

    # Tools now write for Luna.
    await conversation.type("I bought a new 10mm eyepiece")
    assert "eyepiece" in {m.key for m in await services.memory.current(user_id, luna.id)}
    assert "eyepiece" not in {m.key for m in await services.memory.current(user_id, veda.id)}

    await end_conversation(conversation)
    await with_luna.close(wait=True)
    await settle(services)
    luna_messages = await messages_of(services, with_luna.conversation.id)
    assert luna_messages[:2] == [
        ("user", TO_LUNA, "text"), ("assistant", "Your Dobsonian, of course!", "text"),
    ]
    assert ("user", "I bought a new 10mm eyepiece", "text") in luna_messages
    veda_messages = await messages_of(services, with_veda.conversation.id)
    assert ("user", "My dog is called Rex the beagle", "text") in veda_messages
    assert not any("Luna" in text or "Dobsonian" in text for _, text, _ in veda_messages)
    # Veda's session was closed properly: ended and summarized.
    veda_row = await services.pool.fetchrow(
        "select ended_at, summary, companion_id from sessions where id = $1",
        with_veda.conversation.id,
    )
    assert veda_row is not None and veda_row["companion_id"] == veda.id
    assert veda_row["ended_at"] is not None and veda_row["summary"]


async def test_a_spoken_turn_calling_another_companion_hands_over_and_calling_back_returns(
    services: Services,
) -> None:
    user_id = uuid.uuid4()
    veda, luna = await two_companions_with_memories(services, user_id)
    model = ScriptedLLM(["Hi, I'm Veda!", "What a lovely dog!", "Your Dobsonian, of course!",
                         "Rex the beagle!"])
    conversation = await start_live(services, model, user_id=user_id, agent_cls=SharedEars)
    with_veda = conversation.companion
    assert await conversation.say("My dog is called Rex the beagle") == "What a lovely dog!"
    asked_before = len(model.calls)

    assert await conversation.say(TO_LUNA) == "Your Dobsonian, of course!"

    assert len(model.calls) == asked_before + 1
    seen = all_text(model.calls[-1])
    for luna_only in LUNA_ONLY:
        assert luna_only in seen
    for veda_only in VEDA_ONLY:
        assert veda_only not in seen
    with_luna = talking(conversation)
    assert with_luna.companion.id == luna.id

    # Calling Veda back: her conversation goes on (resumed), Luna's stays Luna's.
    assert await conversation.say("Veda, what is my dog called?") == "Rex the beagle!"
    seen = all_text(model.calls[-1])
    assert "You are Veda" in seen and "My dog is called Rex the beagle" in seen
    for luna_only in (*LUNA_ONLY, "Your Dobsonian, of course!", TO_LUNA):
        assert luna_only not in seen
    again = talking(conversation)
    assert again.companion.id == veda.id and again.conversation.resumed
    assert again.conversation.id == with_veda.conversation.id

    await end_conversation(conversation)
    await again.close(wait=True)
    await settle(services)
    assert await messages_of(services, with_luna.conversation.id) == [
        ("user", TO_LUNA, "voice"), ("assistant", "Your Dobsonian, of course!", "voice"),
    ]
    veda_messages = await messages_of(services, with_veda.conversation.id)
    assert [text for _, text, _ in veda_messages] == [
        "Hi, I'm Veda!", "My dog is called Rex the beagle", "What a lovely dog!",
        "Veda, what is my dog called?", "Rex the beagle!",
    ]
    # Each conversation's memories stay with its companion.
    for text, companion in ((TO_LUNA, luna), ("Your Dobsonian, of course!", luna),
                            ("Veda, what is my dog called?", veda)):
        logged = await services.pool.fetch(
            "select companion_id from memories where user_id = $1 and kind = 'episodic' "
            "and content = $2", user_id, text,
        )
        assert [r["companion_id"] for r in logged] == [companion.id], text


async def test_each_companion_speaks_with_its_own_voice_and_the_default_keeps_the_sessions(
    services: Services, stub: OpenAIStubServer
) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    veda = await services.companions.resolve(user_id)
    luna = await services.companions.create(user_id, name="Luna", voice="coral")
    veda_session = await open_session(services, user_id=user_id, companion=veda)
    luna_session = await open_session(services, user_id=user_id, companion=luna)
    try:
        # Veda has no voice of her own: the agent leaves the session's TTS in place.
        assert not is_given(CompanionAgent(veda_session).tts)
        luna_tts = CompanionAgent(luna_session).tts
        assert isinstance(luna_tts, tts.TTS)
        async with luna_tts.synthesize("Hello from Luna") as stream:
            await stream.collect()
        [spoken] = stub.requests_to("/v1/audio/speech")
        assert spoken.json["voice"] == "coral"
    finally:
        await veda_session.close(wait=True)
        await luna_session.close(wait=True)
