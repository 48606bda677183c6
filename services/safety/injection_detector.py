"""The local prompt-injection detector: normalized text against curated weighted patterns.

Pure and synchronous (regexes only, no I/O, no model), so it can run on every user turn before
retrieval and the LLM. It reads the whole text in time linear in its length (see
`injection_views` and `injection_patterns`); the turn's size limit bounds that time.
`SecurityService` wraps it with incident records and the refusal.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.safety.injection_patterns import (
    ID_TARGET,
    PATTERN_GROUPS,
    VOCABULARY,
    PatternGroup,
)
from services.safety.injection_signals import SCOPED, InjectionCategory, Pattern
from services.safety.injection_views import Views, canonical, normalize

DEFAULT_THRESHOLD = 0.5
MATCHED_CHARS = 120
FOREIGN_ID_PATTERN = "id.foreign_uuid"
# Someone else's id aimed at ("user <id>", "<id>'s memories") is a signal by itself; an id
# read off an invoice or a parcel is not, and only counts when something else backs it up.
# Either way no tool or retrieval path can reach another user: ids never leave the session.
FOREIGN_ID_TARGET_WEIGHT = 0.85
FOREIGN_ID_MENTION_WEIGHT = 0.3
_TOOL_ARG_MAX_DEPTH = 4


@dataclass(frozen=True)
class InjectionVerdict:
    """What the detector found in one text.

    Attributes:
        flagged: the combined score reached the threshold; the turn should be refused.
        category: the category of the strongest signal (NONE when not flagged).
        score: 0..1, the signals combined as independent evidence.
        pattern: name of the strongest signal (None when not flagged).
        matched: the normalized text that signal matched, shortened (empty when not flagged).
        signals: every signal seen, strongest first, including ones too weak on their own.
    """

    flagged: bool
    category: InjectionCategory
    score: float
    pattern: str | None
    matched: str
    signals: tuple[str, ...] = ()

    @classmethod
    def clean(cls, signals: tuple[str, ...] = (), score: float = 0.0) -> InjectionVerdict:
        return cls(False, InjectionCategory.NONE, score, None, "", signals)


@dataclass(frozen=True)
class _Hit:
    name: str
    category: InjectionCategory
    weight: float
    matched: str


class InjectionDetector:
    """Scores a text against `PATTERNS` and flags it from `threshold` on.

    Args:
        threshold: combined score (0..1) from which a text is flagged.
    """

    def __init__(self, *, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold

    def inspect(
        self,
        text: object,
        *,
        user_id: uuid.UUID | None = None,
        companion_id: uuid.UUID | None = None,
        allowed_ids: Iterable[uuid.UUID] = (),
    ) -> InjectionVerdict:
        """Check one text; never raises, whatever it is given.

        Args:
            text: what the user said (str; bytes and other objects are coerced).
            user_id: the session's own user; a UUID in the text that is not this one (nor
                `companion_id` nor one of `allowed_ids`) is a signal by itself. Without it,
                every UUID in the text counts as foreign.
            companion_id: the session's companion.
            allowed_ids: further ids the text may legitimately contain.
        """
        views = normalize(text, VOCABULARY)
        hits = [hit for group in PATTERN_GROUPS for hit in _group_hits(group, views)]
        own = {i for i in (user_id, companion_id, *allowed_ids) if i is not None}
        foreign = _foreign_id(views, own)
        if foreign is not None:
            hits.append(foreign)
        return self._verdict(hits)

    @staticmethod
    def key(text: object) -> str:
        """What the verdict on `text` depends on: texts with the same key get the same
        verdict (for the same session ids), so verdicts can be cached under it."""
        return canonical(text)

    def inspect_tool_args(
        self,
        args: Mapping[str, Any],
        *,
        user_id: uuid.UUID,
        companion_id: uuid.UUID | None = None,
    ) -> InjectionVerdict:
        """Check the arguments the LLM chose for a tool call (ids of other users, say)."""
        parts: list[str] = []
        _flatten(args, parts, 0)
        return self.inspect("\n".join(parts), user_id=user_id, companion_id=companion_id)

    def _verdict(self, hits: list[_Hit]) -> InjectionVerdict:
        if not hits:
            return InjectionVerdict.clean()
        hits.sort(key=lambda h: h.weight, reverse=True)
        score = 1.0 - math.prod(1.0 - h.weight for h in hits)
        score = round(min(1.0, max(0.0, score)), 3)
        signals = tuple(h.name for h in hits)
        if score < self.threshold:
            return InjectionVerdict.clean(signals, score)
        top = hits[0]
        return InjectionVerdict(
            flagged=True,
            category=top.category,
            score=score,
            pattern=top.name,
            matched=top.matched[:MATCHED_CHARS],
            signals=signals,
        )


def _view(views: Views, name: str) -> str | None:
    if name == "squashed":
        return views.squashed
    return views.raw if name == "raw" else views.words


def _group_hits(group: PatternGroup, views: Views) -> list[_Hit]:
    """The hits of a group's patterns. One scan finds every place where any of them can
    start; each pattern is then tried only there, so a frame costs one scan in any number of
    languages."""
    text = _view(views, group.view)
    if not text:
        return []
    if group.any_match is None:
        hit = _match(group.patterns[0], group.patterns[0].regex.finditer(text))
        return [] if hit is None else [hit]
    starts: list[int] = []
    position = 0
    while (found := group.any_match.search(text, position)) is not None:
        starts.append(found.start())
        position = found.start() + 1
    hits = []
    for pattern in group.patterns if starts else ():
        matches = (m for p in starts if (m := pattern.regex.match(text, p)) is not None)
        hit = _match(pattern, matches)
        if hit is not None:
            hits.append(hit)
    return hits


def _match(pattern: Pattern, matches: Iterable[re.Match[str]]) -> _Hit | None:
    """The pattern's strongest reading among its matches: the first full one, else the first
    scoped one."""
    scoped: re.Match[str] | None = None
    for match in matches:
        share = 1.0 if pattern.check is None else pattern.check(match)
        if share >= 1.0:
            return _Hit(pattern.name, pattern.category, pattern.weight, match.group(0).strip())
        if share > 0.0 and scoped is None:
            scoped = match
    if scoped is None:
        return None
    return _Hit(f"{pattern.name}:scoped", pattern.category, pattern.weight * SCOPED,
                scoped.group(0).strip())


def _foreign_id(views: Views, own: set[uuid.UUID]) -> _Hit | None:
    foreign = [found for found in views.uuids if found not in own]
    if not foreign:
        return None
    for match in ID_TARGET.finditer(views.words):
        letter = match.group(1) or match.group(2)
        index = ord(letter) - ord("a")
        if index < len(views.uuids) and views.uuids[index] not in own:
            return _Hit(FOREIGN_ID_PATTERN, InjectionCategory.FOREIGN_ID,
                        FOREIGN_ID_TARGET_WEIGHT, str(views.uuids[index]))
    return _Hit(FOREIGN_ID_PATTERN, InjectionCategory.FOREIGN_ID, FOREIGN_ID_MENTION_WEIGHT,
                str(foreign[0]))


def _flatten(value: Any, out: list[str], depth: int) -> None:
    if depth > _TOOL_ARG_MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            out.append(str(key))
            _flatten(item, out, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _flatten(item, out, depth + 1)
    elif value is not None:
        out.append(str(value))
