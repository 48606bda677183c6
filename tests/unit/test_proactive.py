from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.people.follow_up_service import FollowUp, due_from_day
from services.persona.mood import Needs
from services.persona.pad import PAD
from services.persona.personality_state import MoodState, PersonalitySnapshot
from services.persona.proactive_decisions import (
    Nudge,
    NudgeLedger,
    compose_nudge,
    nudge_candidates,
    proactive_score,
)
from services.persona.silence_watcher import SilencePolicy, SilenceWatcher

pytestmark = pytest.mark.unit

share = st.floats(min_value=0, max_value=1)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WAIT_S = 10.0  # generous upper bound for an event that should come; never a timing assertion


def snapshot(emotion: str = "content", **needs: float) -> PersonalitySnapshot:
    mood = PAD(0.2, -0.1, 0.1)
    return PersonalitySnapshot(MoodState(mood, mood, emotion, NOW), Needs(**needs), ())


def follow_up(topic: str = "the interview", detail: str = "") -> FollowUp:
    return FollowUp(uuid.uuid4(), topic, detail, NOW)


# --- score ----------------------------------------------------------------------------------


@given(st.floats(min_value=0, max_value=1e9), share, share, share)
def test_the_proactive_score_stays_between_zero_and_one(
    since: float, need: float, extraversion: float, engagement: float
) -> None:
    score = proactive_score(since_contact_s=since, reference_s=25, need_urgency=need,
                            extraversion=extraversion, engagement=engagement)
    assert 0.0 <= score <= 1.0


@given(st.floats(min_value=0, max_value=1e6), st.floats(min_value=0, max_value=1e6), share,
       share, share)
def test_the_score_grows_with_time_since_contact(
    t1: float, t2: float, need: float, extraversion: float, engagement: float
) -> None:
    early, late = sorted((t1, t2))

    def score(t: float) -> float:
        return proactive_score(since_contact_s=t, reference_s=25, need_urgency=need,
                               extraversion=extraversion, engagement=engagement)

    assert score(late) >= score(early)


def test_need_extraversion_and_engagement_each_raise_the_score() -> None:
    base = {"since_contact_s": 25.0, "reference_s": 25.0, "need_urgency": 0.2,
            "extraversion": 0.2, "engagement": 0.2}
    plain = proactive_score(**base)
    for name in ("need_urgency", "extraversion", "engagement"):
        assert proactive_score(**{**base, name: 0.9}) > plain


# --- silence policy -------------------------------------------------------------------------


def idle_policy(after_s: float = 10.0) -> SilencePolicy:
    policy = SilencePolicy(after_s=after_s)
    policy.agent_state("listening", 0.0)
    return policy


def test_silence_starts_only_once_the_agent_has_finished_initializing() -> None:
    policy = SilencePolicy(after_s=10)
    assert policy.next_check_at() is None
    policy.agent_state("listening", 3.0)
    assert policy.next_check_at() == 13.0
    assert not policy.due(12.9) and policy.due(13.0)


@pytest.mark.parametrize(
    "busy",
    [
        lambda p, t: p.user_state("speaking", t),
        lambda p, t: p.agent_state("thinking", t),
        lambda p, t: p.agent_state("speaking", t),
        lambda p, t: p.tool_started(t),
    ],
    ids=["user speaking", "agent thinking", "agent speaking", "tool running"],
)
def test_no_nudge_is_due_while_someone_speaks_thinks_or_a_tool_runs(busy) -> None:
    policy = idle_policy()
    busy(policy, 5.0)
    assert not policy.quiet
    assert policy.next_check_at() is None
    assert not policy.due(1e9)


def test_silence_restarts_when_a_tool_finishes() -> None:
    policy = idle_policy()
    policy.tool_started(4.0)
    policy.tool_started(5.0)
    policy.tool_finished(6.0)
    assert policy.next_check_at() is None  # one tool still runs
    policy.tool_finished(7.0)
    assert policy.next_check_at() == 17.0


