"""Prompt-injection screening of each user turn, incident records, and the polite refusal.

The check is local and regex-only (`InjectionDetector`), so it runs on every turn before
retrieval and the LLM. A flagged turn is not answered by the LLM and not stored as a memory:
the agent speaks `refusal(verdict)` instead, and `record_incident` files it in
`security_incidents` through the batcher, off the critical path.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.config import Settings
from core.dates import utc_now
from core.prompts import render
from core.validators import clean_text
from infrastructure.write_kinds import WriteKind
from services.safety.injection_detector import (
    DEFAULT_THRESHOLD,
    MATCHED_CHARS,
    InjectionDetector,
    InjectionVerdict,
)
from services.safety.injection_signals import InjectionCategory

if TYPE_CHECKING:
    from infrastructure.database_batcher import DatabaseBatcher

logger = logging.getLogger(__name__)

__all__ = ["InjectionCategory", "InjectionVerdict", "SecurityService", "refusal_text"]

INCIDENT_OP = "security.incident"
# The user and companion are resolved in SQL: an incident from an identity without a user row
# (or naming another user's companion) is still filed, with the claimed ids in `detail`.
_INCIDENT_SQL = """
insert into public.security_incidents
  (id, user_id, companion_id, kind, detail, excerpt, created_at)
select $1::uuid, u.id, c.id, $4::text, $5::text, $6::text, $7::timestamptz
from (select 1) as one
left join public.users u on u.id = $2::uuid
left join public.companions c on c.id = $3::uuid and c.user_id = $2::uuid
on conflict (id) do nothing
"""
INCIDENT_KIND = WriteKind.of(
    INCIDENT_OP, _INCIDENT_SQL,
    "id:uuid user_id:uuid? companion_id:uuid? kind:text detail:json excerpt:text created_at:time",
)
EXCERPT_CHARS = 280
# One person hammering the companion must not turn the incident table into their notebook.
DEFAULT_INCIDENTS_PER_MINUTE = 20
_FLOOD_WINDOW_S = 60.0
_FLOOD_MAX_TRACKED = 10_000

_REASONS = {
    InjectionCategory.INSTRUCTION_OVERRIDE: "I stay who I am and keep to how I work, whoever "
    "asks.",
    InjectionCategory.EXFILTRATION: "What anyone tells me stays private: I never pass one "
    "person's words on to someone else, and I keep yours just as safe.",
    InjectionCategory.FOREIGN_ID: "I only ever work with your own memories and settings, never "
    "anyone else's.",
    InjectionCategory.TOOL_ABUSE: "I can only act on your own memories and settings, never on "
    "anyone else's.",
    InjectionCategory.NONE: "That's not something I can help with.",
}


def refusal_text(category: InjectionCategory) -> str:
    """The polite refusal for a category, from prompts/refusal.md."""
    return render("refusal", reason=_REASONS[category])


class SecurityService:
    """Screens turns for prompt injection, files incidents and words the refusal.

    Args:
        batcher: carries incident rows to `security_incidents`; the op is registered here.
        settings: the application settings.
        threshold: combined score from which a text is flagged.
        incidents_per_minute: incidents filed per user per minute; more are only counted.
        clock: monotonic seconds, for the flood window.
        now: wall-clock time stamped on incidents.
    """

    def __init__(
        self,
        *,
        batcher: DatabaseBatcher,
        settings: Settings,
        threshold: float = DEFAULT_THRESHOLD,
        incidents_per_minute: int = DEFAULT_INCIDENTS_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._batcher = batcher
        self._settings = settings
        self._detector = InjectionDetector(threshold=threshold)
        self._incidents_per_minute = incidents_per_minute
        self._clock = clock
        self._now = now
        self._windows: dict[uuid.UUID | None, tuple[float, int]] = {}
        self._counters: dict[str, int] = {
            "inspected": 0,
            "flagged": 0,
            "incidents_recorded": 0,
            "incidents_suppressed": 0,
        }
        self._by_category: dict[str, int] = {
            c.value: 0 for c in InjectionCategory if c is not InjectionCategory.NONE
        }
        batcher.register(INCIDENT_KIND)

    def inspect(
        self,
        text: object,
        *,
        user_id: uuid.UUID | None = None,
        companion_id: uuid.UUID | None = None,
        allowed_ids: Iterable[uuid.UUID] = (),
    ) -> InjectionVerdict:
        """Check one user turn; never raises. See `InjectionDetector.inspect`."""
        verdict = self._detector.inspect(
            text, user_id=user_id, companion_id=companion_id, allowed_ids=allowed_ids
        )
        return self._count(verdict)

    def screening_key(self, text: object) -> str:
        """What the verdict on `text` depends on: texts with the same key get the same verdict
        (for the same ids), so verdicts may be cached under it and under nothing looser."""
        return self._detector.key(text)

    def inspect_tool_args(
        self,
        args: Mapping[str, Any],
        *,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None = None,
    ) -> InjectionVerdict:
        """Check the arguments the LLM chose for a tool call (ids of other users, say)."""
        verdict = self._detector.inspect_tool_args(
            args, user_id=user_id, companion_id=companion_id
        )
        return self._count(verdict)

    def record_incident(
        self,
        user_id: uuid.UUID | None,
        companion_id: uuid.UUID | None,
        verdict: InjectionVerdict,
        excerpt: object,
    ) -> bool:
        """File an incident through the batcher; False when the flood cap dropped it.

        Returns at once. The excerpt is cleaned (no control characters, valid UTF-8) and cut
        to `EXCERPT_CHARS`; the verdict's pattern, score and signals go into `detail`.
        """
        if not self._admit(user_id):
            self._counters["incidents_suppressed"] += 1
            return False
        detail = {
            "pattern": verdict.pattern,
            "score": verdict.score,
            "signals": list(verdict.signals),
            "matched": _excerpt(verdict.matched, MATCHED_CHARS),
            "claimed_user_id": str(user_id) if user_id is not None else None,
            "claimed_companion_id": str(companion_id) if companion_id is not None else None,
        }
        self._batcher.enqueue(
            INCIDENT_OP,
            (
                uuid.uuid4(), user_id, companion_id, verdict.category.value,
                json.dumps(detail, ensure_ascii=False), _excerpt(excerpt, EXCERPT_CHARS),
                self._now(),
            ),
        )
        self._counters["incidents_recorded"] += 1
        return True

    def refusal(self, verdict: InjectionVerdict) -> str:
        """What the companion says instead of answering a flagged turn."""
        return refusal_text(verdict.category)

    def stats(self) -> dict[str, Any]:
        return {**self._counters, "by_category": dict(self._by_category)}

    def _count(self, verdict: InjectionVerdict) -> InjectionVerdict:
        self._counters["inspected"] += 1
        if verdict.flagged:
            self._counters["flagged"] += 1
            self._by_category[verdict.category.value] += 1
            logger.info(
                "message flagged (category=%s, pattern=%s)",
                verdict.category.value, verdict.pattern,
            )
        return verdict

    def _admit(self, user_id: uuid.UUID | None) -> bool:
        now = self._clock()
        start, count = self._windows.get(user_id, (now, 0))
        if now - start >= _FLOOD_WINDOW_S:
            start, count = now, 0
        if count >= self._incidents_per_minute:
            return False
        if len(self._windows) >= _FLOOD_MAX_TRACKED and user_id not in self._windows:
            self._windows = {
                k: v for k, v in self._windows.items() if now - v[0] < _FLOOD_WINDOW_S
            }
        self._windows[user_id] = (start, count + 1)
        return True


def _excerpt(raw: object, max_chars: int) -> str:
    text = raw if isinstance(raw, str | bytes) else str(raw)
    # Cut before cleaning: only the start is kept, so a huge text costs what a short one does.
    text = text[: 4 * max_chars]
    cleaned = clean_text(text, field="excerpt", max_chars=4 * max_chars, truncate=True)
    if len(cleaned) <= max_chars:
        return cleaned
    return cleaned[: max_chars - 1].rstrip() + "…"
