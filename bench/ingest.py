"""Ingest benchmark: how many alerts a second one gateway process stores, how fast, at what CPU cost,
beside the ceilings of the parts it stands on, measured in the same run on the same machine.

    .venv/bin/python -m bench.ingest [--store local|s3|both] [--seconds N] [--cameras N] [--quick]
                                     [--database-url URL] [--no-malloc-tuning] [--keep] [--verbose]

Everything is set up in a temp folder: a private Mosquitto with the project's policy (broker accounts
rendered from the registry), moto's S3 server (for ``s3``), a SQLite database (or ``--database-url``),
the gateway as a separate process (``python -m gateway serve``), a simulated fleet bound to one
account, and a webhook receiver registered as that account's push target. Per store:

1. **max sustained rate**: ``run_load`` in one-second chunks whose rate is set so that about
   ``2 x ingest.concurrency`` alerts always wait for the gateway (never idle, and the broker's queue
   stays small); after a warm-up, alerts committed per second over the window (``events.stored_at``).
2. **half that rate**: publish-to-commit latency (``AlertRecord.published_at`` joined with
   ``events.stored_at`` on camera and event id) and publish-to-webhook (arrival at the receiver).
3. **CPU per alert**: the gateway process's CPU time (every thread, from /proc) over the half-rate phase,
   until its last alert is committed and pushed, divided by the alerts.

The ceilings: raw PutObject/s to the same S3 server from as many threads as the gateway's S3 pool,
MQTT pass-through with the project's broker policy, and the gateway's ``make_snapshot`` on one core.
The figures depend on the machine and on whatever else runs on it (the details say how busy it was):
they are printed, never asserted, and the exit status is 0 whatever they are.
"""

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench._ceilings import (
    MqttAccount,
    alert_envelopes,
    end_session,
    mqtt_ceiling,
    opencv_ceiling,
    put_ceiling,
)
from bench._measure import Probe, saturate, steady, write_timings
from bench._report import Ceilings, StoreResult, details, table
from bench._rig import (
    REGION,
    GatewayProcess,
    MotoServer,
    WebhookReceiver,
    prepare,
    settings_from_env,
    to_env,
    wait_until,
)
from device_sim import Fleet, FleetOptions, SimDevice, run_load
from device_sim.imaging import jpeg_pool
from gateway.adapters.broker_auth import hash_gateway_password, read_pid_file
from gateway.bootstrap import build
from gateway.devbroker import DevBroker, find_mosquitto, free_port
from storage.s3 import build_client
from storage.settings import S3StoreSettings

# FIELD_NOTES: glibc otherwise returns and re-faults decode buffers; off with --no-malloc-tuning.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "268435456"}
SUBSCRIBER = MqttAccount("camgate-bench-passthrough", "bench pass-through subscriber password")
BUCKET = "camgate-bench-media"
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Plan:
    """How long each part runs."""

    cameras: int
    seconds: float  # each measurement window (max rate, half rate)
    warm_s: float  # the max-rate loop's warm-up, not counted
    ceiling_s: float  # each ceiling
    settle_s: float  # longest wait for a backlog (commits and pushes) to clear


@dataclass
class Run:
    """What the stores of one run share."""

    root: Path
    plan: Plan
    pool: list[bytes]
    broker: DevBroker
    moto: MotoServer | None
    ceilings: Ceilings
    malloc_tuning: bool
    database_url: str | None
    verbose: bool
    broker_running: bool = False


def gateway_config(
    kind: str, run: Run, data_dir: Path, http_port: int, account: MqttAccount
) -> dict[str, Any]:
    """The gateway's settings for one store (handed over as ``CAMGATE_*`` variables)."""
    region: dict[str, Any] = {"display_name": "Singapore"}
    if kind == "s3":
        assert run.moto is not None
        region["store"] = run.moto.store_settings(BUCKET)
    return {
        "environment": "development",
        "log_level": "WARNING",
        "data_dir": data_dir,
        "database": {"url": run.database_url or f"sqlite+aiosqlite:///{data_dir / 'camgate.db'}"},
        "http": {"port": http_port},
        "security": {"secret_key": "b" * 40},
        "notify": {"mailbox_dir": data_dir / "mailbox"},
        "regions": {REGION: region},
        "mqtt": {
            "host": "127.0.0.1",
            "port": run.broker.port,
            "username": account.username,
            "password": account.password,
        },
        "broker": {
            "password_file": run.broker.password_file,
            "acl_file": run.broker.acl_file,
            "pid_file": run.broker.pid_file,
            "gateways": [
                {"username": a.username, "password_hash": hash_gateway_password(a.password)}
                for a in (account, SUBSCRIBER)
            ],
        },
        # Load mode sends each camera far more than a real one would: lift the per-camera limit.
        "ingest": {"camera_burst": 1_000_000, "camera_per_minute": 1e9},
        "push": {"allow_private_addresses": True},
    }


