"""moto's S3 server with its buckets filled before it serves: the sweep bench's object store.

    python -m bench._seeded_moto --port PORT --manifest FILE

The manifest has one ``bucket<TAB>key<TAB>size`` line per object. The objects are created in moto's own
S3 backend, in this process, and then ``moto.server.main`` serves them exactly as ``python -m moto.server``
does (the server the tests and the ingest bench run). PutObject over HTTP runs at ~250/s on moto
(FIELD_NOTES), so seeding 200,000 objects that way would take a quarter of an hour; here it takes
seconds, and the objects are the same ``FakeKey`` entries a PutObject would have made.

``SeededMotoServer`` starts and stops it from the bench.
"""

import argparse
import sys
import time
from pathlib import Path

from bench._rig import MotoServer

SEED_REGION = "us-east-1"


class SeededMotoServer(MotoServer):
    """``MotoServer`` whose buckets and objects come from a manifest."""

    def __init__(self, log_path: Path, manifest: Path) -> None:
        super().__init__(log_path)
        self._manifest = manifest

    def command(self) -> list[str]:
        """This module's command line: seed from the manifest, then serve."""
        return [
            sys.executable,
            "-m",
            "bench._seeded_moto",
            "--port",
            str(self.port),
            "--manifest",
            str(self._manifest),
        ]

    def start(self, timeout_s: float = 300.0) -> None:
        """Starts the server and returns once it has seeded and answers HTTP (seeding takes a while)."""
        super().start(timeout_s)


def seed(manifest: Path) -> int:
    """Creates the manifest's buckets and objects in moto's in-process S3 backend; returns the count."""
    from moto.core import DEFAULT_ACCOUNT_ID  # moto maps any access key to this account
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    buckets: set[str] = set()
    count = 0
    with manifest.open() as lines:
        for line in lines:
            bucket, key, size = line.rstrip("\n").split("\t")
            if bucket not in buckets:
                backend.create_bucket(bucket, SEED_REGION)
                buckets.add(bucket)
            backend.put_object(bucket, key, b"x" * int(size))
            count += 1
    return count


def main() -> None:
    """Seeds, then serves until terminated."""
    parser = argparse.ArgumentParser(prog="python -m bench._seeded_moto")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()
    started = time.monotonic()
    count = seed(args.manifest)
    print(f"seeded {count} objects in {time.monotonic() - started:.1f} s", flush=True)
    from moto.server import main as serve

    serve(["-H", "127.0.0.1", "-p", str(args.port)])


if __name__ == "__main__":
    main()
