"""``python -m device_sim``: simulated camera tooling."""

import argparse
from pathlib import Path

from device_sim.registry import new_fleet, write_labels, write_registry


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m device_sim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("registry", help="generate a simulated factory registry and printable labels")
    reg.add_argument("--count", type=int, default=10, help="number of cameras (default 10)")
    reg.add_argument("--model", default="CG-Sim-720", help="model name printed on the labels")
    reg.add_argument("--out", type=Path, default=Path("var/fleet"), help="output folder (default var/fleet)")
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


if __name__ == "__main__":
    main()
