"""The companion's inner life per user: PAD mood, needs and quirks, persisted with history.

Big Five traits are fixed on the companion. Each user turn is appraised locally (no LLM on the
critical path) and moves the mood; time pulls the mood back toward its baseline; at session
end the baseline drifts a bounded step toward the session's mean mood and patterns that
recurred feed quirks. The state sits in the shared cache (so any worker sees it) and every
change goes to Postgres through the write batcher, with a history row.

One job owns a session, so while it is open its live state is held here, in process: a turn
reads nothing and writes the cache behind, off the turn's path (in order, newest last), instead
of two cache round trips before the reply. The session's end writes the final state and waits
for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from core.config import Settings
from core.dates import utc_now
from core.latency import LatencyWindow
from core.tasks import BackgroundTasks
from core.validators import MAX_UTTERANCE_CHARS, clean_text
from infrastructure.cache import Cache
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.write_kinds import WriteKind
from services.people.companion_service import Companion
from services.persona import mood as moodlib
from services.persona.mood import NEEDS, Needs, QuirkPattern
from services.persona.pad import (
    apply_impulse,
    decay_toward,
    drift_baseline,
    emotion_label,
    sensitivity,
)
from services.persona.personality_state import (
    LOAD_SQL,
    MoodState,
    PersonalitySnapshot,
    Quirk,
    SessionTally,
    StoredPersonality,
    elapsed_s,
)

logger = logging.getLogger(__name__)

MAX_DESCRIBED_QUIRKS = 3

_OP_STATE = "personality.state"
_OP_HISTORY = "personality.history"
_OP_NEED = "personality.need"
_OP_QUIRK = "personality.quirk"
# Upserts keep the newest write: a retried or replayed older batch cannot roll state back.
_SQL = {
    _OP_STATE: (
        "insert into personality_state (user_id, companion_id, pleasure, arousal, dominance, "
        "baseline_pleasure, baseline_arousal, baseline_dominance, emotion, updated_at) "
        "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
        "on conflict (user_id, companion_id) do update set pleasure = excluded.pleasure, "
        "arousal = excluded.arousal, dominance = excluded.dominance, "
        "baseline_pleasure = excluded.baseline_pleasure, "
        "baseline_arousal = excluded.baseline_arousal, "
        "baseline_dominance = excluded.baseline_dominance, emotion = excluded.emotion, "
        "updated_at = excluded.updated_at "
        "where personality_state.updated_at <= excluded.updated_at"
    ),
    _OP_HISTORY: (
        "insert into personality_history (id, user_id, companion_id, pleasure, arousal, "
        "dominance, emotion, reason, created_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "on conflict (id) do nothing"
    ),
    _OP_NEED: (
        "insert into needs (user_id, companion_id, need, level, updated_at) "
        "values ($1, $2, $3, $4, $5) on conflict (user_id, companion_id, need) do update "
        "set level = excluded.level, updated_at = excluded.updated_at "
        "where needs.updated_at <= excluded.updated_at"
    ),
    _OP_QUIRK: (
        "insert into quirks (user_id, companion_id, name, description, strength, uses, "
        "last_used_at) values ($1, $2, $3, $4, $5, $6, $7) "
        "on conflict (user_id, companion_id, name) do update "
        "set description = excluded.description, strength = excluded.strength, "
        "uses = excluded.uses, last_used_at = excluded.last_used_at "
        "where quirks.last_used_at is null or quirks.last_used_at <= excluded.last_used_at"
    ),
}
_PAIR = "user_id:uuid companion_id:uuid"
WRITE_KINDS = (
    WriteKind.of(_OP_STATE, _SQL[_OP_STATE], f"{_PAIR} pleasure:float arousal:float "
                 "dominance:float baseline_pleasure:float baseline_arousal:float "
                 "baseline_dominance:float emotion:text updated_at:time"),
    WriteKind.of(_OP_HISTORY, _SQL[_OP_HISTORY], f"id:uuid {_PAIR} pleasure:float "
                 "arousal:float dominance:float emotion:text reason:text created_at:time"),
    WriteKind.of(_OP_NEED, _SQL[_OP_NEED], f"{_PAIR} need:text level:float updated_at:time"),
    WriteKind.of(_OP_QUIRK, _SQL[_OP_QUIRK], f"{_PAIR} name:text description:text "
                 "strength:float uses:int last_used_at:time"),
)


class PersonalityService:
    """Mood, needs and quirks of each companion toward each user.

    Args:
        pool: the shared connection pool (reads on a cache miss).
        cache: the shared cache; the live state of a pair is kept under
            `personality:<user_id>:<companion_id>`.
        batcher: every write goes through it (registered ops `personality.*`).
        settings: mood half-life, drift rate and step, needs half-life, quirk settings.
        clock: returns "now" (aware); tests pass a controllable one.
    """

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        cache: Cache,
        batcher: DatabaseBatcher,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._batcher = batcher
        self._settings = settings
        self._clock = clock
        for kind in WRITE_KINDS:
            batcher.register(kind)
        self._sessions: dict[tuple[uuid.UUID, uuid.UUID], SessionTally] = {}
        # The state of each pair with a session open here (from its first turn to its end).
        self._live: dict[tuple[uuid.UUID, uuid.UUID], StoredPersonality] = {}
        # Cache writes behind the turns: the newest state not yet written, and the one task
        # per key writing it.
        self._unwritten: dict[str, dict[str, Any]] = {}
        self._writers: dict[str, asyncio.Future[Any]] = {}
        self._tasks = BackgroundTasks("personality")
        self._turn_ms = LatencyWindow()
        self._loads = 0
        self._sessions_ended = 0
        self._quirks_reinforced = 0

    # --- reading -----------------------------------------------------------------------------

    async def snapshot(self, user_id: uuid.UUID, companion: Companion) -> PersonalitySnapshot:
        """Mood, needs and quirks as of now: a session's live state, else one cache read (one
        query on a miss)."""
        stored = self._live.get((user_id, companion.id))
        if stored is None:
            stored = await self._load(user_id, companion)
        return self._view(stored, self._clock())

    # --- writing -----------------------------------------------------------------------------

    async def on_user_turn(
        self, user_id: uuid.UUID, companion: Companion, text: str
    ) -> MoodState:
        """Appraise a user turn, move mood and needs, persist both (batched) with history.

        The session's first turn loads the state; later turns use the live one and wait for
        no I/O: the cache is written behind (`drain` waits for it).
        """
        started = time.perf_counter()
        text = clean_text(text, field="utterance", max_chars=MAX_UTTERANCE_CHARS, truncate=True)
        now = self._clock()
        stored = self._live.get((user_id, companion.id))
        if stored is None:
            stored = self._live[(user_id, companion.id)] = await self._load(user_id, companion)
        view = self._view(stored, now)
        impulse = moodlib.appraise(text)
        mood = apply_impulse(view.mood.mood, impulse, sensitivity(companion.traits))
        needs = moodlib.satisfy(view.needs, moodlib.need_deltas(text))
        state = MoodState(mood, view.mood.baseline, emotion_label(mood), now)

        session = self._session(user_id, companion)
        session.add_mood(mood)
        session.add_patterns(moodlib.user_patterns(text))

        stored.mood, stored.emotion, stored.updated_at = mood, state.emotion, now
        stored.needs = {n: (float(getattr(needs, n)), now) for n in NEEDS}
        self._write_behind(self._key(user_id, companion), stored)
        self._persist_state(user_id, companion, stored, reason="user_turn")
        for name in NEEDS:
            self._batcher.enqueue(
                _OP_NEED, (user_id, companion.id, name, float(getattr(needs, name)), now)
            )
        self._turn_ms.add((time.perf_counter() - started) * 1000)
        return state

    def observe_reply(self, user_id: uuid.UUID, companion: Companion, text: str) -> None:
        """Count patterns in the companion's own reply; no I/O (quirks update at session end)."""
        self._session(user_id, companion).add_patterns(moodlib.reply_patterns(text))

    async def end_session(self, user_id: uuid.UUID, companion: Companion) -> MoodState:
        """Drift the baseline toward the session's mean mood and feed recurring patterns into
        quirks; persists through the batcher. Safe to call for a session without turns."""
        now = self._clock()
        session = self._sessions.pop((user_id, companion.id), SessionTally())
        stored = self._live.pop((user_id, companion.id), None)
        if stored is None:
            stored = await self._load(user_id, companion)
        view = self._view(stored, now)
        mean = session.mean()
        baseline = view.mood.baseline
        if mean is not None:
            baseline = drift_baseline(
                baseline, mean, rate=self._settings.mood_drift_rate,
                max_step=self._settings.mood_drift_max_step,
            )
        recurring = [
            QuirkPattern(name, session.descriptions[name])
            for name, count in session.patterns.items()
            if count >= self._settings.quirk_min_repeats
        ]
        stored.mood, stored.baseline = view.mood.mood, baseline
        stored.emotion, stored.updated_at = view.mood.emotion, now
        self._reinforce(user_id, companion, stored, recurring, now,
                        uses={n: session.patterns[n] for n in session.patterns})
        # After the turns' writes behind, and waited for: the next session may be elsewhere.
        await self._write_behind(self._key(user_id, companion), stored)
        self._persist_state(user_id, companion, stored, reason="session_end")
        self._sessions_ended += 1
        logger.info(
            "personality session ended (turns=%s, drifted=%s, quirks_fed=%s)",
            session.turns, mean is not None, len(recurring),
        )
        return MoodState(view.mood.mood, baseline, view.mood.emotion, now)

    # --- instructions ------------------------------------------------------------------------

    def describe(
        self,
        companion: Companion,
        mood: MoodState,
        quirks: Sequence[Quirk] = (),
        needs: Needs | None = None,
    ) -> str:
        """One compact paragraph for the instructions: character, mood, needs, quirks."""
        parts = [f"You are {companion.name}, the user's {companion.character}."]
        adjectives = _trait_words(companion)
        if adjectives:
            parts.append(f"Temperament: {', '.join(adjectives)}.")
        m = mood.mood
        parts.append(
            f"Current mood: {mood.emotion} (pleasure {m.pleasure:+.2f}, arousal "
            f"{m.arousal:+.2f}, dominance {m.dominance:+.2f}); let it colour your tone lightly."
        )
        if needs is not None:
            name, urgency = needs.most_pressing()
            if urgency >= 0.6:
                parts.append(f"You are {_NEED_WORDS[name]}.")
        active = [q for q in quirks if q.active][:MAX_DESCRIBED_QUIRKS]
        if active:
            parts.append("Habits: " + "; ".join(q.description for q in active) + ".")
        return " ".join(parts)

    async def drain(self) -> None:
        """Wait until every state written behind is in the cache."""
        await self._tasks.drain()

    async def aclose(self) -> None:
        """Finish the cache writes behind (before the cache closes)."""
        await self.drain()

    def stats(self) -> dict[str, Any]:
        return {
            "turns": self._turn_ms.count,
            "turn_ms": self._turn_ms.summary(),
            "db_loads": self._loads,
            "open_sessions": len(self._sessions),
            "live_states": len(self._live),
            "cache_writes_pending": len(self._writers),
            "sessions_ended": self._sessions_ended,
            "quirks_reinforced": self._quirks_reinforced,
        }

    # --- internals ---------------------------------------------------------------------------

    def _session(self, user_id: uuid.UUID, companion: Companion) -> SessionTally:
        return self._sessions.setdefault((user_id, companion.id), SessionTally())

    async def _load(self, user_id: uuid.UUID, companion: Companion) -> StoredPersonality:
        key = self._key(user_id, companion)
        cached = await self._cache.get_json(key)
        if isinstance(cached, dict):
            try:
                return StoredPersonality.from_json(cached)
            except (KeyError, TypeError, ValueError):
                logger.warning("cached personality state is malformed; reloading it")
        self._loads += 1
        row = await self._pool.fetchrow(LOAD_SQL, user_id, companion.id)
        stored = StoredPersonality.from_row(companion, row)
        await self._cache.set_json(key, stored.to_json(), ttl_s=self._settings.cache_default_ttl_s)
        return stored

    def _write_behind(self, key: str, stored: StoredPersonality) -> asyncio.Future[Any]:
        """Cache `stored` under `key` in the background; returns the key's writer.

        One writer per key writes the newest state it has not written yet until there is
        none, so the cache never ends on an older state than the last one given.
        """
        self._unwritten[key] = stored.to_json()
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = self._tasks.spawn(self._write_unwritten(key))
        return writer

    async def _write_unwritten(self, key: str) -> None:
        try:
            while (payload := self._unwritten.pop(key, None)) is not None:
                await self._cache.set_json(key, payload, ttl_s=self._settings.cache_default_ttl_s)
        finally:
            self._writers.pop(key, None)

    def _view(self, stored: StoredPersonality, now: datetime) -> PersonalitySnapshot:
        elapsed = elapsed_s(stored.updated_at, now)
        mood = decay_toward(stored.mood, stored.baseline, elapsed, self._settings.mood_half_life_s)
        needs = moodlib.decay_needs(
            Needs(**{n: lvl for n, (lvl, _) in stored.needs.items()}),
            {n: elapsed_s(at, now) for n, (_, at) in stored.needs.items()},
            self._settings.needs_half_life_s,
        )
        half_life = self._settings.quirk_half_life_days * 86_400
        quirks = sorted(
            (
                Quirk(
                    name=q["name"],
                    description=q["description"],
                    strength=moodlib.quirk_strength_now(
                        float(q["strength"]), elapsed_s(q["last_used_at"], now), half_life
                    ),
                    uses=int(q["uses"]),
                    last_used_at=q["last_used_at"],
                )
                for q in stored.quirks.values()
            ),
            key=lambda q: -q.strength,
        )
        return PersonalitySnapshot(
            MoodState(mood, stored.baseline, emotion_label(mood), stored.updated_at and now),
            needs,
            tuple(quirks),
        )

    def _reinforce(
        self,
        user_id: uuid.UUID,
        companion: Companion,
        stored: StoredPersonality,
        patterns: Sequence[QuirkPattern],
        now: datetime,
        *,
        uses: Mapping[str, int],
    ) -> None:
        current = {q.name: q for q in self._view(stored, now).quirks}
        for pattern in patterns:
            before = current.get(pattern.name)
            strength = moodlib.reinforce(before.strength if before else 0.0)
            count = (before.uses if before else 0) + max(1, uses.get(pattern.name, 1))
            stored.quirks[pattern.name] = {
                "name": pattern.name, "description": pattern.description,
                "strength": strength, "uses": count, "last_used_at": now,
            }
            self._batcher.enqueue(
                _OP_QUIRK,
                (user_id, companion.id, pattern.name, pattern.description, strength, count, now),
            )
            self._quirks_reinforced += 1

    def _persist_state(
        self, user_id: uuid.UUID, companion: Companion, stored: StoredPersonality, *, reason: str
    ) -> None:
        m, b = stored.mood, stored.baseline
        self._batcher.enqueue(
            _OP_STATE,
            (user_id, companion.id, m.pleasure, m.arousal, m.dominance, b.pleasure, b.arousal,
             b.dominance, stored.emotion, stored.updated_at),
        )
        self._batcher.enqueue(
            _OP_HISTORY,
            (uuid.uuid4(), user_id, companion.id, m.pleasure, m.arousal, m.dominance,
             stored.emotion, reason, stored.updated_at),
        )

    def forget(self, user_id: uuid.UUID, companion_ids: Sequence[uuid.UUID]) -> None:
        """Everything about the person was erased: drop the sessions' tallies kept here (the
        caller drops the cached state, under `cache_key`)."""
        for companion_id in companion_ids:
            self._sessions.pop((user_id, companion_id), None)

    @staticmethod
    def cache_key(user_id: uuid.UUID, companion_id: uuid.UUID) -> str:
        return f"personality:{user_id}:{companion_id}"

    @classmethod
    def _key(cls, user_id: uuid.UUID, companion: Companion) -> str:
        return cls.cache_key(user_id, companion.id)


_NEED_WORDS = {
    "social": "longing for some warm, personal conversation",
    "intellectual": "hungry for an interesting idea or question to think about",
    "creative": "in the mood for something playful or imaginative",
    "rest": "a little tired; keep things gentle and unhurried",
}


def _trait_words(companion: Companion) -> list[str]:
    t = companion.traits
    pairs = (
        (t.openness, "curious", "practical"),
        (t.conscientiousness, "dependable", "spontaneous"),
        (t.extraversion, "outgoing", "reserved"),
        (t.agreeableness, "warm", "blunt"),
        (t.neuroticism, "sensitive", "steady"),
    )
    return [high if v >= 0.65 else low for v, high, low in pairs if v >= 0.65 or v <= 0.35]
