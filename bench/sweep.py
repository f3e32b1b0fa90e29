"""Sweep benchmark: expired objects deleted per second by camgate's retention sweep, beside raw
DeleteObjects on the same S3 server in the same run.

    .venv/bin/python -m bench.sweep [--objects N] [--batch-size N] [--database-url URL] [--keep]

One run, in a temp folder:

1. Two identical sets of ``--objects`` tiny objects (default 100,000: 80 % of them the snapshots and
   thumbnails of events, the rest clips; 50 accounts, 2 cameras each, 30 capture days) in two buckets of one
   moto S3 server, seeded inside the server before it serves (``bench._seeded_moto``).
2. The sweep's records in a database (SQLite in the temp folder, or ``--database-url``): accounts,
   devices, events with their push outbox rows, clips, all expired.
3. **Raw DeleteObjects**: the first bucket's keys deleted straight through boto3 (the client camgate
   builds, ``storage.s3.build_client``), 1,000 keys a request, as many requests in flight as the sweep
   keeps (``LANES``); half of them before the sweep and half after, so a drift in the machine's load
   weighs on both figures alike.
4. **camgate sweep**: ``Sweeper.run`` on the second bucket and the records, as ``camgate sweep`` runs it.

Both rates are keys per second; the target is sweep ≥ 0.8 x raw. Figures depend on the machine and on
what else runs on it; they are printed, never asserted, and the exit status is 0 whatever they are
(unless something was left behind: then the run is wrong, and it says so and exits 1).
"""

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy import func, insert, select

from bench._rig import REGION, cpu_s
from bench._seeded_moto import SeededMotoServer
from gateway.adapters.clock import SystemClock
from gateway.adapters.db.tables import accounts, clips, devices, events, push_outbox
from gateway.bootstrap import Services, build
from gateway.config import load_settings
from gateway.services.sweep import LANES, Sweeper
from storage.keys import clip_key, snapshot_key, thumbnail_key
from storage.s3 import DELETE_BATCH, build_client
from storage.settings import S3StoreSettings

RAW_BUCKET = "camgate-bench-raw"
SWEEP_BUCKET = "camgate-bench-sweep"
ACCOUNTS, CAMERAS_PER_ACCOUNT, DAYS = 50, 2, 30
BODY_BYTES = 64
TARGET = 0.8
CORES = os.cpu_count() or 1
ROWS_PER_INSERT = 5000


@dataclass(frozen=True)
class Dataset:
    """The records of one set; their keys are the objects of each bucket."""

    accounts: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    events: list[dict[str, Any]]
    clips: list[dict[str, Any]]

    @property
    def keys(self) -> list[str]:
        """Every object key, in record order."""
        return [k for e in self.events for k in (e["snapshot_key"], e["thumbnail_key"])] + [
            c["key"] for c in self.clips
        ]


def dataset(objects: int, now: datetime) -> Dataset:
    """``objects`` keys: 80 % of them the snapshots and thumbnails of events, the rest clips."""
    event_count = objects * 2 // 5
    clip_count = objects - 2 * event_count
    owners = [str(uuid.uuid4()) for _ in range(ACCOUNTS)]
    cameras = [(a, str(uuid.uuid4())) for a in owners for _ in range(CAMERAS_PER_ACCOUNT)]
    account_rows = [
        {
            "id": a,
            "email": f"bench-{a}@camgate.local",
            "password_hash": "x",
            "birth_date": date(1990, 1, 1),
            "region": REGION,
            "status": "active",
            "created_at": now,
        }
        for a in owners
    ]
    device_rows = [
        {
            "id": d,
            "serial": f"CGB{i:09d}",
            "model": "CG-Bench",
            "code_hash": "x",
            "broker_secret_hash": "x",
            "owner_account_id": a,
            "imported_at": now,
        }
        for i, (a, d) in enumerate(cameras)
    ]
    expired = now - timedelta(days=1)
    event_rows, clip_rows = [], []
    for i in range(event_count):
        account, device = cameras[i % len(cameras)]
        captured = now - timedelta(days=40 + i % DAYS)
        camera_id = f"ev{i:08d}"
        event_rows.append(
            {
                "id": str(uuid.uuid4()),
                "account_id": account,
                "device_id": device,
                "camera_event_id": camera_id,
                "kind": "motion",
                "captured_at": captured,
                "received_at": captured,
                "stored_at": captured,
                "region": REGION,
                "snapshot_key": snapshot_key(account, device, camera_id, captured),
                "thumbnail_key": thumbnail_key(account, device, camera_id, captured),
                "snapshot_bytes": BODY_BYTES,
                "width": 1280,
                "height": 720,
                "retain_until": expired,
            }
        )
    for i in range(clip_count):
        account, device = cameras[i % len(cameras)]
        captured = now - timedelta(days=40 + i % DAYS)
        clip_id = str(uuid.uuid4())
        clip_rows.append(
            {
                "id": clip_id,
                "account_id": account,
                "device_id": device,
                "camera_clip_id": f"cl{i:08d}",
                "region": REGION,
                "key": clip_key(account, device, clip_id, captured),
                "content_type": "video/webm",
                "bytes": BODY_BYTES,
                "plan_id": "standard-30",
                "captured_at": captured,
                "received_at": captured,
                "stored_at": captured,
                "retain_until": expired,
            }
        )
    return Dataset(account_rows, device_rows, event_rows, clip_rows)


