"""The retrieval engine: hybrid candidates (pgvector + full-text), fusion, scoring, MMR."""

from __future__ import annotations

from rag_system.candidates import CandidateLimits, VectorPlan
from rag_system.engine import RetrievalEngine, RetrievalTuning
from rag_system.query import PreparedQuery, TimeWindow, prepare
from rag_system.scoring import ScoredMemory, ScoringWeights

__all__ = [
    "CandidateLimits",
    "PreparedQuery",
    "RetrievalEngine",
    "RetrievalTuning",
    "ScoredMemory",
    "ScoringWeights",
    "TimeWindow",
    "VectorPlan",
    "prepare",
]
