"""LatencyWindow: the last samples and their percentiles."""

from __future__ import annotations

import pytest

from core.latency import LatencyWindow

pytestmark = pytest.mark.unit


def test_a_window_keeps_its_last_samples_in_order_and_counts_every_one() -> None:
    window = LatencyWindow(size=3)
    for ms in (5.0, 1.0, 4.0, 2.0):
        window.add(ms)
    assert window.values() == [1.0, 4.0, 2.0]
    assert window.count == 4
    assert window.summary()["p50"] == 2.0


def test_an_empty_window_has_no_values_and_zero_percentiles() -> None:
    window = LatencyWindow()
    assert window.values() == []
    assert window.summary() == {"count": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