def test_an_away_user_counts_as_silent() -> None:
    policy = idle_policy()
    policy.user_state("speaking", 1.0)
    policy.user_state("away", 2.0)
    assert policy.next_check_at() == 12.0


def test_each_unanswered_nudge_doubles_the_wait_and_a_user_turn_resets_it() -> None:
    policy = idle_policy(after_s=10)
    policy.nudged(10.0)
    assert policy.next_check_at() == 30.0
    policy.nudged(30.0)
    assert policy.next_check_at() == 70.0
    policy.user_state("speaking", 71.0)
    policy.user_state("listening", 72.0)
    assert policy.next_check_at() == 82.0


def test_a_deferral_postpones_the_next_look_until_activity_resets_it() -> None:
    policy = idle_policy(after_s=10)
    policy.defer(10.0, 5.0)
    assert policy.next_check_at() == 15.0
    policy.agent_state("speaking", 11.0)
    policy.agent_state("listening", 12.0)
    assert policy.next_check_at() == 22.0


# --- content --------------------------------------------------------------------------------


def test_a_due_follow_up_comes_before_anything_else() -> None:
    item = follow_up("the interview on Friday", "ask how it went")
    first = nudge_candidates(snapshot(social=0.1), [item])[0]
    assert first.follow_up_id == item.id
    assert "the interview on Friday (ask how it went)" in first.action


def test_pressing_needs_and_a_low_mood_shape_the_candidates() -> None:
    topics = [c.topic for c in nudge_candidates(snapshot("sad", social=0.1, creative=0.2), [])]
    assert topics[:2] == ["need:social", "need:creative"]
    assert "mood:care" in topics
    assert topics[-2:] == ["check_in", "open_door"]


def test_nudges_are_bounded_per_session_and_never_repeat_a_topic_or_a_text() -> None:
    ledger = NudgeLedger(max_nudges=3)
    candidates = nudge_candidates(snapshot(social=0.1), [follow_up()])
    texts, topics = [], []
    while not ledger.exhausted:
        nudge = compose_nudge(candidates, ledger, emotion="content", score=0.9)
        assert nudge is not None
        ledger.record(nudge)
        texts.append(nudge.instructions)
        topics.append(nudge.topic)
    assert len(texts) == 3 == len(set(texts))
    assert len(set(topics)) == 3
    assert ledger.exhausted


def test_when_every_candidate_was_used_there_is_no_nudge() -> None:
    candidates = nudge_candidates(snapshot(), [])
    ledger = NudgeLedger(max_nudges=99)
    for _ in candidates:
        nudge = compose_nudge(candidates, ledger, emotion="calm", score=0.9)
        assert nudge is not None
        ledger.record(nudge)
    assert compose_nudge(candidates, ledger, emotion="calm", score=0.9) is None


def test_a_follow_up_dated_by_day_is_due_from_the_next_morning_in_the_users_timezone() -> None:
    karachi = ZoneInfo("Asia/Karachi")
    due = due_from_day(date(2026, 11, 27), karachi)
    assert due == datetime(2026, 11, 28, 0, 0, tzinfo=karachi)


# --- the watcher ----------------------------------------------------------------------------


class Recorder:
    """An on_nudge target that records what it was asked to say."""

    def __init__(self) -> None:
        self.said: list[str] = []
        self.event = asyncio.Event()

    def __call__(self, text: str) -> None:
        self.said.append(text)
        self.event.set()

    async def wait(self) -> None:
        await asyncio.wait_for(self.event.wait(), WAIT_S)
        self.event.clear()


def always_nudge(counter: list[int]):
    async def decide(silence_s: float, engagement: float, ledger: NudgeLedger) -> Nudge:
        counter.append(1)
        n = len(counter)
        return Nudge(f"say something ({n})", f"topic-{n}", "test", 1.0)

    return decide


