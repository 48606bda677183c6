"""Synthetic things a person tells their companion: stored turns over months, and new turns.

Used by the turn-overhead and capacity benchmarks; deterministic for a given `random.Random`.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from core.memory_records import Episode

PEOPLE = ["Maya", "Tom", "Priya", "Leo", "Ana", "Sam", "Noor", "Ivan", "Mei", "Omar"]
RELATIONS = ["sister", "brother", "friend", "boss", "neighbour", "cousin", "coach", "mother"]
THINGS = ["climbing", "the garden", "a jazz concert", "the new job", "a cooking class",
          "the dentist", "a road trip", "chess club", "the marathon", "a piano lesson",
          "the book club", "a hike", "the move", "a job interview", "the exam", "yoga"]
FEELINGS = ["happy", "tired", "nervous", "excited", "worried", "proud", "calm", "annoyed"]
WHEN = ["yesterday", "last week", "this morning", "on Saturday", "two days ago", "tonight"]


def synthetic_episodes(n: int, rng: random.Random, now: datetime) -> list[Episode]:
    """n distinct turns a person might have said over months."""
    out: list[Episode] = []
    seen: set[str] = set()
    while len(out) < n:
        person, relation = rng.choice(PEOPLE), rng.choice(RELATIONS)
        thing, feeling, when = rng.choice(THINGS), rng.choice(FEELINGS), rng.choice(WHEN)
        text = rng.choice([
            f"My {relation} {person} and I went to {thing} {when}, I felt {feeling}.",
            f"I was {feeling} about {thing} {when} because {person} could not come.",
            f"{person} my {relation} told me about {thing}; I am {feeling} for them.",
            f"Thinking about {thing} makes me {feeling}, {person} says I should keep at it.",
        ]) + f" ({len(out)})"
        if text in seen:
            continue
        seen.add(text)
        occurred = now - timedelta(minutes=rng.randint(1, 60 * 24 * 365))
        out.append(Episode(speaker="user", text=text, occurred_at=occurred))
    return out


def turn_texts(n: int, rng: random.Random) -> list[str]:
    """n new turns, each a different text (no embedding cache hit)."""
    out = []
    for i in range(n):
        out.append(rng.choice([
            f"Do you remember what my {rng.choice(RELATIONS)} said about {rng.choice(THINGS)}?",
            f"I feel {rng.choice(FEELINGS)} today, {rng.choice(THINGS)} is coming up.",
            f"What did I tell you about {rng.choice(PEOPLE)} {rng.choice(WHEN)}?",
            f"Guess what, {rng.choice(PEOPLE)} called me about {rng.choice(THINGS)}!",
        ]) + f" #{i}")
    return out