async def run_store(kind: str, run: Run) -> StoreResult:
    """Sets one store up, measures it, and takes it down again."""
    plan = run.plan
    data_dir = run.root / kind
    data_dir.mkdir()
    http_port = free_port()
    account = MqttAccount(f"camgate-bench-{kind}", f"bench gateway {os.urandom(8).hex()}")
    env = to_env(gateway_config(kind, run, data_dir, http_port, account))
    settings = settings_from_env(env)
    notes: list[str] = []
    async with AsyncExitStack() as stack:
        services = await build(settings, stack)  # set-up, and reading results, in this process
        receiver = WebhookReceiver()
        await receiver.start()
        stack.push_async_callback(receiver.stop)
        prepared = await prepare(services, plan.cameras, receiver.url)
        if not run.broker_running:
            await asyncio.to_thread(run.broker.start)
            run.broker_running = True
        await measure_ceilings(kind, run, prepared.devices[:4])

        gateway_env = {**env, **(MALLOC_ENV if run.malloc_tuning else {})}
        gateway = GatewayProcess(gateway_env, http_port, data_dir / "gateway.log")
        await asyncio.to_thread(gateway.start)
        stack.callback(end_session, "127.0.0.1", run.broker.port, account)  # once the gateway has stopped
        stack.callback(gateway.stop)
        fleet = Fleet(prepared.devices, "127.0.0.1", run.broker.port, FleetOptions(scene=None))
        await fleet.start(timeout_s=60)
        stack.push_async_callback(fleet.stop)
        if fleet.online < len(prepared.devices):
            raise RuntimeError(f"only {fleet.online}/{len(prepared.devices)} cameras came online")
        pids = {
            "gateway": gateway.pid,
            "broker": read_pid_file(run.broker.pid_file),
            "load+webhook": os.getpid(),
        }
        if kind == "s3" and run.moto is not None:
            pids["S3 server"] = run.moto.pid
        probe = Probe(services.engine, prepared.account_id, pids)

        # Warm-up: first connections, the S3 conditional-put probe, statement caches.
        expected = (await run_load(fleet, rate=20, duration_s=1.0, pool=run.pool)).sent

        async def all_in() -> bool:
            return await probe.committed() >= expected and len(receiver.arrived) >= expected

        await wait_until(all_in, plan.settle_s)
        print(
            f"[{kind}] gateway up (pid {gateway.pid}, http://127.0.0.1:{http_port}), {fleet.online} cameras online; max rate …"
        )

        def log(line: str) -> None:
            if run.verbose:
                print(f"[{kind}]   {line}")

        saturation, records = await saturate(
            fleet,
            run.pool,
            probe,
            warm_s=plan.warm_s,
            window_s=plan.seconds,
            backlog=2 * settings.ingest.concurrency,
            cores=CORES,
            log=log,
        )
        expected += len(records)
        print(
            f"[{kind}] max sustained {saturation.rate:.1f} alerts/s over {saturation.window_s:.0f} s; "
            "waiting for commits and pushes to catch up …"
        )
        began = time.monotonic()
        if not await wait_until(all_in, plan.settle_s):
            notes.append(
                f"the max-rate backlog had not cleared after {plan.settle_s:.0f} s ({await probe.committed()}/"
                f"{expected} committed, {len(receiver.arrived)} pushed): half-rate latencies include it"
            )
        caught_up = time.monotonic() - began
        notes.append(f"commits and pushes caught up {caught_up:.1f} s after the max-rate window")
        print(f"[{kind}] caught up in {caught_up:.1f} s; half rate ({saturation.rate / 2:.1f}/s) …")
        half, timings = await steady(
            fleet,
            run.pool,
            probe,
            receiver,
            rate=saturation.rate / 2,
            seconds=plan.seconds,
            settle_s=plan.settle_s,
            cores=CORES,
        )
        if half.committed < half.sent or half.pushed < half.committed:
            notes.append(
                f"half rate: {half.committed}/{half.sent} committed and {half.pushed} pushed within "
                f"{plan.settle_s:.0f} s of the last publish"
            )
        write_timings(data_dir / "half_rate.csv", timings)
    return StoreResult(kind, saturation, half, notes)


