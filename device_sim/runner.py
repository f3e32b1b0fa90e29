"""``python -m device_sim run``: a fleet from the registry file, until Ctrl-C, a duration, or the end of
a load run; progress while connecting, a status line every 10 s, a summary at exit."""

import asyncio
import contextlib
import csv
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from device_sim.aio_paho import MqttVersion
from device_sim.camera import CameraOptions
from device_sim.fleet import Fleet, FleetOptions
from device_sim.load import LoadReport, run_load
from device_sim.registry import SimDevice
from device_sim.scene import SceneOptions

STATUS_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What the command line asked for."""

    devices: list[SimDevice]
    host: str
    port: int
    mqtt: MqttVersion = "3.1.1"
    duration_s: float | None = None  # None: until Ctrl-C
    load_rate: float | None = None
    records: Path | None = None
    fps: float = 4.0
    mean_gap_s: float = 60.0
    cooldown_s: float = 10.0
    connect_concurrency: int = 32
    firmware: str = "sim-1.0.0"
    clip_frames: int = 15  # frames of the clip after each alert (0: none; load mode sends none)


async def run(settings: RunSettings, out: TextIO = sys.stdout) -> int:
    """Runs the fleet; returns the exit status (1 when some camera never came online)."""
    options = FleetOptions(
        camera=CameraOptions(
            mqtt=settings.mqtt,
            cooldown_s=settings.cooldown_s,
            firmware=settings.firmware,
            clip_frames=settings.clip_frames,
        ),
        scene=None if settings.load_rate else SceneOptions(mean_gap_s=settings.mean_gap_s),
        fps=settings.fps,
        connect_concurrency=settings.connect_concurrency,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    fleet = Fleet(settings.devices, settings.host, settings.port, options)
    began = time.monotonic()
    report: LoadReport | None = None
    try:
        total = len(settings.devices)
        print(
            f"connecting {total} cameras to {settings.host}:{settings.port} (MQTT {settings.mqtt})", file=out
        )
        await fleet.start(timeout_s=None)
        all_online = await _until_online(fleet, stop, out)
        print(f"{fleet.online}/{total} online after {time.monotonic() - began:.1f} s", file=out)
        if settings.load_rate and not stop.is_set():
            duration = settings.duration_s or 10.0
            print(f"load: {settings.load_rate:g} alerts/s for {duration:g} s", file=out)
            report = await run_load(fleet, rate=settings.load_rate, duration_s=duration, stop=stop)
        elif not stop.is_set():
            await _watch(fleet, stop, settings.duration_s, out)
    finally:
        print("stopping (offline status, clean disconnect)", file=out)
        await fleet.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    _summary(fleet, time.monotonic() - began, out)
    if report is not None:
        _load_summary(report, out)
        if settings.records is not None:
            write_records(report, settings.records)
            print(f"records: {settings.records}", file=out)
    return 0 if all_online else 1


async def _until_online(fleet: Fleet, stop: asyncio.Event, out: TextIO) -> bool:
    """Prints 'connected X/N' until all are online, Ctrl-C, or 60 s with no progress."""
    total, last, stalled_since = len(fleet.cameras), -1, time.monotonic()
    while not stop.is_set():
        online = fleet.online
        if online != last:
            print(f"connected {online}/{total}", file=out, flush=True)
            last, stalled_since = online, time.monotonic()
        if online == total:
            return True
        if time.monotonic() - stalled_since > 60:
            print(
                f"giving up waiting: {total - online} cameras are not online (see the broker's log)", file=out
            )
            return False
        await _wait(stop, 0.5)
    return fleet.online == total


async def _watch(fleet: Fleet, stop: asyncio.Event, duration_s: float | None, out: TextIO) -> None:
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        remaining = STATUS_EVERY_S if deadline is None else min(STATUS_EVERY_S, deadline - time.monotonic())
        await _wait(stop, max(0.0, remaining))
        c = fleet.counters
        print(
            f"online {c.online}/{c.cameras}  alerts sent {c.alerts_sent}  acked {c.alerts_acked}  "
            f"clips sent {c.clips_sent}",
            file=out,
        )


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


def _summary(fleet: Fleet, elapsed: float, out: TextIO) -> None:
    c = fleet.counters
    print(
        f"summary: {c.cameras} cameras, {c.connects} connects ({c.refused} refused, "
        f"{c.connection_losses} lost), {c.alerts_sent} alerts sent, {c.alerts_acked} acked, "
        f"{c.alerts_sent / elapsed:.1f}/s over {elapsed:.1f} s; suppressed by config "
        f"{c.suppressed_by_config}, by cooldown {c.suppressed_by_cooldown}; dropped "
        f"{c.dropped_outbox_full + c.dropped_busy}; clips sent {c.clips_sent} "
        f"({c.clip_parts_acked} parts acked, {c.clips_dropped} dropped)",
        file=out,
    )


def _load_summary(report: LoadReport, out: TextIO) -> None:
    p50 = f"{report.ack_p50_s * 1000:.1f} ms" if report.ack_p50_s is not None else "-"
    p99 = f"{report.ack_p99_s * 1000:.1f} ms" if report.ack_p99_s is not None else "-"
    print(
        f"load: target {report.target_rate:g}/s, achieved {report.achieved_rate:.1f}/s "
        f"({report.sent} sent in {report.duration_s:.2f} s across {report.cameras} cameras), "
        f"{report.acked} acked, PUBACK p50 {p50} p99 {p99}",
        file=out,
    )


def write_records(report: LoadReport, path: Path) -> None:
    """One CSV row per load alert: serial, event_id, kind, size, published_at, acked_at (epoch s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["serial", "event_id", "kind", "size", "published_at", "acked_at"])
        for r in report.records:
            acked = "" if r.acked_at is None else f"{r.acked_at:.6f}"
            writer.writerow([r.serial, r.event_id, r.kind, r.size, f"{r.published_at:.6f}", acked])
