"""Sessions, messages, the greeting's context (one query, cached), resume, summaries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.people.conversation_service import ConversationService
from services.people.greeting import GreetingContext, describe_gap, greeting_instructions
from tests.support.background_replies import SUMMARY_MARK, system_prompt
from tests.support.clocks import HandClock

pytestmark = pytest.mark.integration


async def user_and_companion(services) -> tuple[uuid.UUID, uuid.UUID]:
    user_id = uuid.uuid4()
    await services.users.ensure(user_id)
    companion = await services.companions.resolve(user_id)
    return user_id, companion.id


def conversations_with(services, settings, clock: HandClock) -> ConversationService:
    return ConversationService(
        pool=services.pool, models=services.models, cache=services.cache,
        batcher=services.batcher, follow_ups=services.follow_ups, settings=settings, clock=clock,
    )


def greeting(context: GreetingContext, *, resumed: bool = False) -> str:
    """Veda's first words to the person of `context`, in a session starting now."""
    return greeting_instructions(
        context, companion_name="Veda", name=context.address_as, started_at=datetime.now(UTC),
        resumed=resumed,
    )


async def test_the_greeting_context_is_one_query_and_then_comes_from_the_cache(services) -> None:
    user_id, companion_id = await user_and_companion(services)
    await services.pool.execute(
        "insert into sessions (user_id, companion_id, summary, started_at, last_activity_at) "
        "values ($1, $2, 'They planned a trip.', now() - interval '2 days', "
        "now() - interval '2 days')",
        user_id, companion_id,
    )
    await services.pool.execute(
        "insert into follow_ups (user_id, companion_id, topic) values ($1, $2, 'the trip')",
        user_id, companion_id,
    )
    before = services.pool.stats()["acquisitions"]
    context = await services.conversations.greeting_context(user_id, companion_id)
    assert services.pool.stats()["acquisitions"] - before == 1
    again = await services.conversations.greeting_context(user_id, companion_id)
    assert services.pool.stats()["acquisitions"] - before == 1

    assert again == context
    assert context.last_summary == "They planned a trip."
    assert [f.topic for f in context.follow_ups] == ["the trip"]
    assert context.session_count == 1
    assert context.last_activity_at is not None


async def test_a_returning_greeting_names_them_the_gap_the_summary_and_the_follow_up(
    services,
) -> None:
    user_id, companion_id = await user_and_companion(services)
    await services.users.update_profile(user_id, display_name="Ann", preferred_name="Annie")
    await services.pool.execute(
        "insert into sessions (user_id, companion_id, summary, started_at, last_activity_at) "
        "values ($1, $2, 'They had a cold.', now() - interval '3 days', "
        "now() - interval '3 days')",
        user_id, companion_id,
    )
    await services.pool.execute(
        "insert into follow_ups (user_id, companion_id, topic, detail) "
        "values ($1, $2, 'the cold', 'whether they feel better')",
        user_id, companion_id,
    )
    context = await services.conversations.greeting_context(user_id, companion_id)
    text = greeting(context)
    assert "Annie" in text and "3 days" in text
    assert "They had a cold." in text and "the cold (whether they feel better)" in text


async def test_a_first_greeting_asks_for_the_name_when_it_is_unknown(services) -> None:
    user_id, companion_id = await user_and_companion(services)
    context = await services.conversations.greeting_context(user_id, companion_id)
    text = greeting(context)
    assert "first time" in text and "ask for it" in text


async def test_follow_ups_not_yet_due_wait_and_raised_ones_are_not_raised_again(
    services,
) -> None:
    user_id, companion_id = await user_and_companion(services)
    await services.pool.execute(
        "insert into follow_ups (user_id, companion_id, topic, due_at) values "
        "($1, $2, 'later', now() + interval '2 days'), ($1, $2, 'now', now() - interval '1 hour')",
        user_id, companion_id,
    )
    context = await services.conversations.greeting_context(user_id, companion_id)
    assert [f.topic for f in context.follow_ups] == ["now"]
    services.follow_ups.mark_raised(user_id, [f.id for f in context.follow_ups])
    await services.batcher.flush()
    await services.conversations.invalidate(user_id, companion_id)
    context = await services.conversations.greeting_context(user_id, companion_id)
    assert context.follow_ups == ()


async def test_a_reconnect_within_the_grace_period_resumes_the_session_with_its_turns(
    services, agent_settings
) -> None:
    clock = HandClock(datetime.now(UTC))
    conversations = conversations_with(services, agent_settings, clock)
    user_id, companion_id = await user_and_companion(services)
    first = await conversations.start(user_id, companion_id, room="r")
    conversations.add_message(first, "user", "my cat is ill")
    conversations.add_message(first, "assistant", "Oh no, I am sorry.")
    await conversations.end(first)

    clock.now += timedelta(seconds=agent_settings.session_resume_grace_s - 10)
    second = await conversations.start(user_id, companion_id, room="r")

    assert second.resumed and second.id == first.id
    assert [(t.role, t.text) for t in second.history] == [
        ("user", "my cat is ill"), ("assistant", "Oh no, I am sorry."),
    ]
    ended_at = await services.pool.fetchval("select ended_at from sessions where id = $1", first.id)
    assert ended_at is None
    resumed_text = greeting(
        await conversations.greeting_context(user_id, companion_id), resumed=True
    )
    assert "welcome back" in resumed_text
    await conversations.aclose()


