"""Alert policy: whether an alert from a camera is collected at all, and the per-camera rate limit."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

DEFAULT_MAX_SKEW = timedelta(days=1)  # IngestSettings.max_clock_skew_s's default


def capture_time(
    captured_at: datetime, received_at: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW
) -> datetime:
    """The capture time retention counts from: the camera's, clamped to [received - max_skew, received].

    A camera's clock is not trusted: one running ahead must not buy a longer life, and one set to 2001
    must not have its snapshots swept on arrival. A genuinely late delivery (older than the skew) counts
    as captured ``max_skew`` before it arrived.
    """
    return max(received_at - max_skew, min(captured_at, received_at))


def before_binding(
    captured_at: datetime,
    bound_at: datetime | None,
    received_at: datetime,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> bool:
    """Captured before the current binding began: the previous owner's (queued in the broker or re-sent
    by the camera), never the current owner's.

    Judged by the camera's own clock while it is believable (within ``max_skew`` behind arrival); a
    clock further behind, such as one set to 2001, cannot place the capture at all, and its alerts are
    kept rather than an honest camera losing everything it sends (docs/security.md states the limit).
    """
    return bound_at is not None and received_at - max_skew <= captured_at < bound_at


class SnapshotDropped(StrEnum):
    """Why an event was kept without its snapshot and thumbnail (events.snapshot_dropped)."""

    RATE_LIMITED = "rate_limited"  # the camera was over its alert rate (docs/protocol.md)


class Drop(StrEnum):
    """Why an alert is not collected. Its bytes are dropped before anything is written."""

    ALERTS_OFF = "alerts_off"  # the account turned message alerts off
    KIND_NOT_WANTED = "kind_not_wanted"  # the account chose other event kinds
    MUTED = "muted"  # the device is muted
    SNOOZED = "snoozed"  # the device is snoozed until a later time
    BEFORE_BINDING = "before_binding"  # captured before the current owner bound the camera


@dataclass(frozen=True)
class AlertPrefs:
    """The settings that decide collection, as stored for the account and the device."""

    message_alerts: bool = True
    event_kinds: frozenset[str] | None = None  # None: every kind
    muted: bool = False
    snoozed_until: datetime | None = None


def collection_decision(prefs: AlertPrefs, kind: str, now: datetime) -> Drop | None:
    """None when the alert is collected; otherwise the reason it is dropped unread."""
    if not prefs.message_alerts:
        return Drop.ALERTS_OFF
    if prefs.muted:
        return Drop.MUTED
    if prefs.snoozed_until is not None and prefs.snoozed_until > now:
        return Drop.SNOOZED
    if prefs.event_kinds is not None and kind not in prefs.event_kinds:
        return Drop.KIND_NOT_WANTED
    return None


class TokenBuckets:
    """Per-key token buckets: ``burst`` at once, then ``per_second`` sustained. Time is passed in."""

    def __init__(self, burst: int, per_second: float, *, max_keys: int = 100_000) -> None:
        self._burst = float(burst)
        self._rate = per_second
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - at) * self._rate)

    def allows(self, key: str, now: float) -> bool:
        """True when ``key`` has a token, without spending it."""
        return self._tokens(key, now) >= 1.0

    def refill_seconds(self, key: str, now: float) -> float:
        """How long until ``key``'s bucket is full again (its whole burst available)."""
        return (self._burst - self._tokens(key, now)) / self._rate

    def take(self, key: str, now: float) -> bool:
        """Spends one token for ``key``; False when the key is over its rate."""
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _forget_full(self, now: float) -> None:
        # Buckets that have refilled carry no state worth keeping; dropping them bounds memory.
        full_after = self._burst / self._rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
