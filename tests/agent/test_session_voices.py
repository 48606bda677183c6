"""Each companion speaks with its own voice, whichever TTS provider is primary, and every voice
is closed once its companion has left the session or the job has ended.

The Uplift AI and OpenAI servers are the loopback ones (Socket.IO and REST); the sessions are
the worker's (`build_session`, `SessionVoices`, `end_job`) with the real CompanionAgent over
real Postgres and Redis, speaking into a test loudspeaker.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit.agents import AgentSession, tts
from livekit.agents.utils import is_given
from livekit.plugins import silero
from pydantic import SecretStr

from agent import CompanionAgent
from core.config import Settings, TTSProvider
from livekit_layer.companion_session import CompanionSession
from livekit_layer.job import end_job
from livekit_layer.session_models import build_session
from livekit_layer.session_open import open_session
from livekit_layer.session_voices import SessionVoices
from services.composition import Services, build_services
from services.people.companion_service import Companion
from tests.agent.conftest import StubBrain
from tests.support.audio_io import Loudspeaker
from tests.support.openai_server import OpenAIStubServer
from tests.support.uplift_server import UpliftStubServer

pytestmark = pytest.mark.agent

UPLIFT_KEY = "sk_api_uplift_voices_test"
LUNA_VOICE = "v_luna0001"
SOCKET_TIMEOUT_S = 20.0  # a hang guard, not a measure


@pytest.fixture
async def uplift() -> AsyncIterator[UpliftStubServer]:
    async with UpliftStubServer(api_key=UPLIFT_KEY) as server:
        yield server


@pytest.fixture
def uplift_settings(agent_settings: Settings, uplift: UpliftStubServer) -> Settings:
    """Uplift AI primary (its key is set), OpenAI TTS (the stub) its fallback."""
    return agent_settings.model_copy(
        update={"upliftai_api_key": SecretStr(UPLIFT_KEY), "upliftai_base_url": uplift.url}
    )


@pytest.fixture
async def uplift_services(uplift_settings: Settings) -> AsyncIterator[Services]:
    built = await build_services(uplift_settings)
    try:
        yield built
    finally:
        await built.aclose()


async def veda_and(services: Services, user_id: uuid.UUID, **luna: Any) -> Companion:
    """Veda (the default companion, no voice of her own) and Luna, created with `luna`."""
    await services.users.ensure(user_id)
    await services.companions.resolve(user_id)
    return await services.companions.create(user_id, name="Luna", **luna)


async def own_voice(services: Services, companion: Companion) -> tuple[tts.TTS, CompanionSession]:
    talking = await open_session(services, user_id=companion.user_id, companion=companion)
    voice = CompanionAgent(talking).tts
    assert isinstance(voice, tts.TTS)
    return voice, talking


def speech_voices(stub: OpenAIStubServer) -> list[str]:
    return [r.json["voice"] for r in stub.requests_to("/audio/speech")]


async def falls_back_then_recovers(voice: tts.TTS, text: str) -> None:
    """Synthesize `text` while the first provider fails once; return when the adapter's probe
    of that provider (a background retry of the same text) has found it working again."""
    recovered = asyncio.Event()

    def on_change(event: Any) -> None:
        if event.available:
            recovered.set()

    voice.on("tts_availability_changed", on_change)
    await voice.synthesize(text).collect()
    await asyncio.wait_for(recovered.wait(), SOCKET_TIMEOUT_S)


async def test_each_companions_voice_closes_when_it_leaves_and_every_voice_when_the_job_ends(
    uplift_services: Services, stub: OpenAIStubServer, uplift: UpliftStubServer
) -> None:
    services = uplift_services
    user_id = uuid.uuid4()
    await veda_and(services, user_id, voice=LUNA_VOICE)
    brain: StubBrain = stub.brain  # type: ignore[attr-defined]
    brain.replies = ["Hi, I'm Veda.", "Luna here.", "Veda again.", "Luna once more."]
    opened = await open_session(services, user_id=user_id, room="voices-room")
    session: AgentSession[Any] = build_session(opened, silero.VAD.load())
    voices = SessionVoices(session)
    opened.attach(session, nudges=False)
    session.output.audio = Loudspeaker()

    async def open_sockets(count: int) -> None:
        await asyncio.wait_for(uplift.wait_for_open_connections(count), SOCKET_TIMEOUT_S)

    await session.start(CompanionAgent(opened), capture_run=True)
    # Veda speaks with the session's voice: one socket, Uplift's default voice.
    default_voice = services.settings.upliftai_voice_id
    await open_sockets(1)
    assert uplift.voices_on_open_connections() == {default_voice}

    await session.run(user_input="Luna, are you there?")
    await open_sockets(2)  # Luna's own voice has its own socket
    assert uplift.requests[-1] == {**uplift.requests[-1], "voiceId": LUNA_VOICE,
                                   "text": "Luna here."}

    await session.run(user_input="Veda, are you back?")
    await open_sockets(1)  # Luna left: her voice closed; the session's stays for Veda
    assert uplift.voices_on_open_connections() == {default_voice}
    assert uplift.requests[-1]["text"] == "Veda again."

    await session.run(user_input="Luna, one more thing.")
    await open_sockets(2)
    assert uplift.texts()[-1] == "Luna once more."

    await end_job(services, opened=opened, session=session, voices=voices)
    await open_sockets(0)
    assert len(uplift.connects) == 3  # the session's, and one for each time Luna came
    assert speech_voices(stub) == []  # Uplift never failed: OpenAI TTS was never asked


async def test_an_openai_voice_speaks_first_when_uplift_is_primary_and_uplift_is_its_fallback(
    uplift_services: Services, stub: OpenAIStubServer, uplift: UpliftStubServer
) -> None:
    services = uplift_services
    luna = await veda_and(services, uuid.uuid4(), voice="coral")
    voice, talking = await own_voice(services, luna)
    try:
        await voice.synthesize("Hello from Luna.").collect()
        stub.fail_next(status=400, path_prefix="/audio/speech", message="voice unavailable")
        await falls_back_then_recovers(voice, "Still me.")
    finally:
        await voice.aclose()
        await talking.close(wait=True)

    # Luna's voice, refused once (then probed back); the fallback is Uplift in the
    # deployment's Uplift voice, since Uplift cannot say "coral".
    said = [r.json["input"] for r in stub.requests_to("/audio/speech")]
    assert said == ["Hello from Luna.", "Still me.", "Still me."]
    assert speech_voices(stub) == ["coral", "coral", "coral"]
    assert [(r["text"], r["voiceId"]) for r in uplift.requests] == [
        ("Still me.", services.settings.upliftai_voice_id)
    ]


async def test_an_uplift_voice_speaks_first_when_openai_is_primary_and_openai_is_its_fallback(
    uplift_settings: Settings, stub: OpenAIStubServer, uplift: UpliftStubServer
) -> None:
    openai_first = uplift_settings.model_copy(update={"tts_provider": TTSProvider.OPENAI})
    services = await build_services(openai_first)
    try:
        luna = await veda_and(services, uuid.uuid4(), voice=LUNA_VOICE)
        voice, talking = await own_voice(services, luna)
        try:
            await voice.synthesize("Hello from Luna.").collect()
            uplift.fail_next(message="Voice not found", code=404)
            await falls_back_then_recovers(voice, "Still me.")
        finally:
            await voice.aclose()
            await talking.close(wait=True)
    finally:
        await services.aclose()

    # Luna's voice, refused once (then probed back).
    assert [(r["text"], r["voiceId"]) for r in uplift.requests] == [
        ("Hello from Luna.", LUNA_VOICE), ("Still me.", LUNA_VOICE), ("Still me.", LUNA_VOICE),
    ]
    # The fallback is OpenAI TTS in the deployment's OpenAI voice.
    assert speech_voices(stub) == [services.settings.tts_voice]
    await asyncio.wait_for(uplift.wait_for_open_connections(0), SOCKET_TIMEOUT_S)


async def test_an_uplift_voice_without_uplift_configured_keeps_the_sessions_voice_and_says_why(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="livekit_layer.session_models")
    luna = await veda_and(services, uuid.uuid4(), voice=LUNA_VOICE)
    talking = await open_session(services, user_id=luna.user_id, companion=luna)
    try:
        assert not is_given(CompanionAgent(talking).tts)
    finally:
        await talking.close(wait=True)
    [record] = caplog.records
    assert record.getMessage() == (
        "the companion's voice cannot be used; speaking with the session's voice"
    )
    assert "UPLIFTAI_API_KEY" in record.__dict__["suggestion"]
