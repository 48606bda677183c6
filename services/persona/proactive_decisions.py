"""What the companion could say unprompted, and how much it wants to: pure decisions.

The decision (`Nudge`), the score (`proactive_score`), a session's record of its nudges
(`NudgeLedger`) and the choice of what to nudge about (`nudge_candidates`, `compose_nudge`).
Nothing here does I/O or reads a clock: times and states are arguments.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.people.follow_up_service import FollowUp
from services.persona.personality_state import PersonalitySnapshot

_TONE = {
    "excited": "upbeat and lively", "happy": "cheerful", "content": "warm and easy",
    "calm": "gentle and calm", "sad": "soft and gentle", "anxious": "reassuring",
    "fearful": "reassuring", "angry": "patient and even", "bored": "light and playful",
    "neutral": "warm",
}
_NEED_ACTIONS = {
    "social": "Ask warmly how they are doing, or what is on their mind today.",
    "intellectual": "Share a small curious thought or ask their view on something they care "
                    "about.",
    "creative": "Suggest a small playful or imaginative idea you could explore together.",
    "rest": "Say softly that you are happy just to be here, with no need to talk.",
}
_CARE_EMOTIONS = frozenset({"sad", "anxious", "fearful", "angry"})


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Nudge:
    """A decision to speak unprompted: the instructions for the LLM and the reason for it."""

    instructions: str
    topic: str
    reason: str
    score: float
    follow_up_id: uuid.UUID | None = None


@dataclass(frozen=True)
class _Candidate:
    topic: str
    action: str
    reason: str
    follow_up_id: uuid.UUID | None = None


# --- pure decisions --------------------------------------------------------------------------


def proactive_score(
    *,
    since_contact_s: float,
    reference_s: float,
    need_urgency: float,
    extraversion: float,
    engagement: float,
) -> float:
    """How much the companion wants to speak up, in [0, 1].

    Time since contact saturates (1 - e^(-t/reference)); the social need's urgency, the
    companion's extraversion and the user's recent engagement (0..1) add to it.
    """

    def unit(x: float) -> float:
        return 0.0 if math.isnan(x) else min(1.0, max(0.0, x))

    recency = 1.0 - math.exp(-max(0.0, since_contact_s) / reference_s) if reference_s > 0 else 1.0
    score = (
        0.4 * unit(recency) + 0.25 * unit(need_urgency) + 0.2 * unit(extraversion)
        + 0.15 * unit(engagement)
    )
    return unit(score)


@dataclass
class NudgeLedger:
    """What one session has nudged: how many, about what, and the exact texts used."""

    max_nudges: int
    count: int = 0
    topics: set[str] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)

    @property
    def exhausted(self) -> bool:
        return self.count >= self.max_nudges

    def record(self, nudge: Nudge) -> None:
        self.count += 1
        self.topics.add(nudge.topic)
        self.texts.add(nudge.instructions)


def nudge_candidates(
    snapshot: PersonalitySnapshot, follow_ups: Sequence[FollowUp]
) -> list[_Candidate]:
    """What a nudge could be about, best first: due follow-ups, pressing needs, care, check-ins."""
    found = [
        _Candidate(
            f"follow_up:{f.id}",
            f"Follow up on {f.label}.",
            "a follow-up is due",
            f.id,
        )
        for f in follow_ups
    ]
    needs = snapshot.needs
    wanting = sorted(
        (n for n in ("social", "intellectual", "creative") if needs.urgency(n) >= 0.5),
        key=lambda n: -needs.urgency(n),
    )
    found += [_Candidate(f"need:{n}", _NEED_ACTIONS[n], f"{n} need is high") for n in wanting]
    if needs.urgency("rest") >= 0.6:
        found.append(_Candidate("need:rest", _NEED_ACTIONS["rest"], "the companion is tired"))
    if snapshot.mood.emotion in _CARE_EMOTIONS:
        found.append(_Candidate(
            "mood:care", "Check in softly on how they are feeling, with no pressure to talk.",
            "the mood calls for care",
        ))
    found.append(_Candidate(
        "check_in", "Lightly check whether they are still there and want to keep talking.",
        "a plain check-in",
    ))
    found.append(_Candidate(
        "open_door", "Say you are here whenever they want to talk, and let them take their time.",
        "leaving the door open",
    ))
    return found


def compose_nudge(
    candidates: Sequence[_Candidate], ledger: NudgeLedger, *, emotion: str, score: float
) -> Nudge | None:
    """The first candidate this session has not used yet, as instructions; None if none left."""
    tone = _TONE.get(emotion, "warm")
    for candidate in candidates:
        if candidate.topic in ledger.topics:
            continue
        earlier = (
            " Say something new: do not repeat your earlier check-ins." if ledger.count else ""
        )
        text = (
            f"The user has gone quiet. {candidate.action} Tone: {tone}. One short sentence in "
            f"your own words; do not mention the silence.{earlier}"
        )
        if text in ledger.texts:
            continue
        return Nudge(text, candidate.topic, candidate.reason, score, candidate.follow_up_id)
    return None
