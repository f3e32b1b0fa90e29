"""Load mode for benchmarks: alerts across a fleet at an aggregate target rate, every one timed.

Bodies come from a pool of distinct pre-encoded 720p JPEGs (64-100 KB), made once before the clock
starts, so encoding never limits the rate. A token bucket paces the publishes; cameras take turns.
Each alert's (serial, event id) is recorded with its publish and PUBACK times (``time.time()``, the
clock a gateway stamps its commits with), so a benchmark can join them with the gateway's records and
compute publish-to-commit latency. The PUBACK comes from the broker: it says the broker has the
message, not that the gateway stored it.
"""

import asyncio
import contextlib
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from device_sim.alerts import SentAlert
from device_sim.camera import Camera, CameraState
from device_sim.fleet import Fleet
from device_sim.imaging import jpeg_pool


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; time is passed in (testable)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = 0.0
        self._at = now

    def take(self, now: float) -> int:
        """Takes every whole token available at ``now``."""
        self._refill(now)
        whole = int(self._tokens)
        self._tokens -= whole
        return whole

    def wait_s(self, now: float) -> float:
        """Seconds until the next whole token."""
        self._refill(now)
        return max(0.0, (1.0 - self._tokens) / self.rate)

    def _refill(self, now: float) -> None:
        tokens = self._tokens + (now - self._at) * self.rate
        self._at = now
        # At most `burst` whole tokens; the fraction toward the next one is kept, or late wake-ups
        # would shave the rate. A stall longer than burst/rate loses tokens: the achieved rate shows
        # it, instead of a catch-up burst that would measure something else.
        whole = math.floor(tokens)
        if whole > math.floor(self.burst):
            tokens = math.floor(self.burst) + (tokens - whole)
        self._tokens = tokens


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One load alert: when it was handed to the MQTT client and when the broker acknowledged it."""

    serial: str
    event_id: str
    kind: str
    size: int
    published_at: float
    acked_at: float | None  # None: no PUBACK before the drain timeout

    @property
    def ack_latency_s(self) -> float | None:
        """Publish-to-PUBACK time."""
        return None if self.acked_at is None else self.acked_at - self.published_at


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What a load run achieved."""

    target_rate: float
    duration_s: float  # the publishing window actually used
    cameras: int
    sent: int
    acked: int
    suppressed: int  # refused by a camera's config (obey_config=True)
    achieved_rate: float  # sent / duration_s
    ack_p50_s: float | None
    ack_p99_s: float | None
    records: tuple[AlertRecord, ...]

    @property
    def all_acked(self) -> bool:
        """True when every alert sent got its PUBACK."""
        return self.acked == self.sent


class _Acks:
    """Collects PUBACK times of the run's alerts."""

    def __init__(self) -> None:
        self.times: dict[tuple[str, str], float] = {}
        self.done = asyncio.Event()
        self.expected = -1  # set once publishing is over

    def alert_sent(self, alert: SentAlert) -> None:
        """Not needed: run_load keeps what send_alert returns."""

    def alert_acked(self, serial: str, event_id: str, at: float) -> None:
        """Records the time."""
        self.times[(serial, event_id)] = at
        if len(self.times) >= self.expected >= 0:
            self.done.set()


async def run_load(
    fleet: Fleet,
    *,
    rate: float,
    duration_s: float,
    pool: Sequence[bytes] | None = None,
    kinds: Sequence[str] = ("motion", "person"),
    obey_config: bool = True,
    burst: float | None = None,
    drain_timeout_s: float = 10.0,
    stop: asyncio.Event | None = None,
) -> LoadReport:
    """Publishes alerts from the online cameras of a started fleet at ``rate``/s for ``duration_s``
    (or until ``stop`` is set), waits up to ``drain_timeout_s`` for the PUBACKs, and reports."""
    loop = asyncio.get_running_loop()
    if pool is None:
        pool = await loop.run_in_executor(None, jpeg_pool, 32)
    bodies = itertools.cycle(pool)
    kind_cycle = itertools.cycle(kinds)
    acks = _Acks()
    fleet.add_listener(acks)
    sent: list[SentAlert] = []
    suppressed = 0
    turn = _Turns(list(fleet.cameras.values()))
    try:
        start = loop.time()
        bucket = TokenBucket(rate, burst or max(1.0, rate * 0.1), start)
        end = start + duration_s
        while (now := loop.time()) < end and not (stop is not None and stop.is_set()):
            for _ in range(bucket.take(now)):
                camera = turn.next()
                if camera is None:
                    break  # nobody online, or every outbox full: this token is lost (it shows in the rate)
                at = datetime.now(UTC)
                kind = next(kind_cycle)
                if obey_config and not camera.may_alert(kind, at):
                    suppressed += 1
                    continue
                alert = camera.send_alert(kind, at, next(bodies))
                if alert is not None:
                    sent.append(alert)
            await asyncio.sleep(max(bucket.wait_s(loop.time()), 0.0005))
        elapsed = min(loop.time(), end) - start
        acks.expected = len(sent)
        if len(acks.times) >= len(sent):
            acks.done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(acks.done.wait(), drain_timeout_s)
    finally:
        fleet.remove_listener(acks)
    return _report(rate, elapsed, len(fleet.cameras), sent, acks.times, suppressed)


class _Turns:
    """Round-robin over the cameras that can take an alert now."""

    def __init__(self, cameras: list[Camera]) -> None:
        self._cameras = cameras
        self._i = 0

    def next(self) -> Camera | None:
        for _ in range(len(self._cameras)):
            camera = self._cameras[self._i]
            self._i = (self._i + 1) % len(self._cameras)
            if camera.state is CameraState.ONLINE and not camera.outbox.full:
                return camera
        return None


def _report(
    rate: float,
    elapsed: float,
    cameras: int,
    sent: list[SentAlert],
    acked: dict[tuple[str, str], float],
    suppressed: int,
) -> LoadReport:
    records = tuple(
        AlertRecord(a.serial, a.event_id, a.kind, a.size, a.published_at, acked.get((a.serial, a.event_id)))
        for a in sent
    )
    latencies = sorted(r.ack_latency_s for r in records if r.ack_latency_s is not None)
    p50 = statistics.median(latencies) if latencies else None
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None
    return LoadReport(
        target_rate=rate,
        duration_s=elapsed,
        cameras=cameras,
        sent=len(sent),
        acked=len(latencies),
        suppressed=suppressed,
        achieved_rate=len(sent) / elapsed if elapsed > 0 else 0.0,
        ack_p50_s=p50,
        ack_p99_s=p99,
        records=records,
    )
