"""The whole companion over two sessions, with the real OpenAI LLM plugin against the stub.

Session 1: the user speaks (STT path) and types (session.run) facts; the model saves them with
the remember tool. Session 2 (a new AgentSession): the greeting builds on session 1, and the
model's context holds the facts. A second user sees none of it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from livekit.plugins import openai as lk_openai

from core.config import Settings
from core.prompts import MEMORY_CLOSE, MEMORY_OPEN
from services.composition import Services, build_services
from tests.agent.conftest import (
    chat_requests,
    end_conversation,
    request_text,
    settle,
    start_conversation,
)
from tests.support.background_replies import SUMMARY_MARK, system_prompt

pytestmark = pytest.mark.agent

SUMMARY = "They told you about their dog Rex and a job interview on Friday; they love climbing."


@pytest.fixture
async def fresh_sessions(agent_settings: Settings) -> AsyncIterator[Services]:
    """Services where every join starts a new session (no resume), as after a day apart."""
    built = await build_services(agent_settings.model_copy(update={"session_resume_grace_s": 0}))
    try:
        yield built
    finally:
        await built.aclose()


def real_llm(stub) -> lk_openai.LLM:
    return lk_openai.LLM(model="stub-model", base_url=stub.base_url, api_key="test-key")


def message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def summarize(body):
    if SUMMARY_MARK in system_prompt(body):
        return {"json": {"summary": SUMMARY, "follow_ups": [
            {"topic": "the job interview", "detail": "ask how it went", "due": None},
        ]}}
    return None


async def test_the_second_session_greets_with_session_one_and_knows_its_facts(
    fresh_sessions: Services, stub
) -> None:
    services = fresh_sessions
    user_id = uuid.uuid4()
    stub.brain.background = summarize
    stub.brain.replies = [
        "Hi! I'm Veda.",
        {"tool": "remember", "args": {"category": "PERSON", "key": "dog_name", "value": "Rex"}},
        "Rex is a great name!",
        {"tool": "remember",
         "args": {"category": "PREFERENCE", "key": "hobby", "value": "rock climbing"}},
        "Climbing, how exciting!",
    ]

    # --- session 1: one spoken and one typed turn, each saved by the model ---------------------
    first = await start_conversation(services, real_llm(stub), user_id=user_id)
    reply = await first.say("My dog is called Rex and I have a job interview on Friday")
    assert reply == "Rex is a great name!"
    typed = await first.type("I love rock climbing")
    typed.expect.contains_function_call(name="remember")
    typed.expect.contains_function_call_output(is_error=False)
    await end_conversation(first)
    await settle(services)

    companion_id = first.companion.companion.id
    saved = {(m.key, m.value) for m in await services.memory.current(user_id, companion_id)}
    assert saved == {("dog_name", "Rex"), ("hobby", "rock climbing")}

    # --- session 2: a new AgentSession for the same user ---------------------------------------
    stub.requests.clear()
    stub.brain.replies = ["Welcome back! How did the interview go?", "Your dog is Rex."]
    second = await start_conversation(services, real_llm(stub), user_id=user_id)
    assert second.companion.conversation.id != first.companion.conversation.id

    greeting_request = request_text(chat_requests(stub)[0])
    assert SUMMARY in greeting_request
    assert "the job interview (ask how it went)" in greeting_request
    assert "since you last talked" in greeting_request
    await services.batcher.flush()
    status = await services.pool.fetchval(
        "select status from follow_ups where user_id = $1 and topic = 'the job interview'", user_id
    )
    assert status == "raised"  # brought up in this greeting, so not raised again

    await second.type("What is my dog called?")
    messages = chat_requests(stub)[-1]["messages"]
    # Remembered facts come back as quoted background in a user-role note, never with the
    # authority of a system message; the question itself is the last thing the model reads.
    carrying = [m for m in messages if "dog name: Rex" in message_text(m)]
    assert [m["role"] for m in carrying] == ["user"]
    note = message_text(carrying[0])
    assert note.index(MEMORY_OPEN) < note.index("dog name: Rex") < note.index(MEMORY_CLOSE)
    assert messages[-1]["role"] == "user"
    assert message_text(messages[-1]) == "What is my dog called?"
    await end_conversation(second)

    # --- another user: none of it --------------------------------------------------------------
    stub.requests.clear()
    stub.brain.replies = ["Hi there, I'm Veda!", "I don't know yet."]
    stranger = await start_conversation(services, real_llm(stub), user_id=uuid.uuid4())
    await stranger.type("What is my dog called?")
    seen = " ".join(request_text(body) for body in chat_requests(stub))
    assert "Rex" not in seen and "climbing" not in seen and "interview" not in seen
    await end_conversation(stranger)


async def test_a_quick_reconnect_resumes_the_same_session_with_its_recent_turns(
    services: Services, stub
) -> None:
    user_id = uuid.uuid4()
    stub.brain.replies = ["Hi!", "Oh no, poor Tom."]
    first = await start_conversation(services, real_llm(stub), user_id=user_id)
    await first.type("My cat Tom is ill")
    await end_conversation(first)
    await settle(services)

    stub.requests.clear()
    stub.brain.replies = ["Welcome back!"]
    again = await start_conversation(services, real_llm(stub), user_id=user_id)

    assert again.companion.conversation.resumed
    assert again.companion.conversation.id == first.companion.conversation.id
    greeting = request_text(chat_requests(stub)[0])
    assert "My cat Tom is ill" in greeting and "Oh no, poor Tom." in greeting
    assert "welcome back" in greeting
    await end_conversation(again)
