"""A companion's inner life toward one user, as values: mood, needs, quirks, and one
session's tally.

`StoredPersonality` is what is persisted and cached (values as of their own timestamps);
`PersonalitySnapshot` is the same brought to one moment; `SessionTally` collects what a
session contributes at its end. `LOAD_SQL` reads a pair's stored state in one round trip.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.people.companion_service import Companion
from services.persona import mood as moodlib
from services.persona.mood import NEEDS, QUIRK_ACTIVE_STRENGTH, Needs, QuirkPattern
from services.persona.pad import PAD, emotion_label, temperament

# Distinct patterns tracked per session; openers are open-ended, so the table is capped.
MAX_PATTERNS = 200

LOAD_SQL = """
select
  (select row_to_json(s) from (
     select pleasure, arousal, dominance, baseline_pleasure, baseline_arousal,
            baseline_dominance, emotion, updated_at
     from personality_state where user_id = $1 and companion_id = $2) s) as state,
  (select coalesce(json_agg(json_build_object(
     'need', need, 'level', level, 'updated_at', updated_at)), '[]'::json)
   from needs where user_id = $1 and companion_id = $2) as needs,
  (select coalesce(json_agg(json_build_object(
     'name', name, 'description', description, 'strength', strength, 'uses', uses,
     'last_used_at', last_used_at) order by strength desc), '[]'::json)
   from quirks where user_id = $1 and companion_id = $2) as quirks
"""


@dataclass(frozen=True)
class MoodState:
    """The companion's mood toward one user, as of `updated_at`.

    Attributes:
        mood: the current PAD point.
        baseline: where the mood rests when nothing happens (drifts slowly between sessions).
        emotion: the label of `mood` (see services.persona.pad.emotion_label).
        updated_at: when this state was computed; None for a never-stored initial state.
    """

    mood: PAD
    baseline: PAD
    emotion: str
    updated_at: datetime | None


@dataclass(frozen=True)
class Quirk:
    """A speech or behaviour pattern of the companion; `strength` is as of now (faded)."""

    name: str
    description: str
    strength: float
    uses: int
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.strength >= QUIRK_ACTIVE_STRENGTH


@dataclass(frozen=True)
class PersonalitySnapshot:
    """Mood, needs and quirks together, all brought to the same moment."""

    mood: MoodState
    needs: Needs
    quirks: tuple[Quirk, ...]


@dataclass
class StoredPersonality:
    """What is persisted (and cached): values as of their own timestamps, not decayed."""

    mood: PAD
    baseline: PAD
    emotion: str
    updated_at: datetime | None
    needs: dict[str, tuple[float, datetime | None]]
    quirks: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "mood": list(self.mood.as_tuple()),
            "baseline": list(self.baseline.as_tuple()),
            "emotion": self.emotion,
            "updated_at": _iso(self.updated_at),
            "needs": {n: [lvl, _iso(at)] for n, (lvl, at) in self.needs.items()},
            "quirks": [
                {**q, "last_used_at": _iso(q["last_used_at"])} for q in self.quirks.values()
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredPersonality:
        return cls(
            mood=PAD.from_sequence(data["mood"]),
            baseline=PAD.from_sequence(data["baseline"]),
            emotion=data["emotion"],
            updated_at=_parse_dt(data["updated_at"]),
            needs={n: (float(v[0]), _parse_dt(v[1])) for n, v in data["needs"].items()},
            quirks={
                q["name"]: {**q, "last_used_at": _parse_dt(q["last_used_at"])}
                for q in data["quirks"]
            },
        )

    @classmethod
    def from_row(cls, companion: Companion, row: asyncpg.Record | None) -> StoredPersonality:
        """From `LOAD_SQL`'s row; a pair never stored starts at the companion's temperament."""
        state = json.loads(row["state"]) if row and row["state"] else None
        if state is None:
            rest = temperament(companion.traits)
            mood, baseline, emotion, updated = rest, rest, emotion_label(rest), None
        else:
            mood = PAD(state["pleasure"], state["arousal"], state["dominance"])
            baseline = PAD(state["baseline_pleasure"], state["baseline_arousal"],
                           state["baseline_dominance"])
            emotion, updated = state["emotion"], _parse_dt(state["updated_at"])
        needs: dict[str, tuple[float, datetime | None]] = {
            n: (moodlib.DEFAULT_NEED_LEVEL, None) for n in NEEDS
        }
        for item in json.loads(row["needs"]) if row else []:
            needs[item["need"]] = (float(item["level"]), _parse_dt(item["updated_at"]))
        quirks = {
            q["name"]: {**q, "last_used_at": _parse_dt(q["last_used_at"])}
            for q in (json.loads(row["quirks"]) if row else [])
        }
        return cls(mood, baseline, emotion, updated, needs, quirks)


@dataclass
class SessionTally:
    """What one session contributes at its end: the moods it passed through, its patterns."""

    mood_sum: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    turns: int = 0
    patterns: Counter[str] = field(default_factory=Counter)
    descriptions: dict[str, str] = field(default_factory=dict)

    def add_mood(self, mood: PAD) -> None:
        for i, v in enumerate(mood.as_tuple()):
            self.mood_sum[i] += v
        self.turns += 1

    def mean(self) -> PAD | None:
        if not self.turns:
            return None
        return PAD(*(v / self.turns for v in self.mood_sum))

    def add_patterns(self, patterns: Sequence[QuirkPattern]) -> None:
        for pattern in patterns:
            if pattern.name not in self.patterns and len(self.patterns) >= MAX_PATTERNS:
                continue
            self.patterns[pattern.name] += 1
            self.descriptions[pattern.name] = pattern.description


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def elapsed_s(since: datetime | None, now: datetime) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())


