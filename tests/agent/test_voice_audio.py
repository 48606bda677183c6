"""The companion heard and spoken through real audio: what a person says by voice in one session
is known in the next.

espeak-ng speaks each turn into the session's audio input, in the form a room delivers it for
the product (`room_options`: 16 kHz, so nothing in the job resamples it); Silero VAD (from its
wheel) cuts it; the real livekit OpenAI STT plugin uploads it to the loopback OpenAI server,
which checks the WAV holds that utterance before answering its text; the real CompanionAgent
remembers through the scripted model's `remember` tool (real Postgres, real Redis); the real
OpenAI TTS plugin fetches each reply's audio (espeak-ng again) and the session plays it to its
audio output.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit.agents import AgentSession
from livekit.agents.vad import VAD
from livekit.agents.voice import room_io
from livekit.plugins import silero

from agent import CompanionAgent
from core.config import Settings
from core.prompts import MEMORY_CLOSE, MEMORY_OPEN
from livekit_layer.session_models import build_session, room_options
from livekit_layer.session_open import open_session
from services.composition import Services, build_services
from tests.agent.conftest import StubBrain, chat_requests, settle
from tests.support.audio_io import Loudspeaker, Microphone, Playback
from tests.support.openai_audio import SPEECH_SAMPLE_RATE
from tests.support.openai_server import OpenAIStubServer
from tests.support.speech import Utterance, speak

pytestmark = pytest.mark.agent

TELL = "My dog's name is Rex."
ASK = "What is my dog called?"
GREETING = "Hi, I'm Veda."
WELCOME_BACK = "Good to hear you again."
SAVED = "Rex is a lovely name."
ANSWER = "Your dog is called Rex."
# Silero's defaults, given explicitly because the transcription check depends on them.
VAD_PREFIX_S = 0.5
VAD_MIN_SILENCE_S = 0.55
# The audio the VAD hands to STT is the utterance's sound plus at most the padding it keeps
# before speech and the silence it waits out after it, plus a few 32 ms inference windows for
# the smoothed speech probability to cross its thresholds: 0.3 s covers that with room.
VAD_EXTRA_S = VAD_PREFIX_S + VAD_MIN_SILENCE_S + 0.3
TURN_TIMEOUT_S = 30.0  # a hang guard, not a measure


def room_audio() -> room_io.AudioInputOptions:
    """The form in which a room delivers the session's audio: what the product asks for."""
    audio = room_options().audio_input
    assert isinstance(audio, room_io.AudioInputOptions)
    return audio


@pytest.fixture
async def fresh_sessions(agent_settings: Settings) -> AsyncIterator[Services]:
    """Services where every join starts a new session (no resume), as after a day apart."""
    built = await build_services(agent_settings.model_copy(update={"session_resume_grace_s": 0}))
    try:
        yield built
    finally:
        await built.aclose()


@pytest.fixture
def vad() -> VAD:
    return silero.VAD.load(
        prefix_padding_duration=VAD_PREFIX_S, min_silence_duration=VAD_MIN_SILENCE_S
    )


class VoiceCall:
    """One session with the companion over audio: a microphone in, a loudspeaker out."""

    def __init__(self, session: AgentSession[Any], companion: Any) -> None:
        self.session = session
        self.companion = companion
        self.microphone = Microphone(frame_s=room_audio().frame_size_ms / 1000)
        self.loudspeaker = Loudspeaker()
        self.replies: asyncio.Queue[str] = asyncio.Queue()
        session.input.audio = self.microphone
        session.output.audio = self.loudspeaker
        self.listening = asyncio.Event()
        session.on("conversation_item_added", self._on_item)
        session.on("agent_state_changed", self._on_state)

    def _on_state(self, event: Any) -> None:
        if event.new_state == "listening":
            self.listening.set()
        else:
            self.listening.clear()

    def _on_item(self, event: Any) -> None:
        item = event.item
        if getattr(item, "type", None) == "message" and item.role == "assistant":
            self.replies.put_nowait(item.text_content or "")

    async def heard(self) -> tuple[str, Playback]:
        """What the companion says next, as text and as played audio, once it listens again."""
        async with asyncio.timeout(TURN_TIMEOUT_S):
            reply = await self.replies.get()
            played = await self.loudspeaker.played.get()
            # Spoken to before then, the session would hear silence (its echo guard).
            await self.listening.wait()
        return reply, played

    async def say(self, utterance: Utterance) -> tuple[str, Playback]:
        """Speak into the microphone; the companion's reply, as text and as played audio."""
        self.microphone.say(utterance)
        return await self.heard()


