"""The retrieval engine: hybrid candidates (vectors + full-text), fusion, scoring, MMR.

Candidates come from a per-user in-process index kept current from Postgres (local_*.py) or,
for large users and cold starts, from one SQL statement (candidates.py, sql_search.py); both
feed the same scoring (scoring.py, on the columns of batch.py) and MMR.
"""

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
