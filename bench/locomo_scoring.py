"""How the LoCoMo benchmark scores a system: recall and hits at k per question, and the map
from stored rows back to the turns they stand for."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import percentiles
from bench.locomo_data import Conversation, Question
from core.memory_records import content_hash

KS = (5, 10, 20)


@dataclass
class SystemRun:
    name: str
    recall: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    hit: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    by_category: dict[int, dict[int, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    search_ms: list[float] = field(default_factory=list)
    with_embedding_ms: list[float] = field(default_factory=list)
    short: int = 0
    ingest: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, question: Question, found: Sequence[set[str]]) -> None:
        """`found`: per result, the dia_ids it stands for (duplicates of one text share a row)."""
        evidence = set(question.evidence)
        for k in KS:
            covered = set().union(*found[:k]) if found else set()
            recall = len(evidence & covered) / len(evidence)
            hit = 1.0 if evidence & covered else 0.0
            self.recall[k].append(recall)
            self.hit[k].append(hit)
            self.by_category[question.category][k].append(recall)
        if len(found) < max(KS):
            self.short += 1

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in KS:
            out[f"recall@{k}"] = round(float(np.mean(self.recall[k])), 4)
        for k in KS:
            out[f"hit@{k}"] = round(float(np.mean(self.hit[k])), 4)
        out["by_category"] = {
            str(c): {f"recall@{k}": round(float(np.mean(v[k])), 4) for k in KS}
            | {"questions": len(v[KS[0]])}
            for c, v in sorted(self.by_category.items())
        }
        out["questions"] = len(self.recall[KS[0]])
        out["search_ms"] = percentiles(self.search_ms)
        out["with_embedding_ms"] = percentiles(self.with_embedding_ms)
        out["short_results"] = self.short
        if self.ingest:
            out["ingest"] = self.ingest
        out.update(self.extra)
        return out


class Corpus:
    """Maps stored rows back to dia_ids; a text said twice is stored once and stands for both."""

    def __init__(self, conversations: Sequence[Conversation]) -> None:
        self._by_hash: dict[tuple[uuid.UUID, str], set[str]] = defaultdict(set)
        for conv in conversations:
            for t in conv.turns:
                self._by_hash[(conv.user_id, content_hash(t.text))].add(t.dia_id)

    def ids_for(self, user_id: uuid.UUID, text: str) -> set[str]:
        return self._by_hash.get((user_id, content_hash(text)), set())