async def test_silence_leads_to_a_nudge_and_the_limit_stops_further_ones() -> None:
    calls: list[int] = []
    said = Recorder()
    watcher = SilenceWatcher(decide=always_nudge(calls), on_nudge=said, after_s=0.02,
                             max_nudges=2)
    watcher.agent_state("listening")
    await said.wait()
    await said.wait()
    assert said.said == ["say something (1)", "say something (2)"]
    assert watcher.nudges == 2
    # The limit is reached: the watcher schedules nothing more, whatever happens next.
    watcher.agent_state("speaking")
    watcher.agent_state("listening")
    assert watcher._timer is None
    await watcher.aclose()


async def test_no_nudge_fires_while_a_tool_runs_and_one_follows_once_it_ends() -> None:
    calls: list[int] = []
    said = Recorder()
    watcher = SilenceWatcher(decide=always_nudge(calls), on_nudge=said, after_s=0.02,
                             max_nudges=1)
    watcher.agent_state("listening")
    watcher.tool_started()
    await asyncio.sleep(0.2)  # ten silence periods: a timer ignoring the tool would have fired
    assert said.said == [] and calls == []
    watcher.tool_finished()
    await said.wait()
    assert said.said == ["say something (1)"]
    await watcher.aclose()


async def test_the_user_speaking_during_the_decision_cancels_that_nudge() -> None:
    said = Recorder()
    deciding = asyncio.Event()
    release = asyncio.Event()

    async def slow_decide(silence_s: float, engagement: float, ledger: NudgeLedger) -> Nudge:
        deciding.set()
        await release.wait()
        return Nudge("late nudge", "late", "test", 1.0)

    watcher = SilenceWatcher(decide=slow_decide, on_nudge=said, after_s=0.02, max_nudges=1)
    watcher.agent_state("listening")
    await asyncio.wait_for(deciding.wait(), WAIT_S)
    watcher.user_state("speaking")
    release.set()
    await asyncio.sleep(0.05)
    assert said.said == []
    assert watcher.nudges == 0
    await watcher.aclose()


async def test_a_declined_decision_is_asked_again_later_in_the_same_silence() -> None:
    said = Recorder()
    answers: list[Nudge | None] = [None, None, Nudge("now", "now", "test", 1.0)]

    async def decide(silence_s: float, engagement: float, ledger: NudgeLedger) -> Nudge | None:
        return answers.pop(0)

    watcher = SilenceWatcher(decide=decide, on_nudge=said, after_s=0.02, max_nudges=1)
    watcher.agent_state("listening")
    await said.wait()
    assert said.said == ["now"]
    assert watcher.stats()["deferrals"] == 2
    await watcher.aclose()


async def test_a_failing_on_nudge_is_logged_and_does_not_break_the_watcher() -> None:
    attempts: list[str] = []
    done = asyncio.Event()

    async def broken(text: str) -> None:
        attempts.append(text)
        if len(attempts) == 2:
            done.set()
        raise RuntimeError("speech failed")

    calls: list[int] = []
    watcher = SilenceWatcher(decide=always_nudge(calls), on_nudge=broken, after_s=0.02,
                             max_nudges=2)
    watcher.agent_state("listening")
    await asyncio.wait_for(done.wait(), WAIT_S)
    await asyncio.sleep(0)
    assert watcher.stats()["errors"] >= 1
    await watcher.aclose()


async def test_engagement_reflects_recent_user_turns() -> None:
    watcher = SilenceWatcher(decide=always_nudge([]), on_nudge=Recorder(), after_s=10,
                             max_nudges=1)
    assert watcher.engagement() == 0.0
    for _ in range(2):
        watcher.user_turn()
    assert watcher.engagement() == pytest.approx(0.5)
    for _ in range(5):
        watcher.user_turn()
    assert watcher.engagement() == 1.0
    await watcher.aclose()