async def test_a_reconnect_after_the_grace_period_starts_a_new_session(
    services, agent_settings
) -> None:
    clock = HandClock(datetime.now(UTC))
    conversations = conversations_with(services, agent_settings, clock)
    user_id, companion_id = await user_and_companion(services)
    first = await conversations.start(user_id, companion_id)
    conversations.add_message(first, "user", "hello")
    await conversations.end(first)

    clock.now += timedelta(seconds=agent_settings.session_resume_grace_s + 10)
    second = await conversations.start(user_id, companion_id)

    assert not second.resumed and second.id != first.id and second.history == []
    await conversations.aclose()


async def test_the_end_of_a_session_stores_the_llm_summary_and_its_follow_ups(
    services, stub
) -> None:
    user_id, companion_id = await user_and_companion(services)
    stub.brain.background = lambda body: {"json": {
        "summary": "They have a job interview at a bakery.",
        "follow_ups": [
            {"topic": "the job interview", "detail": "ask how it went", "due": "2026-12-01"},
            {"topic": "their sore back", "detail": "", "due": None},
        ],
    }} if SUMMARY_MARK in system_prompt(body) else None
    session = await services.conversations.start(user_id, companion_id)
    services.conversations.add_message(session, "user", "I have an interview on Monday")
    services.conversations.add_message(session, "assistant", "Good luck!")

    await services.conversations.end(session, wait=True)

    row = await services.pool.fetchrow(
        "select summary, ended_at, turn_count from sessions where id = $1", session.id
    )
    assert row["summary"] == "They have a job interview at a bakery."
    assert row["ended_at"] is not None and row["turn_count"] == 2
    follow_ups = await services.pool.fetch(
        "select topic, detail, due_at from follow_ups where session_id = $1 order by topic",
        session.id,
    )
    assert [(f["topic"], f["detail"]) for f in follow_ups] == [
        ("the job interview", "ask how it went"), ("their sore back", ""),
    ]
    # Asked about from the day after the interview, in the user's time zone (UTC here).
    assert follow_ups[0]["due_at"] == datetime(2026, 12, 2, tzinfo=UTC)
    assert follow_ups[1]["due_at"] is None
    request = next(
        r.json for r in stub.requests_to("/chat/completions")
        if SUMMARY_MARK in system_prompt(r.json)
    )
    assert "User: I have an interview on Monday" in request["messages"][1]["content"]


async def test_without_an_llm_the_summary_is_an_extract_of_what_they_said(services, stub) -> None:
    user_id, companion_id = await user_and_companion(services)
    stub.fail_next(3, status=503, path_prefix="/chat/completions")
    session = await services.conversations.start(user_id, companion_id)
    services.conversations.add_message(session, "user", "I planted tomatoes")

    await services.conversations.end(session, wait=True)

    summary = await services.pool.fetchval("select summary from sessions where id = $1", session.id)
    assert summary == "They said: I planted tomatoes"
    assert services.conversations.stats()["summaries_fallback"] == 1


async def test_at_shutdown_a_hung_llm_gets_one_short_try_then_the_extract_is_stored(
    services, stub
) -> None:
    # LiveKit kills a job whose shutdown outlasts its limit; the summary must not use it all up.
    user_id, companion_id = await user_and_companion(services)
    stub.hang_next(3, 60, path_prefix="/chat/completions")
    session = await services.conversations.start(user_id, companion_id)
    services.conversations.add_message(session, "user", "I adopted a cat")

    await services.conversations.end(session, wait=True)

    summary = await services.pool.fetchval("select summary from sessions where id = $1", session.id)
    assert summary == "They said: I adopted a cat"
    assert len(stub.requests_to("/chat/completions")) == 1


async def test_ending_twice_summarizes_once_and_a_silent_session_is_not_summarized(
    services, stub
) -> None:
    user_id, companion_id = await user_and_companion(services)
    silent = await services.conversations.start(user_id, companion_id)
    await services.conversations.end(silent, wait=True)
    await services.conversations.end(silent, wait=True)
    assert stub.requests_to("/chat/completions") == []
    assert await services.pool.fetchval(
        "select summary from sessions where id = $1", silent.id
    ) is None


@pytest.mark.parametrize(
    ("gap", "said"),
    [
        (timedelta(seconds=30), "only a moment"),
        (timedelta(minutes=42), "42 minutes"),
        (timedelta(hours=5), "about 5 hours"),
        (timedelta(days=1, hours=3), "a day"),
        (timedelta(days=9), "9 days"),
        (timedelta(days=30), "4 weeks"),
        (timedelta(days=200), "6 months"),
    ],
)
def test_the_time_since_the_last_talk_reads_as_a_person_would_say_it(
    gap: timedelta, said: str
) -> None:
    assert describe_gap(gap) == said