async def start_call(services: Services, vad: VAD, user_id: uuid.UUID) -> VoiceCall:
    companion = await open_session(services, user_id=user_id, room="voice-room")
    session = build_session(companion, vad)
    companion.attach(session, nudges=False)
    call = VoiceCall(session, companion)
    await session.start(CompanionAgent(companion))
    return call


async def end_call(call: VoiceCall) -> None:
    call.microphone.close()
    await call.session.aclose()
    await call.companion.close(wait=True)


def espeak_voice(stub: OpenAIStubServer) -> None:
    async def render(text: str) -> bytes:
        return (await speak(text, sample_rate=SPEECH_SAMPLE_RATE)).pcm

    stub.speech.voice = render


def assert_played(played: Playback, stub: OpenAIStubServer, text: str) -> None:
    """The loudspeaker got exactly the audio the speech endpoint made for `text` (then only
    the silence that pads the last frame), at OpenAI's rate, uninterrupted."""
    [sent] = [s.pcm for s in stub.speech.spoken if s.text == text]
    assert {f.sample_rate for f in played.frames} == {SPEECH_SAMPLE_RATE}
    assert played.pcm[: len(sent)] == sent
    assert not any(played.pcm[len(sent) :])
    assert not played.interrupted


async def test_a_fact_said_by_voice_is_known_when_asked_by_voice_in_the_next_session(
    fresh_sessions: Services, stub: OpenAIStubServer, vad: VAD
) -> None:
    services = fresh_sessions
    user_id = uuid.uuid4()
    espeak_voice(stub)
    rate = room_audio().sample_rate
    tell, ask = await speak(TELL, sample_rate=rate), await speak(ASK, sample_rate=rate)
    stub.transcriptions.register(tell, ask)
    stub.transcriptions.max_extra_s = VAD_EXTRA_S
    brain: StubBrain = stub.brain  # type: ignore[attr-defined]
    brain.replies = [
        GREETING,
        {"tool": "remember", "args": {"category": "PERSON", "key": "dog_name", "value": "Rex"}},
        SAVED,
        WELCOME_BACK,
        ANSWER,
    ]

    # --- session 1: the fact, said by voice, is saved ------------------------------------------
    first = await start_call(services, vad, user_id)
    assert_played((await first.heard())[1], stub, GREETING)
    reply, played = await first.say(tell)
    assert reply == SAVED
    assert_played(played, stub, SAVED)
    await end_call(first)
    await settle(services)
    companion_id = first.companion.companion.id
    saved = await services.memory.current(user_id, companion_id)
    assert [(m.key, m.value) for m in saved] == [("dog_name", "Rex")]
    logged = await services.pool.fetch(
        "select role, content, modality from messages where session_id = $1 and role = 'user'",
        first.companion.conversation.id,
    )
    assert [tuple(r) for r in logged] == [("user", TELL, "voice")]

    # --- session 2: asked by voice, the model's context carries it -----------------------------
    second = await start_call(services, vad, user_id)
    assert second.companion.conversation.id != first.companion.conversation.id
    assert_played((await second.heard())[1], stub, WELCOME_BACK)
    reply, played = await second.say(ask)
    await end_call(second)

    assert reply == ANSWER
    assert_played(played, stub, ANSWER)
    asked = chat_requests(stub)[-1]["messages"]
    assert asked[-1] == {"role": "user", "content": ASK}  # the transcript of the question
    # What is remembered comes right before it, quoted in a user-role note, never as system.
    note = asked[-2]
    assert note["role"] == "user"
    assert "dog name: Rex" in note["content"].split(MEMORY_OPEN, 1)[1].split(MEMORY_CLOSE, 1)[0]
    assert not any("Rex" in m["content"] for m in asked if m["role"] == "system")
    # The server heard each utterance once, as the VAD cut it from the microphone's audio, at
    # the rate the room delivers it.
    assert [(h.text, h.sample_rate, h.channels) for h in stub.transcriptions.heard] == [
        (TELL, 16_000, 1), (ASK, 16_000, 1),
    ]
