"""A clock tests move by hand (a fake of the Clock port)."""

from datetime import UTC, datetime, timedelta


class ManualClock:
    """Stands still until ``advance`` is called."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def advance(self, **delta: float) -> None:
        """Moves the clock forward, e.g. ``advance(minutes=61)``."""
        self._now += timedelta(**delta)
