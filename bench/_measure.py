"""The ingest bench's two measurements on a running gateway: the max sustained rate (``saturate``) and
latencies and CPU at a given rate (``steady``), with ``Probe`` reading progress and CPU time."""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench._rig import WebhookReceiver, cpu_s, loop_thread_cpu_s, wait_until
from device_sim import AlertRecord, Fleet, run_load
from gateway.adapters.db.tables import devices, events

CHUNK_S = 1.0  # the saturation loop sets its rate once a chunk
HORIZON_S = 1.5  # ... aiming to restore the wanted backlog within this long
MIN_RATE = 10.0


@dataclass(frozen=True)
class CpuSample:
    """Everyone's CPU seconds at one moment."""

    at: float  # time.time()
    by_process: dict[str, float]
    gateway_loop: float  # the gateway's main thread: its event loop
    machine_busy: float  # /proc/stat jiffies, every core
    machine_total: float


@dataclass(frozen=True)
class CpuUse:
    """CPU between two samples: cores used by each process (1.0 = one core busy all the time)."""

    wall_s: float
    cores: dict[str, float]  # by process, plus "gateway event loop"
    machine: float  # cores busy on the whole machine, whoever used them
    others: float  # cores busy outside the bench's processes (other work on the machine)

    def per_alert_ms(self, name: str, alerts: int) -> float:
        """CPU milliseconds of ``name`` per alert."""
        return 1000 * self.cores[name] * self.wall_s / alerts if alerts else math.nan

    @property
    def ours(self) -> float:
        """Cores used by the bench's own processes."""
        return sum(v for k, v in self.cores.items() if k != "gateway event loop")


def cpu_between(a: CpuSample, b: CpuSample, cores: int) -> CpuUse:
    """What was used from ``a`` to ``b``."""
    wall = b.at - a.at
    used = {name: (b.by_process[name] - a.by_process[name]) / wall for name in a.by_process}
    used["gateway event loop"] = (b.gateway_loop - a.gateway_loop) / wall
    machine = cores * (b.machine_busy - a.machine_busy) / max(b.machine_total - a.machine_total, 1.0)
    ours = sum(v for k, v in used.items() if k != "gateway event loop")
    return CpuUse(wall, used, machine, max(0.0, machine - ours))


class Probe:
    """Reads the gateway's progress from its database and everyone's CPU time from /proc."""

    def __init__(self, engine: AsyncEngine, account_id: str, pids: dict[str, int]) -> None:
        self._engine = engine
        self._account = account_id
        self.pids = pids

    async def committed(self) -> int:
        """Events stored for the bench's account so far."""
        async with self._engine.connect() as conn:
            query = select(func.count()).select_from(events).where(events.c.account_id == self._account)
            return int((await conn.execute(query)).scalar_one())

    async def stored(self) -> dict[tuple[str, str], tuple[str, float]]:
        """(serial, camera event id) → (event id, ``stored_at`` in epoch seconds), every event."""
        query = (
            select(devices.c.serial, events.c.camera_event_id, events.c.id, events.c.stored_at)
            .join(devices, devices.c.id == events.c.device_id)
            .where(events.c.account_id == self._account)
        )
        async with self._engine.connect() as conn:
            rows = await conn.execute(query)
            return {(r.serial, r.camera_event_id): (r.id, r.stored_at.timestamp()) for r in rows}

    def cpu(self) -> CpuSample:
        """Everyone's CPU seconds now."""
        line = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        jiffies = [int(x) for x in line[1:]]
        idle = jiffies[3] + jiffies[4]  # idle + iowait
        return CpuSample(
            at=time.time(),
            by_process={name: cpu_s(pid) for name, pid in self.pids.items()},
            gateway_loop=loop_thread_cpu_s(self.pids["gateway"]),
            machine_busy=float(sum(jiffies) - idle),
            machine_total=float(sum(jiffies)),
        )


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95 and p99 (nearest rank) of ``values`` in seconds, as milliseconds; NaN when empty."""
    if not values:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return 1000 * ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99)}


@dataclass(frozen=True)
class Saturation:
    rate: float  # alerts committed per second over the window
    window_s: float
    committed: int
    offered_rate: float  # alerts published per second over the window
    min_backlog: int  # alerts published and not yet committed, sampled once a chunk
    max_backlog: int
    cpu: CpuUse


async def saturate(
    fleet: Fleet,
    pool: Sequence[bytes],
    probe: Probe,
    *,
    warm_s: float,
    window_s: float,
    backlog: int,
    cores: int,
    log: Callable[[str], None] | None = None,
) -> tuple[Saturation, list[AlertRecord]]:
    """Keeps about ``backlog`` alerts waiting for the gateway (never idle, and the broker's queue stays
    small) by setting ``run_load``'s rate every chunk; after ``warm_s``, measures what it commits."""
    base = await probe.committed()
    records: list[AlertRecord] = []
    samples: list[tuple[CpuSample, int]] = [(probe.cpu(), 0)]  # (CPU, backlog) at each chunk's end
    rate = 50.0
    last_committed = 0
    smoothed = 0.0  # commit rate, averaged over the last few chunks: one chunk alone is noisy
    while samples[-1][0].at - samples[0][0].at < warm_s + window_s:
        report = await run_load(fleet, rate=rate, duration_s=CHUNK_S, pool=pool, drain_timeout_s=5)
        records.extend(report.records)
        committed = await probe.committed() - base
        sample = probe.cpu()
        waiting = len(records) - committed
        commit_rate = (committed - last_committed) / (sample.at - samples[-1][0].at)
        samples.append((sample, waiting))
        last_committed = committed
        if log is not None:
            log(f"offered {rate:6.1f}/s  committed {commit_rate:6.1f}/s  waiting {waiting}")
        smoothed = commit_rate if smoothed == 0.0 else 0.5 * smoothed + 0.5 * commit_rate
        rate = smoothed + (backlog - waiting) / HORIZON_S
        rate = min(max(rate, MIN_RATE, 0.5 * smoothed), max(2 * smoothed, 100.0))

    start = next(s for s, _ in samples if s.at - samples[0][0].at >= warm_s)
    end = samples[-1][0]
    stored = await probe.stored()
    times = [stored[(r.serial, r.event_id)][1] for r in records if (r.serial, r.event_id) in stored]
    committed = sum(1 for t in times if start.at <= t < end.at)
    backlogs = [b for s, b in samples if start.at <= s.at <= end.at]
    window = end.at - start.at
    result = Saturation(
        rate=committed / window,
        window_s=window,
        committed=committed,
        offered_rate=sum(1 for r in records if start.at <= r.published_at < end.at) / window,
        min_backlog=min(backlogs),
        max_backlog=max(backlogs),
        cpu=cpu_between(start, end, cores),
    )
    return result, records


