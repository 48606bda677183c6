"""Start a conversation the way the worker does: nudges on, the worker's LLM retry options.

`tests/agent/conftest.py`'s `start_conversation` turns silence nudges off and uses the
framework's default connection options; these tests need the production wiring.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from livekit.agents import AgentSession

from livekit_layer.session_models import connect_options
from livekit_layer.session_open import open_session
from services.composition import Services
from services.people.onboarding_service import OnboardingData
from tests.agent.conftest import Conversation, NoAudioSTT, SpokenCompanion


async def start_live(
    services: Services,
    model: Any,
    *,
    user_id: uuid.UUID,
    onboarding: OnboardingData | None = None,
    nudges: bool = False,
    max_tool_steps: int = 3,
    on_session: Callable[[AgentSession[Any]], None] | None = None,
    agent_cls: type[SpokenCompanion] = SpokenCompanion,
) -> Conversation:
    """A conversation with the worker's session options; `on_session` sees the session
    before it starts (to subscribe to events such as the greeting)."""
    companion = await open_session(
        services, user_id=user_id, room="test-room", onboarding=onboarding
    )
    session: AgentSession[Any] = AgentSession(
        llm=model, stt=NoAudioSTT(), userdata=companion.user,
        turn_handling={"turn_detection": "stt"},
        conn_options=connect_options(services.settings),
        max_tool_steps=max_tool_steps,
    )
    companion.attach(session, nudges=nudges)
    if on_session is not None:
        on_session(session)
    agent = agent_cls(companion)
    conversation = Conversation(session, agent, companion)
    conversation.greeting = await session.start(agent, capture_run=True)
    return conversation


async def wait_until(predicate: Callable[[], bool], *, give_up_s: float = 120.0) -> None:
    """Poll `predicate` until it holds; fail after `give_up_s` (a hang guard, not a measure)."""

    async def poll() -> None:
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), give_up_s)
