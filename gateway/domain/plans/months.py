"""Calendar months for billing periods.

A month is added by the calendar, in the time zone of the start (services pass UTC): the same day of the
month at the same time of day, clamped to the month's last day. Period ends are always computed from the
**anchor** (the first period's start), never chained from the previous end, so the anchor day comes back:
Jan 31 + 1 month = Feb 28 (Feb 29 in a leap year), + 2 months = Mar 31, + 3 months = Apr 30.
"""

from calendar import monthrange
from datetime import datetime


def require_aware(at: datetime, name: str = "time") -> datetime:
    """``at`` itself; ``ValueError`` when it has no time zone (naive times make month ends ambiguous)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {at!r}")
    return at


def add_months(anchor: datetime, months: int) -> datetime:
    """``anchor`` moved by ``months`` calendar months (negative moves back), day clamped to the month."""
    require_aware(anchor, "anchor")
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month0 = divmod(index, 12)
    day = min(anchor.day, monthrange(year, month0 + 1)[1])
    return anchor.replace(year=year, month=month0 + 1, day=day)


def months_begun(start: datetime, at: datetime) -> int:
    """How many calendar months counted from ``start`` have begun by ``at``: 0 before ``start``, 1 from
    ``start`` itself (a month that has begun counts whole), 2 from ``add_months(start, 1)``, and so on."""
    require_aware(start, "start")
    at = require_aware(at, "at").astimezone(start.tzinfo)
    if at < start:
        return 0
    whole = (at.year - start.year) * 12 + at.month - start.month
    if add_months(start, whole) > at:
        whole -= 1
    return whole + 1
