"""``python -m device_sim``: simulated camera tooling.

registry  generate a simulated factory registry and printable labels
run       run simulated cameras from a registry file against an MQTT broker
"""

import argparse
import asyncio
import logging
from pathlib import Path

from device_sim.camera import CameraOptions
from device_sim.registry import new_fleet, read_registry, write_labels, write_registry
from device_sim.runner import RunSettings, run

RUN_EPILOG = """\
Each camera logs in with its serial and broker secret from the registry, announces itself online,
obeys its retained config topic, and sends an alert with a 1280x720 JPEG when motion in its synthetic
scene passes the detector (at most one per --cooldown seconds), followed by the event's clip: a burst
of --clip-frames 640x360 JPEG frames at 5 per second (0: no clips). With --load the scenes and clips
are off and the fleet publishes alerts at RATE per second for --duration seconds (default 10) instead,
then prints the achieved rate and PUBACK latencies (--records writes one CSV row per alert).

Ctrl-C stops cleanly: every camera publishes an offline status, then disconnects (a clean DISCONNECT
does not fire the last will).

examples:
  python -m device_sim registry --count 100
  python -m device_sim run --registry var/fleet/registry.csv --port 1883
  python -m device_sim run --registry var/fleet/registry.csv --load 200 --duration 30 --records var/load.csv
"""


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m device_sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("registry", help="generate a simulated factory registry and printable labels")
    reg.add_argument("--count", type=int, default=10, help="number of cameras (default 10)")
    reg.add_argument("--model", default="CG-Sim-720", help="model name printed on the labels")
    reg.add_argument("--out", type=Path, default=Path("var/fleet"), help="output folder (default var/fleet)")
    _add_run(sub)
    args = parser.parse_args(argv)
    if args.command == "registry":
        if args.count < 1:
            parser.error("--count must be at least 1")
        fleet = new_fleet(args.count, model=args.model)
        write_registry(fleet, args.out / "registry.csv")
        write_labels(fleet, args.out / "labels.html")
        print(
            f"wrote {args.count} cameras to {args.out / 'registry.csv'} and labels to {args.out / 'labels.html'}"
        )
    elif args.command == "run":
        raise SystemExit(_run(parser, args))


def _add_run(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    run_p = sub.add_parser(
        "run",
        help="run simulated cameras against an MQTT broker",
        description="Run N simulated cameras in one process against an MQTT broker.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_p.add_argument("--registry", type=Path, default=Path("var/fleet/registry.csv"), help="registry CSV")
    run_p.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    run_p.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    run_p.add_argument("--count", type=int, help="use the first N cameras of the registry (default all)")
    run_p.add_argument("--mqtt", choices=["3.1.1", "5"], default="3.1.1", help="protocol version")
    run_p.add_argument("--load", type=float, metavar="RATE", help="load mode: alerts per second, fleet-wide")
    run_p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (load default 10)")
    run_p.add_argument("--records", type=Path, help="load mode: write per-alert timings to this CSV")
    run_p.add_argument("--fps", type=float, default=4.0, help="motion checks per camera per second (4)")
    run_p.add_argument("--mean-gap", type=float, default=60.0, help="mean seconds between movers (60)")
    run_p.add_argument("--cooldown", type=float, default=10.0, help="min seconds between alerts (10)")
    run_p.add_argument("--connect-concurrency", type=int, default=32, help="connects in flight (32)")
    run_p.add_argument("--firmware", default="sim-1.0.0", help="firmware reported in status messages")
    run_p.add_argument(
        "--clip-frames",
        type=int,
        default=15,
        metavar="N",
        help="frames in the clip after each alert (15; 0: none)",
    )
    run_p.add_argument("-v", "--verbose", action="store_true", help="log connection events")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if not args.registry.exists():
        parser.error(f"{args.registry} not found (make one with: python -m device_sim registry)")
    devices = read_registry(args.registry)
    if args.count is not None:
        if not 1 <= args.count <= len(devices):
            parser.error(f"--count must be between 1 and {len(devices)} (cameras in {args.registry})")
        devices = devices[: args.count]
    if args.load is not None and args.load <= 0:
        parser.error("--load must be a positive rate")
    if not 0 <= args.clip_frames <= CameraOptions().clip_outbox_limit:
        parser.error(
            f"--clip-frames must be between 0 and {CameraOptions().clip_outbox_limit} (the clip outbox)"
        )
    settings = RunSettings(
        devices=devices,
        host=args.host,
        port=args.port,
        mqtt=args.mqtt,
        duration_s=args.duration,
        load_rate=args.load,
        records=args.records,
        fps=args.fps,
        mean_gap_s=args.mean_gap,
        cooldown_s=args.cooldown,
        connect_concurrency=args.connect_concurrency,
        firmware=args.firmware,
        clip_frames=args.clip_frames,
    )
    return asyncio.run(run(settings))


if __name__ == "__main__":
    main()
