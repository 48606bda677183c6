"""Mid-session, a hung database (Postgres frozen with SIGSTOP: connections open, nothing
answers) degrades the way a dead one does, with the product's own database bounds: `remember`
answers with a tool error saying to try again, `recall` answers from the person's loaded memory,
and the next turn's memory note still carries what was loaded. Nothing here is timed: the waits
end because the product's bounds end them (`give_up_s` only guards against a hang).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.config import Settings
from services.composition import Services, build_services
from tests.agent.conftest import end_conversation, start_conversation
from tests.conftest import PostgresFreezer
from tests.support.agent_turns import memory_notes, tool_outputs
from tests.support.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.agent

DOG = "Rex, a golden retriever who loves the beach"
QUESTION = "How is my dog doing these days?"
# Far longer than any bound of the product; a test still running then has hung.
GIVE_UP_S = 300.0
PRODUCT_BOUNDS = ("db_command_timeout_s", "db_acquire_timeout_s")


@pytest.fixture
async def product_bounded_services(
    agent_settings: Settings, postgres_freezer: PostgresFreezer
) -> AsyncIterator[Services]:
    """The database waits bounded as in production (the test settings make them generous)."""
    defaults = {name: Settings.model_fields[name].default for name in PRODUCT_BOUNDS}
    built = await build_services(agent_settings.model_copy(update=defaults))
    try:
        yield built
    finally:
        postgres_freezer.thaw()
        await built.aclose()


async def test_with_postgres_frozen_mid_session_tools_say_try_again_and_turns_keep_memory(
    product_bounded_services: Services, postgres_freezer: PostgresFreezer
) -> None:
    services = product_bounded_services
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "PERSON", "dog_name", DOG)
    model = ScriptedLLM([
        "Hi!",
        {"tool": "remember", "args": {"category": "PERSON", "key": "cat_name",
                                      "value": "Tom, a grey tabby"}}, "I'll try later.",
        {"tool": "recall", "args": {"query": "my dog"}}, "Here is what I remember.",
    ])
    conversation = await start_conversation(services, model, user_id=user_id)
    assert await services.retrieval.warm(user_id)

    postgres_freezer.freeze()
    async with asyncio.timeout(GIVE_UP_S):
        saved = await conversation.type("Please remember my cat is Tom, a grey tabby.")
        recalled = await conversation.type(QUESTION)

    [save] = tool_outputs(saved)
    assert save.is_error and "try again" in save.output.lower(), save.output
    [found] = tool_outputs(recalled)
    assert not found.is_error, found.output
    texts: list[Any] = [m["text"] for m in json.loads(found.output)["memories"]]
    assert any("Rex" in text for text in texts)
    # The turn after the tool still reads the person's loaded memory.
    assert "Rex" in memory_notes(model)[-1]

    postgres_freezer.thaw()
    await end_conversation(conversation)
