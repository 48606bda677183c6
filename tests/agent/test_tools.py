"""Each tool: what the model sends, what reaches the services, what the model reads back."""

from __future__ import annotations

import json
import uuid

import pytest
from livekit.agents import llm
from livekit.plugins import openai as lk_openai

from tests.agent.conftest import chat_requests, end_conversation, settle, start_conversation
from tests.support.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.agent


def tool_output(result, name: str):
    call = result.expect.contains_function_call(name=name)
    assert call is not None
    event = next(
        e for e in result.events
        if e.type == "function_call_output" and e.item.name == name
    )
    return event.item


async def run_tool(services, name: str, args: dict, *, user_id: uuid.UUID | None = None):
    """One typed turn in which the model calls `name(args)` and then answers."""
    model = ScriptedLLM(["Hi!", {"tool": name, "args": args}, "Done."])
    conversation = await start_conversation(services, model, user_id=user_id or uuid.uuid4())
    result = await conversation.type("please")
    output = tool_output(result, name)
    return conversation, output, model


async def test_remember_saves_for_the_sessions_user_and_companion(services) -> None:
    user_id = uuid.uuid4()
    conversation, output, _ = await run_tool(
        services, "remember",
        {"category": "person", "key": "Dog Name", "value": "Rex"}, user_id=user_id,
    )
    assert not output.is_error
    assert json.loads(output.output) == {"saved": {"category": "PERSON", "dog_name": "Rex"}}
    current = await services.memory.current(user_id, conversation.companion.companion.id)
    assert [(m.category, m.key, m.value) for m in current] == [("PERSON", "dog_name", "Rex")]
    assert current[0].source["via"] == "tool"
    await end_conversation(conversation)


async def test_remember_with_a_bad_category_shows_the_model_the_error_and_what_to_do(
    services,
) -> None:
    user_id = uuid.uuid4()
    conversation, output, _ = await run_tool(
        services, "remember", {"category": "!!", "key": "x", "value": "y"}, user_id=user_id
    )
    assert output.is_error
    assert "category" in output.output and "FACT" in output.output
    assert await services.memory.current(user_id, conversation.companion.companion.id) == []
    await end_conversation(conversation)


async def test_recall_finds_what_was_remembered(services) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "PERSON", "sister", "Maya, a nurse")
    conversation, output, _ = await run_tool(
        services, "recall", {"query": "my sister Maya"}, user_id=user_id
    )
    assert not output.is_error
    texts = [m["text"] for m in json.loads(output.output)["memories"]]
    assert "sister: Maya, a nurse" in texts
    await end_conversation(conversation)


async def test_forget_deletes_the_key_and_an_unknown_key_is_a_tool_error(services) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "FACT", "job", "baker")

    conversation, output, _ = await run_tool(services, "forget", {"key": "job"}, user_id=user_id)
    assert json.loads(output.output) == {"forgotten": "job", "versions": 1}
    assert await services.memory.current(user_id, companion.id) == []
    await end_conversation(conversation)

    conversation, output, _ = await run_tool(services, "forget", {"key": "job"}, user_id=user_id)
    assert output.is_error and "what_do_you_know_about_me" in output.output
    await end_conversation(conversation)


async def test_what_do_you_know_about_me_lists_profile_and_memories_readably(services) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    await services.users.update_profile(user_id, display_name="Sam", interests=["chess"])
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "PREFERENCE", "favorite_food", "ramen")

    conversation, output, _ = await run_tool(
        services, "what_do_you_know_about_me", {}, user_id=user_id
    )
    known = json.loads(output.output)
    assert known["memories"] == ["favorite food: ramen"]
    assert "Sam" in known["profile"] and "chess" in known["profile"]
    await end_conversation(conversation)


async def test_update_profile_stores_fields_finishes_onboarding_and_updates_instructions(
    services,
) -> None:
    user_id = uuid.uuid4()
    conversation, output, _ = await run_tool(
        services, "update_profile",
        {"name": "Margaret", "preferred_name": "Maggie", "interests": ["jazz"], "timezone": None},
        user_id=user_id,
    )
    assert not output.is_error
    assert json.loads(output.output)["onboarding"] == "done"
    profile = await services.users.get(user_id)
    assert profile is not None
    assert (profile.display_name, profile.preferred_name, profile.interests) == (
        "Margaret", "Maggie", ("jazz",),
    )
    assert "Maggie" in str(conversation.agent.instructions)
    assert "Getting to know them" not in str(conversation.agent.instructions)
    await end_conversation(conversation)


async def test_update_profile_with_an_unknown_time_zone_is_a_tool_error(services) -> None:
    conversation, output, _ = await run_tool(
        services, "update_profile",
        {"name": None, "preferred_name": None, "interests": None, "timezone": "Mars/Olympus"},
    )
    assert output.is_error and "time zone" in output.output
    await end_conversation(conversation)


@pytest.mark.parametrize(
    ("tool", "expected_keys"),
    [
        (
            "get_connection_pool_stats",
            {"size", "in_use", "acquisitions", "errors", "model_clients"},
        ),
        ("get_redis_cache_stats", {"backend"}),
        ("get_database_batch_stats", {"items_enqueued", "items_written", "round_trips"}),
        ("get_memory_stats", {"memories", "per_category", "retrieval", "embedder", "turn_ms"}),
    ],
)
async def test_each_health_tool_returns_its_stats_as_json(
    services, tool: str, expected_keys: set[str]
) -> None:
    conversation, output, _ = await run_tool(services, tool, {})
    assert not output.is_error
    assert expected_keys <= set(json.loads(output.output))
    await end_conversation(conversation)


async def test_memory_stats_count_this_users_rows(services) -> None:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "FACT", "job", "baker")
    await settle(services)
    conversation, output, _ = await run_tool(services, "get_memory_stats", {}, user_id=user_id)
    stats = json.loads(output.output)
    assert stats["per_category"]["FACT"] == 1
    await end_conversation(conversation)


async def test_every_request_offers_the_agents_tools_as_livekit_declares_them_and_calls_run(
    services, stub
) -> None:
    # The agent hands the LLM its tools' schemas built once (livekit_layer/tool_schemas.py):
    # the requests must carry what livekit's own builder makes of the agent's tools, and a
    # call must still run the agent's tool.
    user_id = uuid.uuid4()
    stub.brain.replies = [
        "Hi!", {"tool": "remember", "args": {"category": "PERSON", "key": "dog", "value": "Rex"}},
        "Saved.", "Any time.",
    ]
    model = lk_openai.LLM(model="stub-model", base_url=stub.base_url, api_key="test-key")
    conversation = await start_conversation(services, model, user_id=user_id)
    saved = tool_output(await conversation.type("my dog is Rex"), "remember")
    await conversation.type("thanks")
    assert not saved.is_error
    current = await services.memory.current(user_id, conversation.companion.companion.id)
    assert [(m.key, m.value) for m in current] == [("dog", "Rex")]
    expected = llm.ToolContext(conversation.agent.tools).parse_function_tools("openai")
    requests = chat_requests(stub)
    assert len(requests) == 4  # greeting, the turn, after its tool call, the next turn
    assert len(expected) == 10  # forget_everything among them
    assert all(body["tools"] == expected for body in requests)
    await end_conversation(conversation)
