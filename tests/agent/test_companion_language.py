"""A companion's language and reply length shape it: the instructions the model gets, the
language its speech-to-text listens for, and what its OpenAI voice is told."""

from __future__ import annotations

import uuid

import pytest
from livekit import rtc
from livekit.agents import stt, tts

from agent import CompanionAgent
from livekit_layer.session_models import build_llm
from livekit_layer.session_open import open_session
from livekit_layer.session_prompts import REPLY_LENGTHS
from services.composition import Services
from services.people.companion_service import RESPONSE_LENGTHS
from services.people.onboarding_service import OnboardingData
from tests.agent.conftest import chat_requests, end_conversation, start_conversation
from tests.support.background_replies import system_prompt
from tests.support.openai_server import OpenAIStubServer

pytestmark = pytest.mark.agent


def test_every_response_length_a_companion_may_have_has_words_in_the_instructions() -> None:
    assert set(REPLY_LENGTHS) == set(RESPONSE_LENGTHS)


@pytest.mark.parametrize(
    ("language", "length", "spoken"),
    [("ur", "long", "Speak Urdu only"), ("pt-BR", "medium", "Speak Portuguese (pt-BR) only"),
     ("fil", "short", "Speak the language with code fil only")],
)
async def test_the_model_is_told_the_companions_language_and_reply_length(
    services: Services, stub: OpenAIStubServer, language: str, length: str, spoken: str
) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    await services.companions.resolve(user_id)
    await services.companions.create(
        user_id, name="Mira", language=language, response_length=length
    )
    conversation = await start_conversation(
        services, build_llm(services), user_id=user_id,
        onboarding=OnboardingData(companion="Mira"),
    )
    await conversation.type("hello there")
    await end_conversation(conversation)
    [turn] = [b for b in chat_requests(stub) if "hello there" in str(b["messages"])]
    instructions = system_prompt(turn)
    assert spoken in instructions
    assert f"Reply length: {REPLY_LENGTHS[length]}." in instructions
    assert "Speak English" not in instructions


async def test_the_default_companion_speaks_english_briefly(
    services: Services, stub: OpenAIStubServer
) -> None:
    conversation = await start_conversation(
        services, build_llm(services), user_id=uuid.uuid4()
    )
    await conversation.type("hello there")
    await end_conversation(conversation)
    [turn] = [b for b in chat_requests(stub) if "hello there" in str(b["messages"])]
    assert "Speak English only" in system_prompt(turn)
    assert f"Reply length: {REPLY_LENGTHS['short']}." in system_prompt(turn)


async def companion_agent(
    services: Services, *, language: str, voice: str | None = None
) -> CompanionAgent:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    await services.companions.resolve(user_id)
    companion = await services.companions.create(
        user_id, name="Mira", language=language, voice=voice
    )
    return CompanionAgent(await open_session(services, user_id=user_id, companion=companion))


@pytest.mark.parametrize(
    ("language", "sent"), [("ur", "ur"), ("pt-BR", "pt"), ("en", "en"), ("fil", None)]
)
async def test_speech_to_text_is_sent_the_companions_language(
    services: Services, stub: OpenAIStubServer, language: str, sent: str | None
) -> None:
    agent = await companion_agent(services, language=language)
    try:
        assert isinstance(agent.stt, stt.STT)
        second_of_silence = rtc.AudioFrame.create(16_000, 1, 16_000)
        await agent.stt.recognize(second_of_silence)
    finally:
        await agent.companion.close(wait=True)
    [request] = stub.requests_to("/v1/audio/transcriptions")
    assert request.form is not None
    assert request.form.get("language") == sent  # None: no two-letter code, the STT detects it


async def test_the_openai_voice_of_an_urdu_companion_is_told_to_speak_urdu(
    services: Services, stub: OpenAIStubServer
) -> None:
    agent = await companion_agent(services, language="ur")
    try:
        assert isinstance(agent.tts, tts.TTS)
        async with agent.tts.synthesize("Assalam o alaikum") as stream:
            await stream.collect()
    finally:
        await agent.companion.close(wait=True)
    [request] = stub.requests_to("/v1/audio/speech")
    assert request.json["input"] == "Assalam o alaikum"
    assert request.json["instructions"] == "Speak Urdu with a native accent."


async def test_an_english_companion_with_its_own_openai_voice_gets_no_language_instructions(
    services: Services, stub: OpenAIStubServer
) -> None:
    # English is what OpenAI TTS speaks unless told otherwise; the voice alone is the change.
    agent = await companion_agent(services, language="en", voice="coral")
    try:
        assert isinstance(agent.tts, tts.TTS)
        async with agent.tts.synthesize("Hello") as stream:
            await stream.collect()
    finally:
        await agent.companion.close(wait=True)
    [request] = stub.requests_to("/v1/audio/speech")
    assert request.json["voice"] == "coral"
    assert "instructions" not in request.json