def write_manifest(path: Path, keys: list[str]) -> None:
    """Both buckets get the same keys."""
    with path.open("w") as out:
        for bucket in (RAW_BUCKET, SWEEP_BUCKET):
            out.writelines(f"{bucket}\t{key}\t{BODY_BYTES}\n" for key in keys)


async def insert_records(services: Services, data: Dataset) -> None:
    """The records, a few thousand rows a statement; every event with its (delivered) outbox row."""
    outbox = [
        {
            "event_id": e["id"],
            "account_id": e["account_id"],
            "created_at": e["received_at"],
            "next_attempt_at": e["received_at"],
            "done_at": e["received_at"],
        }
        for e in data.events
    ]
    async with services.engine.begin() as conn:
        for table, rows in (
            (accounts, data.accounts),
            (devices, data.devices),
            (events, data.events),
            (push_outbox, outbox),
            (clips, data.clips),
        ):
            for start in range(0, len(rows), ROWS_PER_INSERT):
                await conn.execute(insert(table), rows[start : start + ROWS_PER_INSERT])


def raw_delete(store: S3StoreSettings, keys: list[str], in_flight: int = LANES) -> float:
    """Seconds to delete ``keys`` with DeleteObjects, 1,000 a request, ``in_flight`` requests at a time:
    as many as the sweep keeps going, so the raw figure is the store's ceiling at that concurrency."""
    client = build_client(store)  # boto3 clients are thread-safe; its pool is sized for the threads

    def delete(batch: list[str]) -> None:
        objects: Any = [{"Key": k} for k in batch]
        answer = client.delete_objects(Bucket=store.bucket, Delete={"Objects": objects, "Quiet": True})
        if answer.get("Errors"):
            raise RuntimeError(f"raw DeleteObjects failed: {answer['Errors'][:3]}")

    batches = [keys[start : start + DELETE_BATCH] for start in range(0, len(keys), DELETE_BATCH)]
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(delete, batches))
        return time.perf_counter() - started
    finally:
        client.close()


def objects_left(store: S3StoreSettings) -> int:
    """Objects still in the bucket."""
    client = build_client(store)
    try:
        return int(client.list_objects_v2(Bucket=store.bucket, MaxKeys=1000).get("KeyCount", 0))
    finally:
        client.close()


