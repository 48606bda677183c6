"""Typed and spoken turns share one size limit; a longer turn is never cut to fit.

The person is told it was too long and asked to split it; the turn is set aside before anything
looks at it: not screened, not looked up in memory, not appraised for mood, not stored, and
never sent to the model, in that turn or any later one.
"""

from __future__ import annotations

import uuid

import pytest

from core.prompts import render
from core.validators import MAX_UTTERANCE_CHARS
from livekit_layer.companion_session import TOO_LONG_PROMPT
from tests.agent.conftest import end_conversation, settle, start_conversation
from tests.support.scripted_llm import ScriptedLLM, all_text

pytestmark = pytest.mark.agent

SMALL_TALK = "We walked the dog along the river and talked about the garden. "


def too_long_reply(length: int) -> str:
    return render(TOO_LONG_PROMPT, length=f"{length:,}", limit=f"{MAX_UTTERANCE_CHARS:,}")


async def stored_user_texts(services, user_id: uuid.UUID) -> list[str]:
    rows = await services.pool.fetch(
        "select content from messages where user_id = $1 and role = 'user' order by created_at",
        user_id,
    )
    episodes = await services.pool.fetch(
        "select content from memories where user_id = $1 and speaker = 'user'", user_id
    )
    return [r["content"] for r in [*rows, *episodes]]


async def test_a_typed_turn_over_the_limit_is_set_aside_and_the_person_asked_to_split_it(
    services,
) -> None:
    user_id = uuid.uuid4()
    model = ScriptedLLM(["Hi!", "Glad to hear it."])
    conversation = await start_conversation(services, model, user_id=user_id)
    huge = (SMALL_TALK * (1_000_000 // len(SMALL_TALK) + 1))[:1_000_000]
    calls, lookups = len(model.calls), services.rag.stats()["turns"]
    moods = services.personality.stats()["turns"]

    result = await conversation.type(huge)

    reply = result.expect.contains_message(role="assistant").event().item.text_content
    assert reply == too_long_reply(1_000_000)
    assert "1,000,000 characters" in reply and "4,000" in reply
    assert len(model.calls) == calls
    assert services.rag.stats()["turns"] == lookups
    assert services.personality.stats()["turns"] == moods
    assert conversation.companion.stats()["too_long_messages"] == 1
    # The next turn is answered, and the set-aside one is not in what the model reads.
    await conversation.type("I feel much better today")
    assert SMALL_TALK.strip() not in all_text(model.calls[-1])
    await end_conversation(conversation)
    await settle(services)
    assert await stored_user_texts(services, user_id) == ["I feel much better today"] * 2


async def test_a_spoken_turn_over_the_limit_gets_the_same_answer(services) -> None:
    user_id = uuid.uuid4()
    model = ScriptedLLM(["Hi!", "Nice."])
    conversation = await start_conversation(services, model, user_id=user_id)
    long_talk = (SMALL_TALK * 80)[: MAX_UTTERANCE_CHARS + 100]
    calls = len(model.calls)

    reply = await conversation.say(long_talk)

    assert reply == too_long_reply(len(long_talk.strip()))
    assert len(model.calls) == calls
    assert await conversation.say("The garden is lovely") == "Nice."
    await end_conversation(conversation)
    await settle(services)
    assert SMALL_TALK.strip() not in " ".join(await stored_user_texts(services, user_id))


async def test_a_turn_at_the_limit_is_answered_and_stored_whole(services) -> None:
    user_id = uuid.uuid4()
    model = ScriptedLLM(["Hi!", "What a day."])
    conversation = await start_conversation(services, model, user_id=user_id)
    full = (SMALL_TALK * 80)[:MAX_UTTERANCE_CHARS - 1] + "!"

    await conversation.type(full)

    assert full in all_text(model.calls[-1])
    await end_conversation(conversation)
    await settle(services)
    assert await stored_user_texts(services, user_id) == [full, full]
