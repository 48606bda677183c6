"""Clocks the services take in tests instead of the wall clock."""

from __future__ import annotations

from datetime import datetime, timedelta


class HandClock:
    """Says `now` until the test moves it (aware UTC datetimes)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move on by a `timedelta(**delta)`, e.g. `advance(days=1, hours=4)`."""
        self.now += timedelta(**delta)


class TickingClock:
    """`start`, one `step` later on every call: things saved in a row get distinct times."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self.start = start
        self.step = step
        self.ticks = 0

    def __call__(self) -> datetime:
        self.ticks += 1
        return self.start + self.step * self.ticks