async def bench(args: argparse.Namespace) -> int:
    """Seeds, measures both, prints the table."""
    root = Path(tempfile.mkdtemp(prefix="camgate-bench-sweep-"))
    database = "SQLite" if args.database_url is None else args.database_url.split(":", 1)[0]
    print(
        f"camgate sweep bench: {CORES} CPUs, load average {os.getloadavg()[0]:.2f}; {args.objects:,} objects "
        f"per set, {database}, batches of {args.batch_size:,} records; working in {root}"
    )
    now = datetime.now(UTC)
    data = dataset(args.objects, now)
    keys = data.keys
    write_manifest(root / "manifest.tsv", keys)
    moto = SeededMotoServer(root / "moto.log", root / "manifest.tsv")
    started = time.monotonic()
    try:
        await asyncio.to_thread(moto.start)
        print(
            f"seeded 2 x {len(keys):,} objects ({len(data.events):,} events x 2, {len(data.clips):,} clips) "
            f"in {time.monotonic() - started:.1f} s"
        )
        raw_store = S3StoreSettings.model_validate(moto.store_settings(RAW_BUCKET))
        config: dict[str, Any] = {
            "environment": "development",
            "log_level": "WARNING",
            "data_dir": root,
            "database": {"url": args.database_url or f"sqlite+aiosqlite:///{root / 'camgate.db'}"},
            "security": {"secret_key": "b" * 40},
            "notify": {"mailbox_dir": root / "mailbox"},
            "mqtt": {"enabled": False},
            "regions": {REGION: {"display_name": "Singapore", "store": moto.store_settings(SWEEP_BUCKET)}},
            "sweep": {"enabled": False, "batch_size": args.batch_size},
        }
        settings = load_settings(**config)
        async with AsyncExitStack() as stack:
            services = await build(settings, stack)
            began = time.monotonic()
            await insert_records(services, data)
            print(
                f"inserted {len(data.events) + len(data.clips):,} records in {time.monotonic() - began:.1f} s"
            )

            # Raw in two halves, one before and one after the sweep: a machine whose load drifts during
            # the run (other work, the S3 server's own state) weighs on both figures alike.
            half = len(keys) // 2 // DELETE_BATCH * DELETE_BATCH or len(keys) // 2
            moto_cpu, our_cpu = cpu_s(moto.pid), cpu_s(os.getpid())
            raw_s = await asyncio.to_thread(raw_delete, raw_store, keys[:half])
            raw_cpu = (cpu_s(moto.pid) - moto_cpu, cpu_s(os.getpid()) - our_cpu)
            print(
                f"raw DeleteObjects, first half: {half:,} keys in {raw_s:.2f} s = {half / raw_s:,.0f} keys/s"
            )

            sweeper = Sweeper(services.engine, services.stores, settings.sweep, SystemClock(), "bench")
            moto_cpu, our_cpu = cpu_s(moto.pid), cpu_s(os.getpid())
            began = time.perf_counter()
            report = await sweeper.run(batch_size=args.batch_size)
            sweep_s = time.perf_counter() - began
            sweep_cpu = (cpu_s(moto.pid) - moto_cpu, cpu_s(os.getpid()) - our_cpu)
            sweep_rate = report.objects / sweep_s
            print(f"camgate sweep: {report.objects:,} keys in {sweep_s:.2f} s = {sweep_rate:,.0f} keys/s")

            moto_cpu, our_cpu = cpu_s(moto.pid), cpu_s(os.getpid())
            second_s = await asyncio.to_thread(raw_delete, raw_store, keys[half:])
            raw_cpu = (raw_cpu[0] + cpu_s(moto.pid) - moto_cpu, raw_cpu[1] + cpu_s(os.getpid()) - our_cpu)
            print(
                f"raw DeleteObjects, second half: {len(keys) - half:,} keys in {second_s:.2f} s = "
                f"{(len(keys) - half) / second_s:,.0f} keys/s"
            )
            raw_s += second_s
            raw_rate = len(keys) / raw_s

            async with services.engine.connect() as conn:
                rows_left = 0
                for table in (events, clips):
                    rows_left += int(await conn.scalar(select(func.count()).select_from(table)) or 0)
            left = await asyncio.to_thread(
                objects_left, S3StoreSettings.model_validate(config["regions"][REGION]["store"])
            )
            left += await asyncio.to_thread(objects_left, raw_store)
    finally:
        moto.stop()
        if args.keep:
            print(f"kept {root} (moto.log, manifest.tsv, the database)")
        else:
            shutil.rmtree(root, ignore_errors=True)

    ratio = sweep_rate / raw_rate
    print(f"\ncamgate sweep bench, {time.strftime('%Y-%m-%d %H:%M')}, {CORES} CPUs, {database}\n")
    rows = [
        ("figure", "measured", "ceiling (same run)", "ratio", "target", ""),
        (
            "sweep keys/s",
            f"{sweep_rate:,.0f}",
            f"raw DeleteObjects {raw_rate:,.0f} keys/s",
            f"{ratio:.3f}",
            f"≥ {TARGET}",
            "met" if ratio >= TARGET else "NOT met",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("| " + " | ".join("-" * w for w in widths) + " |")
    print(
        f"\nraw: {-(-len(keys) // DELETE_BATCH)} DeleteObjects requests; CPU: S3 server {raw_cpu[0]:.1f} s, "
        f"bench process {raw_cpu[1]:.1f} s"
    )
    print(
        f"sweep: {report.records:,} records, {report.objects:,} objects, {report.bytes:,} bytes of "
        f"{len(report.accounts)} accounts; CPU: S3 server {sweep_cpu[0]:.1f} s, gateway {sweep_cpu[1]:.1f} s"
    )
    if left or rows_left or not report.ok:
        print(
            f"WRONG: {left} objects and {rows_left} records left, sweep ok={report.ok} ({report.errors[:3]})"
        )
        return 1
    return 0


def main() -> None:
    """``python -m bench.sweep``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--objects", type=int, default=100_000, help="objects per set (default 100,000)")
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="sweep batch, in records (default 1,000)"
    )
    parser.add_argument(
        "--database-url", help="the sweep's database (postgresql+asyncpg://…, empty); default SQLite"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    if args.objects < 10:
        parser.error("--objects must be at least 10")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        raise SystemExit(runner.run(bench(args)))


if __name__ == "__main__":
    main()
