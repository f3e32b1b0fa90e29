"""The system clock."""

from datetime import UTC, datetime


class SystemClock:
    """Wall-clock UTC time."""

    def now(self) -> datetime:
        """The current aware UTC time."""
        return datetime.now(UTC)
