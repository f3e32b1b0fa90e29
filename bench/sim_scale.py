"""How far one simulator process goes: N cameras (default 1,000) on the project's Mosquitto.

    .venv/bin/python -m bench.sim_scale [--cameras 1000] [--watch 30] [--load 500 1000] [--load-s 5]

Starts its own broker with the project's policy (gateway.devbroker), then reports:
connect time for the whole fleet, the process's RSS and CPU while the cameras watch their scenes
(default options: 4 motion checks per camera per second, a mover every ~60 s, 10 s cooldown), the
alerts that produced, and for each --load rate a load run on a scene-less fleet: the achieved rate and
PUBACK latencies. Figures are printed, not asserted: they depend on the machine.
"""

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

from device_sim import CameraOptions, Fleet, FleetOptions, new_fleet, run_load
from device_sim.imaging import bank, jpeg_pool
from gateway.devbroker import DevBroker, find_mosquitto, free_port


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size from /proc, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def watch_phase(broker: DevBroker, cameras: int, seconds: float) -> None:
    devices = new_fleet(cameras)
    started = time.perf_counter()
    broker.set_cameras({d.serial: d.broker_secret for d in devices})
    print(f"broker accounts for {cameras} cameras: {time.perf_counter() - started:.1f} s")
    bank()  # the shared backdrops, so the baseline includes them
    base_rss = rss_mb()
    # No clips: this measures connections and alert scenes, as before clips existed.
    fleet = Fleet(devices, "127.0.0.1", broker.port, FleetOptions(camera=CameraOptions(clip_frames=0)))
    started = time.perf_counter()
    await fleet.start(timeout_s=120)
    connect_s = time.perf_counter() - started
    print(
        f"connected {fleet.online}/{cameras} in {connect_s:.2f} s; RSS {rss_mb():.0f} MB "
        f"(+{rss_mb() - base_rss:.0f} MB over the {base_rss:.0f} MB baseline with backdrops)"
    )
    try:
        before, sent, motion = time.process_time(), fleet.counters.alerts_sent, fleet.counters.motion_events
        broker_before, wall = cpu_s(broker.pid), time.perf_counter()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - wall
        c = fleet.counters
        print(
            f"watching {seconds:g} s: simulator CPU {100 * (time.process_time() - before) / wall:.1f}% of a core, "
            f"broker CPU {100 * (cpu_s(broker.pid) - broker_before) / wall:.1f}%, RSS {rss_mb():.0f} MB "
            f"(peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
        )
        print(
            f"  motion events {(c.motion_events - motion) / wall:.1f}/s, alerts {(c.alerts_sent - sent) / wall:.1f}/s "
            f"({c.alerts_acked} acked in all), suppressed by cooldown {c.suppressed_by_cooldown}, "
            f"dropped (renderer busy) {c.dropped_busy}, still online {c.online}"
        )
    finally:
        started = time.perf_counter()
        await fleet.stop()
        print(f"stopped in {time.perf_counter() - started:.2f} s")


async def load_phase(broker: DevBroker, cameras: int, rates: list[float], seconds: float) -> None:
    devices = new_fleet(cameras)
    broker.set_cameras({d.serial: d.broker_secret for d in devices})
    pool = jpeg_pool(32)
    print(f"load pool: 32 JPEGs, {min(map(len, pool)) // 1000}-{max(map(len, pool)) // 1000} KB")
    async with Fleet(devices, "127.0.0.1", broker.port, FleetOptions(scene=None)) as fleet:
        for rate in rates:
            before, broker_before, wall = time.process_time(), cpu_s(broker.pid), time.perf_counter()
            report = await run_load(fleet, rate=rate, duration_s=seconds, pool=pool)
            wall = time.perf_counter() - wall
            p50 = f"{report.ack_p50_s * 1000:.1f}" if report.ack_p50_s is not None else "-"
            p99 = f"{report.ack_p99_s * 1000:.1f}" if report.ack_p99_s is not None else "-"
            print(
                f"load {rate:g}/s over {cameras} cameras: achieved {report.achieved_rate:.1f}/s "
                f"({100 * report.achieved_rate / rate:.0f}%), {report.acked}/{report.sent} acked, "
                f"PUBACK p50 {p50} ms p99 {p99} ms; simulator CPU "
                f"{100 * (time.process_time() - before) / wall:.0f}%, broker CPU "
                f"{100 * (cpu_s(broker.pid) - broker_before) / wall:.0f}%"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cameras", type=int, default=1000)
    parser.add_argument("--watch", type=float, default=30.0, help="seconds of scene watching to measure")
    parser.add_argument("--load", type=float, nargs="*", default=[200.0, 500.0, 1000.0], help="load rates")
    parser.add_argument("--load-s", type=float, default=5.0, help="seconds per load rate")
    args = parser.parse_args()
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("mosquitto is not installed (Debian: apt-get install mosquitto)")
    broker = DevBroker(Path(tempfile.mkdtemp(prefix="camgate-mosquitto-")), free_port())
    broker.set_cameras({})
    broker.start()
    try:
        print(f"{os.cpu_count()} CPUs; open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)}")
        await watch_phase(broker, args.cameras, args.watch)
        if args.load:
            await load_phase(broker, args.cameras, args.load, args.load_s)
    finally:
        broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
