"""A camera's alert bookkeeping, pure: event ids, what the config allows, and the outbox of alerts (and
clip parts) the broker has not acknowledged yet (re-published byte for byte, so with the same ids)."""

import secrets
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.wire import ConfigHeader


@dataclass(frozen=True, slots=True)
class SentAlert:
    """An alert a camera published (first publish, not re-sends)."""

    serial: str
    event_id: str
    kind: str
    captured_at: datetime
    size: int  # JPEG bytes
    published_at: float  # time.time() when handed to the MQTT client


class EventIds:
    """Event ids unique per camera: capture time, a per-boot nonce, and a counter.

    The nonce keeps a restarted simulator from reusing the ids of its previous run within one second.
    """

    def __init__(self, boot: str | None = None) -> None:
        self._boot = boot or secrets.token_hex(3)
        self._seq = 0

    def next(self, at: datetime) -> str:
        """A fresh id, e.g. ``e-20260601-120000-3f9a1c-000042``."""
        self._seq += 1
        return f"e-{at.astimezone(UTC):%Y%m%d-%H%M%S}-{self._boot}-{self._seq:06d}"


def config_allows(config: ConfigHeader | None, kind: str, now: datetime) -> bool:
    """Whether the camera's retained config lets it send an alert of ``kind`` at ``now``."""
    if config is None:
        return True  # nothing retained yet: cameras alert by default
    if not config.alerts_enabled:
        return False
    if config.snoozed_until is not None and config.snoozed_until > now:
        return False
    if config.backoff_until is not None and config.backoff_until > now:
        return False  # over its rate: the gateway would keep the event but not its snapshot
    return config.event_kinds is None or kind in config.event_kinds


# The broker saves its queues every second or two (deploy/mosquitto): what it acknowledged in the two seconds
# before a crash may be gone. Re-sending what was acknowledged within this window after a reconnect closes that gap;
# the gateway keeps one event per event id, so a re-send of something it already has costs nothing.
RESEND_WINDOW_S = 5.0


class Outbox:
    """Published alerts awaiting their PUBACK, oldest first, bounded like a camera's flash buffer.

    A connection can drop with alerts unacknowledged; the next connection re-publishes them exactly as
    they were (same envelope, same event id), which the protocol allows: the gateway keeps one event per
    (camera, event id).
    """

    def __init__(self, limit: int, *, resend_window_s: float = RESEND_WINDOW_S) -> None:
        self._limit = limit
        self._window = resend_window_s
        self._pending: dict[str, bytes] = {}
        self._recent: deque[tuple[float, str, bytes]] = deque()  # (acked at, event id, envelope)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        """True when a new alert would not fit."""
        return len(self._pending) >= self._limit

    @property
    def room(self) -> int:
        """How many more entries fit (a clip's parts go in together or not at all)."""
        return max(0, self._limit - len(self._pending))

    def add(self, event_id: str, payload: bytes) -> bool:
        """Keeps an envelope until it is acknowledged; False (nothing kept) when full."""
        if self.full:
            return False
        self._pending[event_id] = payload
        return True

    def ack(self, event_id: str, now: float | None = None) -> bool:
        """Moves an acknowledged alert to the recent ones; False when it was not pending (a duplicate
        PUBACK)."""
        payload = self._pending.pop(event_id, None)
        if payload is None:
            return False
        self._recent.append((time.monotonic() if now is None else now, event_id, payload))
        if len(self._recent) > self._limit:
            self._recent.popleft()
        return True

    def pending(self, now: float | None = None) -> Iterator[tuple[str, bytes]]:
        """What to re-publish after a reconnect, oldest first: the unacknowledged alerts, and those
        acknowledged within the resend window, which a broker that crashed may not have saved yet."""
        cutoff = (time.monotonic() if now is None else now) - self._window
        while self._recent and self._recent[0][0] < cutoff:
            self._recent.popleft()
        yield from [(event_id, payload) for _, event_id, payload in self._recent]
        yield from list(self._pending.items())
