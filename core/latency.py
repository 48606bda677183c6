"""A bounded window of recent durations with percentiles, for the stats tools and logs."""

from __future__ import annotations

from collections import deque

import numpy as np


class LatencyWindow:
    """Keeps the last `size` samples (milliseconds) and reports p50/p95/p99 over them."""

    def __init__(self, size: int = 1_000) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, ms: float) -> None:
        self._samples.append(ms)
        self.count += 1

    def values(self) -> list[float]:
        """The samples kept, oldest first: what several windows' percentiles are pooled from."""
        return list(self._samples)

    def summary(self) -> dict[str, float | int]:
        if not self._samples:
            return {"count": self.count, "p50": 0.0, "p95": 0.0, "p99": 0.0}
        p50, p95, p99 = np.percentile(np.fromiter(self._samples, dtype=float), [50, 95, 99])
        return {
            "count": self.count,
            "p50": round(float(p50), 3),
            "p95": round(float(p95), 3),
            "p99": round(float(p99), 3),
        }