@dataclass(frozen=True)
class Steady:
    offered: float  # the rate asked of run_load
    achieved: float  # alerts published per second
    sent: int
    committed: int
    pushed: int
    commit_ms: dict[str, float]  # publish → commit: p50, p95, p99
    webhook_ms: dict[str, float]  # publish → webhook arrival
    settled_s: float  # from the last publish until the last alert was committed and pushed
    cpu: CpuUse  # from the first publish until everything settled


@dataclass(frozen=True)
class Timing:
    """One alert's times (epoch seconds), for the records file."""

    record: AlertRecord
    stored_at: float | None
    pushed_at: float | None


async def steady(
    fleet: Fleet,
    pool: Sequence[bytes],
    probe: Probe,
    receiver: WebhookReceiver,
    *,
    rate: float,
    seconds: float,
    settle_s: float,
    cores: int,
) -> tuple[Steady, list[Timing]]:
    """Publishes at ``rate`` for ``seconds``, waits (up to ``settle_s``) until every alert is committed
    and pushed, and measures latencies and CPU."""
    committed_before, pushed_before = await probe.committed(), len(receiver.arrived)
    before = probe.cpu()
    report = await run_load(fleet, rate=rate, duration_s=seconds, pool=pool)
    published_end = time.time()
    keys = {(r.serial, r.event_id) for r in report.records}

    async def settled() -> bool:
        # Counts first (cheap); the full join only once they say everything may be in.
        if len(receiver.arrived) - pushed_before < len(keys):
            return False
        if await probe.committed() - committed_before < len(keys):
            return False
        stored = await probe.stored()
        done = [stored[k][0] for k in keys if k in stored]
        return len(done) == len(keys) and all(e in receiver.arrived for e in done)

    await wait_until(settled, settle_s, every_s=0.1)
    after = probe.cpu()
    stored = await probe.stored()
    timings: list[Timing] = []
    for record in report.records:
        event_id, stored_at = stored.get((record.serial, record.event_id), ("", None))
        timings.append(Timing(record, stored_at, receiver.arrived.get(event_id)))
    commit = [t.stored_at - t.record.published_at for t in timings if t.stored_at is not None]
    hook = [t.pushed_at - t.record.published_at for t in timings if t.pushed_at is not None]
    ends = [x for t in timings for x in (t.stored_at, t.pushed_at) if x is not None]
    result = Steady(
        offered=rate,
        achieved=report.achieved_rate,
        sent=report.sent,
        committed=len(commit),
        pushed=len(hook),
        commit_ms=percentiles(commit),
        webhook_ms=percentiles(hook),
        settled_s=max(0.0, max(ends, default=published_end) - published_end),
        cpu=cpu_between(before, after, cores),
    )
    return result, timings


def write_timings(path: Path, timings: Sequence[Timing]) -> None:
    """A CSV row per alert: camera, event id, size, published, acknowledged, stored, pushed."""
    lines = ["serial,event_id,size,published_at,acked_at,stored_at,pushed_at"]
    for t in timings:
        r = t.record
        cells = (r.published_at, r.acked_at, t.stored_at, t.pushed_at)
        lines.append(
            ",".join([r.serial, r.event_id, str(r.size), *("" if c is None else f"{c:.6f}" for c in cells)])
        )
    path.write_text("\n".join(lines) + "\n")
