"""Personality and proactivity through the whole agent: silence nudges, follow-ups across
sessions, companion routing, memory separation between companions, and mood.

The model is scripted (or the real OpenAI plugin against the stub); everything else is the
real service graph over real Postgres and Redis.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest

from core.config import Settings
from services.composition import Services, build_services
from services.people.onboarding_service import OnboardingData
from tests.agent.conftest import end_conversation, settle, start_conversation
from tests.agent.live import start_live, wait_until
from tests.support.background_replies import PROFILE_MARK, SUMMARY_MARK, system_prompt
from tests.support.scripted_llm import ScriptedLLM, all_text

pytestmark = pytest.mark.agent

NUDGE_MARK = "The user has gone quiet."
AFTER_S = 0.3


@pytest.fixture
async def nudging(agent_settings: Settings) -> AsyncIterator[Services]:
    """A short silence before a nudge, one nudge per session, and a low bar to speak up."""
    built = await build_services(agent_settings.model_copy(update={
        "silence_nudge_after_s": AFTER_S, "max_nudges_per_session": 1,
        "proactive_threshold": 0.1,
    }))
    try:
        yield built
    finally:
        await built.aclose()


@pytest.fixture
async def fresh_sessions(agent_settings: Settings) -> AsyncIterator[Services]:
    """Every join starts a new session (no resume), as after a day apart."""
    built = await build_services(agent_settings.model_copy(update={"session_resume_grace_s": 0}))
    try:
        yield built
    finally:
        await built.aclose()


def nudges_in(model: ScriptedLLM) -> list[str]:
    return [
        m.text_content or "" for ctx in model.calls for m in ctx.messages()
        if m.role == "system" and NUDGE_MARK in (m.text_content or "")
    ]


# --- silence -----------------------------------------------------------------------------------


async def test_a_silence_after_the_greeting_leads_to_exactly_one_nudge(nudging: Services) -> None:
    model = ScriptedLLM(["Hi, I'm Veda!", "Still there? I was thinking about you."],
                        fallback="(unexpected reply)")
    conversation = await start_live(nudging, model, user_id=uuid.uuid4(), nudges=True)
    watcher = conversation.companion.watcher
    assert watcher is not None

    await wait_until(lambda: len(model.calls) == 2)
    nudge = nudges_in(model)
    assert len(nudge) == 1
    # ProactiveService's instructions, as a generate_reply: one short sentence in a tone.
    assert "Tone:" in nudge[0] and "do not mention the silence" in nudge[0]
    # Much longer than the nudge delay: the silence goes on, no second nudge comes.
    await asyncio.sleep(AFTER_S * 10)
    assert len(model.calls) == 2 and watcher.nudges == 1
    await end_conversation(conversation)


async def test_no_nudge_fires_while_a_tool_runs(nudging: Services, stub) -> None:
    def slow_recall(chat_ctx: Any, tools: Any) -> dict[str, Any]:
        # Hold the tool (its query embedding) for many nudge delays.
        stub.delay_s["/v1/embeddings"] = AFTER_S * 20
        return {"tool": "recall", "args": {"query": "the dog"}}

    model = ScriptedLLM(["Hi!", slow_recall, "Rex, of course."], fallback="Still here.")
    conversation = await start_live(nudging, model, user_id=uuid.uuid4(), nudges=True)
    watcher = conversation.companion.watcher
    assert watcher is not None

    typed = asyncio.ensure_future(conversation.type("What was my dog called?"))
    await wait_until(lambda: watcher.policy.tools_running == 1)
    await asyncio.sleep(AFTER_S * 4)
    assert watcher.policy.tools_running == 1  # still held
    assert watcher.nudges == 0 and nudges_in(model) == []
    result = await typed
    stub.delay_s.clear()

    result.expect.contains_function_call_output(is_error=False)
    assert watcher.policy.tools_running == 0
    # Once the reply is out and the user stays quiet, the one nudge comes, after the tool.
    await wait_until(lambda: len(nudges_in(model)) == 1)
    nudge_call = next(c for c in model.calls if NUDGE_MARK in all_text(c))
    assert "Rex, of course." in all_text(nudge_call)
    assert any(i.type == "function_call_output" for i in nudge_call.items)
    await end_conversation(conversation)


# --- follow-ups --------------------------------------------------------------------------------


def next_friday(today: date) -> date:
    return today + timedelta(days=(4 - today.weekday()) % 7 or 7)


async def test_a_follow_up_from_session_one_is_raised_in_the_greeting_after_its_date(
    fresh_sessions: Services, stub
) -> None:
    services = fresh_sessions
    user_id = uuid.uuid4()
    friday = next_friday(date.today())
    summaries: list[Any] = [{"json": {
        "summary": "They have a job interview on Friday and feel nervous.",
        "follow_ups": [{"topic": "the job interview", "detail": "ask how it went",
                        "due": friday.isoformat()}],
    }}]

    def summarize(body: dict[str, Any]) -> Any:
        if SUMMARY_MARK in system_prompt(body):
            return summaries.pop(0) if summaries else {"json": {"summary": "They chatted.",
                                                                 "follow_ups": []}}
        return None

    stub.brain.background = summarize

    # Session 1: the interview is mentioned; the session-end summary stores the follow-up.
    first = await start_conversation(
        services, ScriptedLLM(["Hi!", "Good luck, you'll do great!"]), user_id=user_id
    )
    await first.type("My interview is on Friday")
    await end_conversation(first)
    await settle(services)
    due_at = await services.pool.fetchval(
        "select due_at from follow_ups where user_id = $1 and status = 'open'", user_id
    )
    assert due_at is not None and due_at.date() > friday - timedelta(days=1)

    # Session 2, before Friday has passed: nothing to follow up yet.
    early = ScriptedLLM(["Hello again!"])
    second = await start_conversation(services, early, user_id=user_id)
    greeting = all_text(early.calls[0])
    assert "the job interview (ask how it went)" not in greeting
    assert "There is nothing specific to follow up on." in greeting
    await end_conversation(second)
    await settle(services)

    # Friday has passed (the follow-up is due from the day after).
    await services.pool.execute(
        "update follow_ups set due_at = now() - interval '1 hour' where user_id = $1", user_id
    )
    await services.conversations.invalidate(user_id, first.companion.companion.id)

    late = ScriptedLLM(["Welcome back! How did the job interview go?"])
    third = await start_conversation(services, late, user_id=user_id)
    greeting = all_text(late.calls[0])
    assert "Things to ask about (pick the most natural one):\n<memory>\nthe job interview (ask " \
        "how it went)\n</memory>" in greeting
    await services.batcher.flush()
    assert await services.pool.fetchval(
        "select status from follow_ups where user_id = $1", user_id
    ) == "raised"
    await end_conversation(third)


# --- companions --------------------------------------------------------------------------------


async def two_companions(services: Services, user_id: uuid.UUID) -> tuple[Any, Any]:
    await services.users.ensure(user_id)
    veda = await services.companions.resolve(user_id)
    luna = await services.companions.create(
        user_id, name="Luna", character="mentor", persona="A calm night owl who loves stars."
    )
    return veda, luna


def as_participant(name: str) -> OnboardingData | None:
    return OnboardingData.from_participant(None, {"companion": name})


async def test_the_participant_attribute_picks_the_companion_at_join(services: Services) -> None:
    user_id = uuid.uuid4()
    veda, luna = await two_companions(services, user_id)

    model = ScriptedLLM(["Hello, I'm Luna.",
                         {"tool": "remember", "args": {"category": "FACT", "key": "job",
                                                       "value": "astronomer"}},
                         "Noted."])
    with_luna = await start_conversation(
        services, model, user_id=user_id, onboarding=as_participant("Luna")
    )
    assert with_luna.companion.companion.id == luna.id
    assert "You are Luna" in all_text(model.calls[0])
    assert "A calm night owl" in all_text(model.calls[0])
    await with_luna.type("I work as an astronomer")
    await end_conversation(with_luna)
    assert [m.key for m in await services.memory.current(user_id, luna.id)] == ["job"]
    assert await services.memory.current(user_id, veda.id) == []

    default = ScriptedLLM(["Hi, I'm Veda."])
    with_default = await start_conversation(services, default, user_id=user_id)
    assert with_default.companion.companion.id == veda.id
    assert "You are Veda" in all_text(default.calls[0])
    await end_conversation(with_default)


async def test_two_companions_never_see_each_others_memories_but_both_see_shared_ones(
    services: Services,
) -> None:
    user_id = uuid.uuid4()
    veda, luna = await two_companions(services, user_id)
    await services.memory.remember(user_id, None, "FACT", "home_city", "Lisbon")

    # With Veda: the dog is saved by the model (companion-scoped) and said aloud (episodic).
    model = ScriptedLLM(["Hi!",
                         {"tool": "remember", "args": {"category": "PERSON", "key": "dog_name",
                                                       "value": "Rex the beagle"}},
                         "What a lovely dog!"])
    with_veda = await start_conversation(services, model, user_id=user_id)
    await with_veda.type("My dog is called Rex the beagle")
    await end_conversation(with_veda)
    await settle(services)

    question = "What is my dog called, and what is my home city?"
    luna_model = ScriptedLLM(["Hello.", {"tool": "recall", "args": {"query": "my dog"}},
                              "You live in Lisbon."])
    with_luna = await start_conversation(
        services, luna_model, user_id=user_id, onboarding=as_participant("Luna")
    )
    result = await with_luna.type(question)
    seen_by_luna = "\n".join(all_text(ctx) for ctx in luna_model.calls)
    assert "Lisbon" in seen_by_luna  # shared at the user level
    assert "Rex" not in seen_by_luna and "beagle" not in seen_by_luna
    recalled = result.expect.contains_function_call_output(is_error=False).event().item.output
    assert "Rex" not in recalled
    await end_conversation(with_luna)

    veda_model = ScriptedLLM(["Welcome back!", "Rex, and you live in Lisbon."])
    again = await start_conversation(services, veda_model, user_id=user_id)
    await again.type(question)
    turn = all_text(veda_model.calls[-1])
    assert "Rex the beagle" in turn and "Lisbon" in turn
    await end_conversation(again)


def quoting_profile(body: dict[str, Any]) -> Any:
    """A profile writer that, like a real model, puts the facts it was given in the profile."""
    if PROFILE_MARK in system_prompt(body):
        return "Profile: " + (body["messages"][-1].get("content") or "")[:400]
    return None


async def test_one_companions_memories_do_not_reach_another_through_the_profile_summary(
    services: Services, stub
) -> None:
    user_id = uuid.uuid4()
    await two_companions(services, user_id)
    stub.brain.background = quoting_profile
    model = ScriptedLLM(["Hi!",
                         {"tool": "remember", "args": {"category": "PERSON", "key": "dog_name",
                                                       "value": "Rex the beagle"}},
                         "What a lovely dog!"])
    with_veda = await start_conversation(services, model, user_id=user_id)
    await with_veda.type("My dog is called Rex the beagle")
    await end_conversation(with_veda)
    await settle(services)

    luna_model = ScriptedLLM(["Hello."])
    with_luna = await start_conversation(
        services, luna_model, user_id=user_id, onboarding=as_participant("Luna")
    )
    await end_conversation(with_luna)
    assert "Rex" not in all_text(luna_model.calls[0])

    # The summary was written, and it is Veda's: her next greeting starts from it.
    veda_model = ScriptedLLM(["Welcome back!"])
    again = await start_conversation(services, veda_model, user_id=user_id)
    await end_conversation(again)
    assert "Profile: Known facts:" in all_text(veda_model.calls[0])
    assert "Rex the beagle" in all_text(veda_model.calls[0])


# --- mood --------------------------------------------------------------------------------------

MOOD_LINE = re.compile(r"Current mood: (\w+) \(pleasure ([+-]\d+\.\d+)")


def mood_of(chat_ctx: Any) -> tuple[str, float]:
    found = MOOD_LINE.findall(all_text(chat_ctx))
    assert found, "no mood line reached the model"
    emotion, pleasure = found[-1]
    return emotion, float(pleasure)


async def test_a_sad_turn_changes_the_mood_line_the_model_is_given(services: Services) -> None:
    model = ScriptedLLM(["Hi!", "Sounds tasty.", "I'm so sorry. I'm here with you."])
    conversation = await start_conversation(services, model, user_id=uuid.uuid4())

    await conversation.type("I had a sandwich for lunch")
    before = mood_of(model.calls[-1])
    await conversation.say("I'm so sad today, my grandmother died and I feel lonely")
    after = mood_of(model.calls[-1])

    assert after[1] < before[1]
    assert after[0] != before[0]
    assert after[0] in {"sad", "anxious", "fearful", "bored", "calm"}
    await end_conversation(conversation)
