"""The memory quota through the real AgentSession: exact under concurrency, never filled by
talking, and a refusal that names what the person can do, which the model can then do.

The quota counts the explicit memories the person keeps (current values); the episodic log
(every turn) is bounded by retention instead (tests/integration/test_memory_retention.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit.plugins import openai as lk_openai

from core.config import Settings
from services.composition import Services, build_services
from tests.agent.conftest import chat_requests, end_conversation, settle, start_conversation
from tests.support.openai_server import OpenAIStubServer

pytestmark = pytest.mark.agent

QUOTA = 3


@pytest.fixture
async def quota_services(agent_settings: Settings) -> AsyncIterator[Services]:
    """A quota of 3 memories; the rate limits are far from being the reason for anything."""
    built = await build_services(agent_settings.model_copy(update={
        "memory_quota_per_user": QUOTA, "tool_calls_per_minute": 1_000,
        "memory_writes_per_minute": 1_000,
    }))
    try:
        yield built
    finally:
        await built.aclose()


def stub_model(stub: OpenAIStubServer) -> lk_openai.LLM:
    return lk_openai.LLM(model="stub-model", base_url=stub.base_url, api_key="test-key")


def save(key: str) -> dict[str, Any]:
    return {"tool": "remember", "args": {"category": "FACT", "key": key, "value": f"{key}!"}}


def outputs(result: Any) -> list[Any]:
    return [e.item for e in result.events if e.type == "function_call_output"]


async def current_explicit(services: Services, user_id: uuid.UUID) -> int:
    return int(await services.pool.fetchval(
        "select count(*) from public.memories where user_id = $1 and kind = 'explicit' "
        "and superseded_at is null", user_id,
    ))


async def a_user_with_memories(services: Services, count: int) -> tuple[uuid.UUID, uuid.UUID]:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    for i in range(count):
        await services.memory.remember(user_id, companion.id, "FACT", f"kept_{i}", f"value {i}")
    return user_id, companion.id


async def test_parallel_saves_at_the_quota_edge_accept_exactly_the_room_left(
    quota_services: Services, stub: Any
) -> None:
    user_id, _ = await a_user_with_memories(quota_services, 1)
    stub.brain.replies = ["Hi!", {"tools": [save(f"new_{i}") for i in range(8)]}, "Done."]
    conversation = await start_conversation(quota_services, stub_model(stub), user_id=user_id)
    result = await conversation.type("remember these eight things")
    saved = outputs(result)
    assert len(saved) == 8
    accepted = [o for o in saved if not o.is_error]
    refused = [o for o in saved if o.is_error]
    assert len(accepted) == QUOTA - 1, [o.output for o in saved]
    assert all(o.output.startswith(f"the memory is full: {QUOTA} of {QUOTA} ") for o in refused)
    assert await current_explicit(quota_services, user_id) == QUOTA
    await end_conversation(conversation)


async def test_sequential_saves_stop_at_the_quota_at_once(
    quota_services: Services, stub: Any
) -> None:
    user_id, _ = await a_user_with_memories(quota_services, 0)
    stub.brain.replies = ["Hi!"]
    for i in range(5):
        stub.brain.replies += [save(f"fact_{i}"), "Saved."]
    conversation = await start_conversation(quota_services, stub_model(stub), user_id=user_id)
    errors = []
    for i in range(5):
        result = await conversation.type(f"remember fact {i}")
        errors += [o.is_error for o in outputs(result)]
    assert errors == [False, False, False, True, True]
    assert await current_explicit(quota_services, user_id) == QUOTA
    await end_conversation(conversation)


async def test_changing_a_kept_memory_at_a_full_quota_is_still_allowed(
    quota_services: Services, stub: Any
) -> None:
    user_id, companion_id = await a_user_with_memories(quota_services, QUOTA)
    stub.brain.replies = [
        "Hi!", {"tool": "remember", "args": {"category": "FACT", "key": "kept_0",
                                             "value": "a new value"}}, "Updated.",
    ]
    conversation = await start_conversation(quota_services, stub_model(stub), user_id=user_id)
    result = await conversation.type("actually, kept 0 changed")
    assert [o.is_error for o in outputs(result)] == [False]
    current = {m.key: m.value for m in await quota_services.memory.current(user_id, companion_id)}
    assert current["kept_0"] == "a new value" and len(current) == QUOTA
    await end_conversation(conversation)


async def test_talking_never_fills_the_quota(quota_services: Services, stub: Any) -> None:
    user_id, _ = await a_user_with_memories(quota_services, QUOTA - 1)
    conversation = await start_conversation(quota_services, stub_model(stub), user_id=user_id)
    for i in range(6):
        await conversation.type(f"Just chatting about my day, part {i}, the weather was odd.")
    await settle(quota_services)
    episodic = await quota_services.pool.fetchval(
        "select count(*) from public.memories where user_id = $1 and kind = 'episodic'", user_id
    )
    assert episodic >= 12  # six turns and six replies: far past the quota of 3
    stub.brain.replies = [save("after_talking"), "Saved."]
    result = await conversation.type("now remember one more thing")
    assert [o.is_error for o in outputs(result)] == [False]
    assert await current_explicit(quota_services, user_id) == QUOTA
    await end_conversation(conversation)


async def test_a_full_quota_says_what_to_do_and_every_way_out_is_a_tool_the_model_has(
    quota_services: Services, stub: Any
) -> None:
    user_id, companion_id = await a_user_with_memories(quota_services, QUOTA)
    stub.brain.replies = [
        "Hi!", save("one_too_many"), "My memory is full.",
        {"tool": "forget", "args": {"key": "kept_0"}}, "Forgotten.",
        save("one_too_many"), "Saved now.",
    ]
    conversation = await start_conversation(quota_services, stub_model(stub), user_id=user_id)
    full = await conversation.type("remember one more")
    refusal = outputs(full)[0]
    assert refusal.is_error
    offered = {"what_do_you_know_about_me", "forget", "forget_everything"}
    assert all(name in refusal.output for name in offered)
    tools = {t["function"]["name"] for t in chat_requests(stub)[-1]["tools"]}
    assert offered <= tools
    forgotten = await conversation.type("then forget kept 0")
    assert [o.is_error for o in outputs(forgotten)] == [False]
    again = await conversation.type("and save it now")
    assert [o.is_error for o in outputs(again)] == [False]
    keys = {m.key for m in await quota_services.memory.current(user_id, companion_id)}
    assert keys == {"kept_1", "kept_2", "one_too_many"}
    assert json.loads(outputs(again)[0].output)["saved"]["one_too_many"] == "one_too_many!"
    await end_conversation(conversation)
