"""A forget reaches the text an LLM wrote from the forgotten memory: the companion's profile
summary, the earlier sessions' summaries and the open follow-ups.

The person told their companion about their dog in an earlier session; its summary, the
profile summary and a follow-up mention the dog's name (stored as they would be by the
summarizer). They ask the companion to forget the dog's name: from the next LLM call on, the
turn's memory note does not carry it, and what the next session's greeting is written from
does not either, while what does not mention it stays.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from core.dates import utc_now
from services.composition import Services
from tests.agent.conftest import end_conversation, request_text, settle, start_conversation
from tests.support.agent_turns import memory_notes, tool_outputs
from tests.support.background_replies import (
    PROFILE_MARK,
    SUMMARY_MARK,
    background_reply,
    system_prompt,
)
from tests.support.openai_server import OpenAIStubServer
from tests.support.scripted_llm import ScriptedLLM, system_texts

pytestmark = pytest.mark.agent

DOG = "Rex, a golden retriever who loves the beach"
EARLIER_SUMMARY = (
    "They told you about their golden retriever Rex and his trips to the beach. "
    "They are training for the city marathon in spring."
)
PROFILE_SUMMARY = "Has a golden retriever named Rex. Runs long distances on weekends."


async def a_person_who_talked_about_their_dog(services: Services) -> tuple[uuid.UUID, uuid.UUID]:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    await services.memory.remember(user_id, companion.id, "PERSON", "dog_name", DOG)
    await services.users.set_companion_summary(user_id, companion.id, PROFILE_SUMMARY)
    started = utc_now() - timedelta(days=2)
    session_id = await services.pool.fetchval(
        "insert into public.sessions (user_id, companion_id, started_at, last_activity_at, "
        "ended_at, summary, summarized_at) values ($1, $2, $3, $3, $3, $4, $3) returning id",
        user_id, companion.id, started, EARLIER_SUMMARY,
    )
    for topic, detail in (("Rex's vet visit", "ask how it went"),
                          ("the marathon training", "ask how the long run went")):
        await services.pool.execute(
            "insert into public.follow_ups (user_id, companion_id, session_id, topic, detail, "
            "created_at) values ($1, $2, $3, $4, $5, $6)",
            user_id, companion.id, session_id, topic, detail, started,
        )
    await services.conversations.invalidate(user_id, companion.id)
    return user_id, companion.id


def summarizer_who_heard_about_rex(body: dict[str, Any]) -> Any:
    if SUMMARY_MARK in system_prompt(body):
        return {"json": {
            "summary": "They asked about Rex on the beach. They planned the long run.",
            "follow_ups": [{"topic": "Rex's walk", "detail": ""},
                           {"topic": "the long run", "detail": "ask how it went"}],
        }}
    return background_reply(body)


async def test_forgetting_the_dogs_name_takes_it_out_of_the_summaries_and_follow_ups(
    services: Services, stub: OpenAIStubServer
) -> None:
    user_id, companion_id = await a_person_who_talked_about_their_dog(services)
    # This session's summary, as the summarizer would write it from the transcript.
    stub.brain.background = summarizer_who_heard_about_rex  # type: ignore[attr-defined]
    model = ScriptedLLM([
        "Hi again!",
        "Sounds good.",                                            # turn 1
        {"tool": "forget", "args": {"key": "dog_name"}}, "Done.",  # turn 2
        "Sure.",                                                   # turn 3
    ])
    conversation = await start_conversation(services, model, user_id=user_id)
    # The greeting was written from the earlier session's summary and follow-ups.
    assert "Rex" in "\n".join(system_texts(model.calls[0]))

    await conversation.type("What should we talk about today?")
    assert "Rex" in memory_notes(model)[-1]

    forgot = await conversation.type("Please forget my dog's name.")
    assert [o.is_error for o in tool_outputs(forgot)] == [False]
    # The model's call after the tool reads a note made after the forget.
    assert "Rex" not in memory_notes(model)[-1]
    await conversation.type("What should we talk about today?")
    note = memory_notes(model)[-1]
    # The profile summary is cleared whole (it is rewritten from what remains).
    assert "Rex" not in note and "Runs long distances" not in note
    assert "the marathon training" in note

    # What the next session's greeting and profile are written from.
    context = await services.conversations.greeting_context(user_id, companion_id)
    assert context.last_summary == "They are training for the city marathon in spring."
    # The greeting raised both follow-ups; the one about the dog is gone, the other stays.
    assert [r["topic"] for r in await services.pool.fetch(
        "select topic from public.follow_ups where user_id = $1", user_id
    )] == ["the marathon training"]
    assert await services.users.companion_summary(user_id, companion_id) is None
    stats = await services.memory.stats()
    assert stats["session_summaries_scrubbed"] == 1 and stats["follow_ups_scrubbed"] == 1
    assert stats["profile_summaries_cleared"] == 1

    # The summary was marked due: once the session is consolidated, it is written again from
    # what remains (no earlier summary, no dog).
    await end_conversation(conversation)
    await settle(services)
    (refresh,) = [
        r.json for r in stub.requests_to("/chat/completions")
        if r.json and PROFILE_MARK in system_prompt(r.json)
    ]
    material = request_text(refresh)
    assert "marathon" in material
    assert "Rex" not in material and "golden retriever" not in material
    assert await services.users.companion_summary(user_id, companion_id) is not None
    assert await services.profiles.due(limit=5, user_id=user_id) == []
    # The summary this session left was written without what was forgotten in it.
    assert await services.pool.fetchval(
        "select summary from public.sessions where id = $1", conversation.companion.conversation.id
    ) == "They planned the long run."
    assert [r["topic"] for r in await services.pool.fetch(
        "select topic from public.follow_ups where session_id = $1",
        conversation.companion.conversation.id,
    )] == ["the long run"]
