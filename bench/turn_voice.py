"""Spoken turns for the turn-overhead benchmark: end of speech -> reply starts, for a plain
agent and for the companion, each in its own AgentSession on the speech path.

No audio is heard: each agent's `stt_node` yields the final transcript of the text it is given,
so the framework's own endpointing, turn handling and LLM call run as in a call.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

from livekit.agents import Agent, AgentSession, stt
from livekit.agents.language import LanguageCode

from agent import CompanionAgent
from bench.common import percentiles
from bench.synthetic_turns import turn_texts
from livekit_layer.companion_session import CompanionSession
from livekit_layer.session_open import open_session
from services.composition import Services
from tests.support.scripted_llm import ScriptedLLM


class _NoAudioSTT(stt.STT):
    """The speech path needs an STT; the agents' stt_node replaces what it would hear."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))

    async def _recognize_impl(self, buffer: Any, **kwargs: Any) -> stt.SpeechEvent:
        raise NotImplementedError


async def _heard(queue: asyncio.Queue[str]) -> AsyncIterator[stt.SpeechEvent]:
    while True:
        text = await queue.get()
        yield stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH)
        yield stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text)],
        )
        yield stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH)


class _PlainVoiceAgent(Agent):
    """The baseline: the same voice turn with no memory work at all."""

    def __init__(self) -> None:
        super().__init__(instructions="You are Veda, a close friend.")
        self.heard: asyncio.Queue[str] = asyncio.Queue()

    def stt_node(self, audio: Any, model_settings: Any) -> Any:
        return _heard(self.heard)


class _VoiceCompanion(CompanionAgent):
    def __init__(self, companion: CompanionSession) -> None:
        super().__init__(companion)
        self.heard: asyncio.Queue[str] = asyncio.Queue()

    def stt_node(self, audio: Any, model_settings: Any) -> Any:
        return _heard(self.heard)


class _VoiceRun:
    """One AgentSession on the speech path; `say` returns the reply's e2e latency in ms."""

    def __init__(self, agent: _PlainVoiceAgent | _VoiceCompanion, userdata: Any) -> None:
        self.agent = agent
        self.session: AgentSession[Any] = AgentSession(
            llm=ScriptedLLM(fallback="I see, tell me more."), stt=_NoAudioSTT(),
            turn_handling={"turn_detection": "stt"}, userdata=userdata,
        )
        self.latencies: asyncio.Queue[float] = asyncio.Queue()
        self.session.on("conversation_item_added", self._on_item)

    def _on_item(self, event: Any) -> None:
        item = event.item
        if getattr(item, "role", None) == "assistant" and "e2e_latency" in item.metrics:
            self.latencies.put_nowait(item.metrics["e2e_latency"] * 1000)

    async def say(self, text: str) -> float:
        self.agent.heard.put_nowait(text)
        return await asyncio.wait_for(self.latencies.get(), timeout=30)


async def measure_voice(services: Services, user_id: uuid.UUID, turns: int) -> dict:
    """Spoken turns, end of speech -> reply starts, for a plain agent and for the companion.

    The companion starts the memory lookup on the final transcript, while turn detection
    still waits (endpointing); the LLM call then finds the block ready.
    """
    rng = random.Random(11)
    companion = await open_session(services, user_id=user_id, room="bench-voice")
    ours = _VoiceRun(_VoiceCompanion(companion), companion.user)
    companion.attach(ours.session, nudges=False)
    base = _VoiceRun(_PlainVoiceAgent(), None)
    await ours.session.start(ours.agent)
    await base.session.start(base.agent)
    base_ms: list[float] = []
    ours_ms: list[float] = []
    for i, text in enumerate(turn_texts(turns + 5, rng)):
        plain, with_memory = await base.say(text), await ours.say(text)
        if i >= 5:
            base_ms.append(plain)
            ours_ms.append(with_memory)
        await services.memory.drain()
        await services.batcher.flush()
    await ours.session.aclose()
    await base.session.aclose()
    await companion.close(wait=False)
    return {"baseline": percentiles(base_ms), "ours": percentiles(ours_ms)}
