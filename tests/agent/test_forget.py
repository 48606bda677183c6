""""Forget" holds in what the companion can say, at once, through a real Postgres outage.

The session runs on the real service graph. Postgres is frozen (SIGSTOP on every server
process) after a forget, or stopped before one, so the in-process index cannot sync and is
searched as it stands: what it still holds of the forgotten memory must not reach the turn's
memory note nor `recall`, then or after Postgres is back; a forget made while it was down waits
in the spool on disk and is made in the database when a worker replays it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from core.config import Settings
from services.composition import Services, build_services
from tests.agent.conftest import end_conversation, start_conversation
from tests.conftest import PostgresFreezer
from tests.support.agent_turns import memory_notes, tool_outputs
from tests.support.scripted_llm import ScriptedLLM
from tests.support.servers import PostgresProcess

pytestmark = pytest.mark.agent

DOG = "Rex, a golden retriever who loves the beach"
CAT = "Tom, a grey tabby cat who sleeps all day"


@pytest.fixture
async def quick_services(
    agent_settings: Settings, postgres_freezer: PostgresFreezer
) -> AsyncIterator[Services]:
    """Statements and pool waits give up after half a second, as a hung server's should."""
    built = await build_services(agent_settings.model_copy(update={
        "db_command_timeout_s": 0.5, "db_acquire_timeout_s": 0.5,
    }))
    try:
        yield built
    finally:
        postgres_freezer.thaw()
        await built.aclose()


async def a_person_with_pets(services: Services) -> tuple[uuid.UUID, uuid.UUID]:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "PERSON", "dog_name", DOG)
    await services.memory.remember(user_id, companion.id, "PERSON", "cat_name", CAT)
    return user_id, companion.id


RECALL = {"tool": "recall", "args": {"query": "my dog and my cat"}}
QUESTION = "How are my dog and my cat doing these days?"


async def test_a_forgotten_memory_is_not_served_while_postgres_is_frozen_nor_after(
    quick_services: Services, postgres_freezer: PostgresFreezer
) -> None:
    services = quick_services
    user_id, _ = await a_person_with_pets(services)
    model = ScriptedLLM([
        "Hi!",
        "They sound lovely.",                                     # turn 1
        {"tool": "forget", "args": {"key": "dog_name"}}, "Done.",  # turn 2
        RECALL, "Here is what I remember.",                       # turn 3 (frozen)
        RECALL, "Here is what I remember.",                       # turn 4 (thawed)
    ])
    conversation = await start_conversation(services, model, user_id=user_id)
    assert await services.retrieval.warm(user_id)

    await conversation.type(QUESTION)
    assert "Rex" in memory_notes(model)[-1] and "Tom" in memory_notes(model)[-1]

    forgot = await conversation.type("Please forget my dog's name.")
    assert [o.is_error for o in tool_outputs(forgot)] == [False]
    # The model's call after the tool reads a note made after the forget.
    assert "Rex" not in memory_notes(model)[-1]

    postgres_freezer.freeze()
    frozen = await conversation.type(QUESTION)
    notes = memory_notes(model)[-2:]
    # The index answered as it stands (the cat is still there), without the dog.
    assert all("Tom" in note and "Rex" not in note for note in notes)
    recalled = [m["text"] for m in json.loads(tool_outputs(frozen)[0].output)["memories"]]
    assert any("Tom" in text for text in recalled)
    assert not any("Rex" in text for text in recalled)
    assert services.retrieval.stats()["stale_local_searches"] >= 2

    postgres_freezer.thaw()
    thawed = await conversation.type(QUESTION)
    assert all("Rex" not in note for note in memory_notes(model)[-2:])
    recalled = [m["text"] for m in json.loads(tool_outputs(thawed)[0].output)["memories"]]
    assert any("Tom" in text for text in recalled)
    assert not any("Rex" in text for text in recalled)
    await end_conversation(conversation)


class Outage:
    """The test server stopped (connections refused) between `begin` and `end`."""

    def __init__(self, postgres: PostgresProcess) -> None:
        self.postgres = postgres
        self.down = False

    def begin(self) -> None:
        self.postgres.stop()
        self.down = True

    def end(self) -> None:
        if self.down:
            self.postgres.start()
            self.down = False


@pytest.fixture
def outage(postgres: PostgresProcess) -> Iterator[Outage]:
    """An outage to begin at will; it always ends with the test."""
    happening = Outage(postgres)
    try:
        yield happening
    finally:
        happening.end()


async def test_a_forget_while_postgres_is_down_holds_at_once_and_is_made_when_it_is_back(
    agent_settings: Settings, outage: Outage
) -> None:
    services = await build_services(agent_settings)
    try:
        user_id, companion_id = await a_person_with_pets(services)
        model = ScriptedLLM([
            "Hi!",
            "They sound lovely.",                                     # turn 1
            {"tool": "forget", "args": {"key": "cat_name"}}, "Done.",  # turn 2 (down)
            RECALL, "Here is what I remember.",                       # turn 3 (down)
            RECALL, "Here is what I remember.",                       # turn 4 (back)
        ])
        conversation = await start_conversation(services, model, user_id=user_id)
        assert await services.retrieval.warm(user_id)
        await conversation.type(QUESTION)
        assert "Tom" in memory_notes(model)[-1]

        outage.begin()
        forgot = await conversation.type("Please forget my cat's name.")
        (output,) = tool_outputs(forgot)
        assert not output.is_error and "forgotten now" in output.output
        assert "Tom" not in memory_notes(model)[-1]
        spooled = "".join(
            p.read_text() for p in agent_settings.batch_spool_dir.iterdir() if p.is_file()
        )
        assert "memory.forget_key" in spooled and "cat_name" in spooled
        down = await conversation.type(QUESTION)
        assert all("Rex" in note and "Tom" not in note for note in memory_notes(model)[-2:])
        recalled = [m["text"] for m in json.loads(tool_outputs(down)[0].output)["memories"]]
        assert any("Rex" in text for text in recalled)
        assert not any("Tom" in text for text in recalled)

        outage.end()
        back = await conversation.type(QUESTION)
        assert all("Tom" not in note for note in memory_notes(model)[-2:])
        assert "Tom" not in tool_outputs(back)[0].output
        await conversation.session.aclose()
        await conversation.companion.close(wait=False)
    finally:
        await services.aclose()

    # The next worker to start replays the spool: the delete is made in the database.
    successor = await build_services(agent_settings)
    try:
        keys = [m.key for m in await successor.memory.current(user_id, companion_id)]
        assert keys == ["dog_name"]
        assert await successor.pool.fetchval(
            "select count(*) from public.memories where user_id = $1 and key = 'cat_name'",
            user_id,
        ) == 0
    finally:
        await successor.aclose()
