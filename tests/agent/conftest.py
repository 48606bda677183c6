"""Fixtures for the agent tests: the whole service graph over real Postgres and Redis, with
OpenAI (chat, embeddings) replaced by the loopback stub, and helpers to drive AgentSessions.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from livekit.agents import AgentSession, stt
from livekit.agents.language import LanguageCode
from livekit.agents.stt import SpeechData, SpeechEvent, SpeechEventType
from livekit.agents.voice.run_result import RunResult

from agent import CompanionAgent
from core.config import Settings
from livekit_layer.companion_session import CompanionSession
from livekit_layer.session_open import open_session
from services.composition import Services, build_services
from services.people.onboarding_service import OnboardingData
from tests.support.background_replies import background_reply
from tests.support.openai_server import OpenAIStubServer
from tests.support.openai_text import echo_last_user_message

# Bounds a test that would otherwise hang; nothing is timed.
GIVE_UP_S = 120.0


class StubBrain:
    """A chat responder for the stub: routes background calls, then the test's own rules."""

    def __init__(self) -> None:
        self.background: Callable[[dict[str, Any]], Any] = background_reply
        self.replies: list[Any] = []

    def __call__(self, body: dict[str, Any]) -> Any:
        reply = self.background(body)
        if reply is not None:
            return reply
        if not body.get("stream"):
            # Background work (summaries, profile, consolidation) never takes scripted replies.
            return background_reply(body) or "Noted."
        if self.replies:
            step = self.replies.pop(0)
            return step(body) if callable(step) else step
        return echo_last_user_message(body) or "Hello!"


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStubServer]:
    async with OpenAIStubServer() as server:
        server.brain = StubBrain()  # type: ignore[attr-defined]
        server.chat_script = server.brain  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def agent_settings(make_settings, db_dsn: str, redis_server, stub: OpenAIStubServer) -> Settings:
    return make_settings(
        database_url=db_dsn,
        redis_enabled=True,
        redis_url=redis_server.url,
        openai_base_url=stub.base_url,
        openai_api_key="test-key",
        openai_max_retries=0,
        llm_model="stub-model",
        embedding_provider="openai",
        embedding_model="text-embedding-3-small",
        embedding_dimensions=384,
        batch_flush_interval_ms=20,
        rag_budget_ms=2_000,
    )


@pytest.fixture
async def services(agent_settings: Settings) -> AsyncIterator[Services]:
    built = await build_services(agent_settings)
    try:
        yield built
    finally:
        await built.aclose()


async def settle(services: Services) -> None:
    """Wait for background work (sessions closing after a hand-over, catching up on earlier
    sessions, embeddings, summaries, consolidations), then the batcher."""
    for _ in range(3):
        await asyncio.gather(*list(services.background), return_exceptions=True)
        await services.memory.drain()
        await services.conversations.drain()
        await services.consolidation.drain()
        await services.batcher.flush()


class NoAudioSTT(stt.STT):
    """A session needs an STT for the speech path; the agent's stt_node never uses it."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))

    async def _recognize_impl(self, buffer: Any, **kwargs: Any) -> stt.SpeechEvent:
        raise NotImplementedError("tests speak through SpokenCompanion.say")


class SpokenCompanion(CompanionAgent):
    """CompanionAgent whose STT node yields scripted transcripts instead of hearing audio."""

    def __init__(self, companion: CompanionSession) -> None:
        super().__init__(companion)
        self.heard: asyncio.Queue[str] = asyncio.Queue()

    async def stt_node(self, audio: Any, model_settings: Any) -> Any:
        while True:
            text = await self.heard.get()
            yield SpeechEvent(type=SpeechEventType.START_OF_SPEECH)
            yield SpeechEvent(
                type=SpeechEventType.FINAL_TRANSCRIPT,
                alternatives=[SpeechData(language=LanguageCode("en"), text=text)],
            )
            yield SpeechEvent(type=SpeechEventType.END_OF_SPEECH)


class Conversation:
    """One AgentSession with the companion, driven by typed (`type`) and spoken (`say`) turns."""

    def __init__(self, session: AgentSession[Any], agent: SpokenCompanion,
                 companion: CompanionSession) -> None:
        self.session = session
        self.agent = agent
        self.companion = companion
        self.replies: asyncio.Queue[str] = asyncio.Queue()
        self.greeting: Any = None
        session.on("conversation_item_added", self._on_item)

    def _on_item(self, event: Any) -> None:
        item = event.item
        if getattr(item, "type", None) == "message" and item.role == "assistant":
            self.replies.put_nowait(item.text_content or "")

    async def type(self, text: str) -> Any:
        result: RunResult[Any] = await self.session.run(user_input=text)
        self.replies = asyncio.Queue()
        return result

    async def say(self, text: str, *, give_up_s: float = GIVE_UP_S) -> str:
        """Speak a turn through the STT path; returns the companion's reply."""
        self.replies = asyncio.Queue()
        self.agent.heard.put_nowait(text)
        return await asyncio.wait_for(self.replies.get(), give_up_s)


async def start_conversation(
    services: Services,
    model: Any,
    *,
    user_id: uuid.UUID,
    onboarding: OnboardingData | None = None,
) -> Conversation:
    companion = await open_session(services, user_id=user_id, room="test-room",
                                   onboarding=onboarding)
    session: AgentSession[Any] = AgentSession(
        llm=model, stt=NoAudioSTT(), userdata=companion.user,
        turn_handling={"turn_detection": "stt"},
    )
    companion.attach(session, nudges=False)
    agent = SpokenCompanion(companion)
    conversation = Conversation(session, agent, companion)
    conversation.greeting = await session.start(agent, capture_run=True)
    return conversation


async def end_conversation(conversation: Conversation) -> None:
    await conversation.session.aclose()
    await conversation.companion.close(wait=True)


def chat_requests(server: OpenAIStubServer) -> list[dict[str, Any]]:
    """Bodies of the conversational chat calls (not summaries, profiles or consolidation)."""
    return [
        r.json for r in server.requests_to("/chat/completions")
        if r.json and r.json.get("stream")
    ]


def request_text(body: dict[str, Any]) -> str:
    return json.dumps(body.get("messages") or [], ensure_ascii=False)