async def measure_ceilings(kind: str, run: Run, cameras: list[SimDevice]) -> None:
    """The ceilings that need the broker or the S3 server: once per run, before any gateway runs."""
    c = run.ceilings
    if c.mqtt is None:
        accounts = [MqttAccount(d.serial, d.broker_secret) for d in cameras]
        c.mqtt = await asyncio.to_thread(
            mqtt_ceiling,
            "127.0.0.1",
            run.broker.port,
            accounts,
            SUBSCRIBER,
            alert_envelopes(run.pool),
            run.plan.ceiling_s,
            read_pid_file(run.broker.pid_file),
        )
        print(f"ceiling: MQTT pass-through {c.mqtt.rate:,.0f} msg/s ({len(accounts)} publishers, QoS 1)")
    if kind == "s3" and c.put is None:
        assert run.moto is not None
        store = S3StoreSettings.model_validate(run.moto.store_settings(BUCKET))
        c.put = await asyncio.to_thread(put_ceiling, store, run.pool, run.plan.ceiling_s, run.moto.pid)
        print(f"ceiling: raw PutObject {c.put.rate:,.0f}/s ({c.put.threads} threads, moto server)")


def create_bucket(moto: MotoServer) -> None:
    """The gateway's bucket (the raw PUT ceiling writes there too, under bench/raw/)."""
    client = build_client(S3StoreSettings.model_validate(moto.store_settings(BUCKET)))
    try:
        client.create_bucket(Bucket=BUCKET)
    finally:
        client.close()


async def bench(args: argparse.Namespace) -> None:
    """Runs the ceilings and each store, then prints the table."""
    if args.quick:
        plan = Plan(args.cameras or 50, args.seconds or 5.0, warm_s=3.0, ceiling_s=1.5, settle_s=30.0)
    else:
        plan = Plan(args.cameras or 200, args.seconds or 15.0, warm_s=5.0, ceiling_s=4.0, settle_s=60.0)
    stores = ["local", "s3"] if args.store == "both" else [args.store]
    if find_mosquitto() is None:
        raise SystemExit("mosquitto is not installed (scripts/bootstrap, or apt-get install mosquitto)")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="camgate-bench-"))
    print(f"camgate ingest bench: {CORES} CPUs, load average {os.getloadavg()[0]:.2f}; working in {root}")
    pool = await asyncio.to_thread(jpeg_pool, 32)
    sizes = sorted(map(len, pool))
    print(f"load: 32 distinct 1280x720 JPEGs of {sizes[0] / 1000:.0f}-{sizes[-1] / 1000:.0f} KB")
    opencv = await asyncio.to_thread(opencv_ceiling, pool, plan.ceiling_s)
    print(f"ceiling: make_snapshot {opencv.snapshot_ms:.2f} ms/image on one core ({opencv.per_core:.0f}/s)")
    broker = DevBroker(root / "broker", free_port())
    broker.directory.mkdir()
    run = Run(
        root,
        plan,
        pool,
        broker,
        None,
        Ceilings(opencv),
        malloc_tuning=not args.no_malloc_tuning,
        database_url=args.database_url,
        verbose=args.verbose,
    )
    results: list[StoreResult] = []
    try:
        if "s3" in stores:
            run.moto = MotoServer(root / "moto.log")
            await asyncio.to_thread(run.moto.start)
            await asyncio.to_thread(create_bucket, run.moto)
        for kind in stores:
            results.append(await run_store(kind, run))
    finally:
        broker.stop()
        if run.moto is not None:
            run.moto.stop()
        if args.keep:
            print(f"kept {root} (gateway logs, databases, media, half_rate.csv per store)")
        else:
            shutil.rmtree(root, ignore_errors=True)
    database = "SQLite" if args.database_url is None else args.database_url.split(":", 1)[0]
    print(
        f"\ncamgate ingest bench, {time.strftime('%Y-%m-%d %H:%M')}, {CORES} CPUs, {plan.cameras} cameras, "
        f"{plan.seconds:g} s windows, {database}, gateway malloc tuning {'on' if run.malloc_tuning else 'off'}\n"
    )
    print("\n".join(table(results, run.ceilings, CORES)))
    print()
    print("\n".join(details(results, run.ceilings, CORES)))
    print(f"\ntotal run time {time.monotonic() - started:.0f} s")


def main() -> None:
    """``python -m bench.ingest``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store", choices=["local", "s3", "both"], default="both")
    parser.add_argument("--seconds", type=float, help="each measurement window (default 15; --quick 5)")
    parser.add_argument("--cameras", type=int, help="simulated cameras (default 200; --quick 50)")
    parser.add_argument("--quick", action="store_true", help="short windows: about a minute in all")
    parser.add_argument(
        "--database-url", help="the gateway's database (postgresql+asyncpg://…); default SQLite"
    )
    parser.add_argument(
        "--no-malloc-tuning", action="store_true", help="run the gateway without MALLOC_* variables"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp folder (logs, databases, media, CSVs)"
    )
    parser.add_argument("--verbose", action="store_true", help="print the max-rate loop's every step")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(bench(args))


if __name__ == "__main__":
    main()
