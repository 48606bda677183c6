"""LoCoMo-format conversations read from their .json files: turns, dates and the questions.

Each file is one conversation: sessions of turns (`session_N`, dated by
`session_N_date_time`) and its `qa` list. The annotation fields (events_session_N,
session_N_observation, session_N_summary) and a shared image's search query are never read.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

CATEGORIES = (1, 2, 3, 4)
# Turns of a session are spaced this far apart (the data gives one time per session).
TURN_SPACING = timedelta(seconds=20)
_SESSION_KEY = re.compile(r"^session_(\d+)$")


@dataclass
class Turn:
    dia_id: str
    text: str
    at: datetime
    session: int


@dataclass
class Question:
    text: str
    category: int
    evidence: list[str]


@dataclass
class Conversation:
    name: str
    turns: list[Turn]
    questions: list[Question]
    user_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @cached_property
    def end(self) -> datetime:
        # Cached: it is passed as `now` inside the timed search call.
        return max(t.at for t in self.turns) + timedelta(days=1)


def _session_time(raw: str) -> datetime:
    return datetime.strptime(raw.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def _evidence(raw: Sequence[str], known: set[str]) -> list[str]:
    # A few entries are malformed ("D8:6; D9:17", "D:11:26"); keep what names a real turn.
    out: list[str] = []
    for item in raw:
        for part in re.split(r"[;,\s]+", str(item)):
            part = re.sub(r"^D:", "D", part.strip())
            if part in known and part not in out:
                out.append(part)
    return out


def load_conversation(path: Path) -> Conversation:
    """One conversation: every turn as "Speaker: text" (with a shared photo's caption) at its
    session's date, and its questions of categories 1-4 that name at least one real turn."""
    data = json.loads(path.read_text())
    data = data.get("conversation", data) | {"qa": data.get("qa", [])}
    sessions = sorted(
        (int(m.group(1)), key) for key in data if (m := _SESSION_KEY.match(key))
    )
    turns: list[Turn] = []
    for number, key in sessions:
        start = _session_time(data[f"{key}_date_time"])
        for i, raw in enumerate(data[key]):
            text = f"{raw['speaker']}: {raw['text']}"
            if raw.get("blip_caption"):
                # What was shared in the turn; the image search "query" field is not.
                text += f" [shares {raw['blip_caption']}]"
            turns.append(Turn(raw["dia_id"], text, start + i * TURN_SPACING, number))
    known = {t.dia_id for t in turns}
    questions = []
    for qa in data["qa"]:
        if qa.get("category") not in CATEGORIES:
            continue
        evidence = _evidence(qa.get("evidence", []), known)
        if evidence:
            questions.append(Question(str(qa["question"]), int(qa["category"]), evidence))
    return Conversation(path.stem, turns, questions)


def load_dataset(directory: Path) -> list[Conversation]:
    files = sorted(p for p in directory.glob("*.json"))
    if not files:
        raise SystemExit(f"no LoCoMo .json files in {directory}")
    return [load_conversation(p) for p in files]
