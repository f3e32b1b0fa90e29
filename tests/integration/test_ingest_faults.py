"""Crash tests: the gateway SIGKILLed repeatedly while alerts are in flight, and the broker SIGKILLed with
a backlog. Afterwards every alert is stored exactly once: one event, one snapshot, one thumbnail, one push.
The gateway runs as a real process on PostgreSQL; the broker is Mosquitto with the deploy/ policy."""

import asyncio
import random
import threading
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from device_sim.registry import SimDevice, new_fleet
from gateway.adapters.db.tables import dead_letters, events, push_outbox
from gateway.bootstrap import build
from gateway.config import load_settings
from gateway.services.accounts import SignUp
from gateway.services.registry import import_registry
from tests.support.api import PASSWORD, last_code
from tests.support.gateway_proc import SECRET_KEY, GatewayProcess
from tests.support.media import alert, jpeg
from tests.support.mosquitto import MosquittoBroker

# These tests are about crashes, not about rate limits: let each camera send its whole backlog at once.
NO_RATE_LIMIT = {"CAMGATE_INGEST__CAMERA_BURST": "100000"}
SMALL = jpeg(640, 360)  # ~28 KB: 2,000 of them stay far below the broker's per-client queue cap


def prepare(database_url: str, data_dir: Path, broker: MosquittoBroker, cameras: int) -> list[SimDevice]:
    """Migrates, imports a fleet, and binds it to one account, through the real services."""
    fleet = new_fleet(cameras)

    async def work() -> None:
        settings = load_settings(
            environment="test",
            data_dir=data_dir,
            database={"url": database_url},
            security={"secret_key": SECRET_KEY, "argon2_time_cost": 1, "argon2_memory_kib": 8192},
            notify={"mailbox_dir": data_dir / "mailbox"},
            mqtt={"enabled": False},
        )
        async with AsyncExitStack() as stack:
            services = await build(settings, stack)
            rows = [
                (
                    i,
                    {
                        "serial": d.serial,
                        "verification_code": d.code,
                        "model": d.model,
                        "broker_secret": d.broker_secret,
                    },
                )
                for i, d in enumerate(fleet)
            ]
            await import_registry(services.engine, services.pepper, services.clock, rows)
            await services.accounts.register(
                SignUp(
                    "crash@example.com",
                    PASSWORD,
                    birth_date=services.clock.now().date().replace(year=1990),
                    region="sg",
                ),
                address="test",
            )
            account = await services.accounts.confirm(
                "crash@example.com",
                last_code(data_dir / "mailbox", "crash@example.com"),
                PASSWORD,
                address="test",
            )
            for cam in fleet:
                await services.devices.bind(account.id, cam.serial, cam.code, name="", address="test")

    asyncio.run(work())
    broker.add_devices({d.serial: d.broker_secret for d in fleet})
    return fleet


def publish_all(broker: MosquittoBroker, fleet: list[SimDevice], per_camera: int) -> None:
    """Every camera publishes its alerts at QoS 1, concurrently; returns when the broker has them all."""

    def camera(cam: SimDevice) -> None:
        client = broker.client(cam.serial, cam.broker_secret)
        assert not client.connect().is_failure
        for i in range(per_camera):
            # Captured now, after the binding: earlier captures are not the owner's (dropped).
            payload = alert(f"{cam.serial}-{i}", body=SMALL, at=datetime.now(UTC))
            client.publish(f"cam/{cam.serial}/alert", payload)

    threads = [threading.Thread(target=camera, args=(cam,)) for cam in fleet]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def counts(database_url: str) -> dict[str, int]:
    async def work() -> dict[str, int]:
        from gateway.adapters.db.engine import create_engine

        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                out = {}
                for name, table in (("events", events), ("outbox", push_outbox), ("dead", dead_letters)):
                    out[name] = int(
                        (await conn.execute(select(func.count()).select_from(table))).scalar_one()
                    )
                distinct = select(events.c.device_id, events.c.camera_event_id).distinct().subquery()
                out["distinct"] = int(
                    (await conn.execute(select(func.count()).select_from(distinct))).scalar_one()
                )
                return out
        finally:
            await engine.dispose()

    return asyncio.run(work())


def media_files(data_dir: Path) -> list[Path]:
    """Stored objects: not the tag sidecars, not the .tmp-* files of writes a SIGKILL interrupted."""
    root = data_dir / "media"
    return [
        p for p in root.rglob("*") if p.is_file() and ".meta" not in p.parts and not p.name.startswith(".")
    ]


def wait_for_events(database_url: str, expected: int, seconds: float) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    while True:
        now = counts(database_url)
        if now["events"] >= expected or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def test_gateway_sigkilled_while_alerts_are_in_flight(
    mosquitto_broker: MosquittoBroker, pg_database_url: str, tmp_path: Path
) -> None:
    cameras, per_camera = 20, 100
    fleet = prepare(pg_database_url, tmp_path, mosquitto_broker, cameras)
    gateway = GatewayProcess(pg_database_url, tmp_path, mosquitto_broker, **NO_RATE_LIMIT)
    gateway.start()  # its persistent session now exists: the broker queues for it while it is down
    publisher = threading.Thread(target=publish_all, args=(mosquitto_broker, fleet, per_camera))
    publisher.start()
    rng = random.Random(7)
    try:
        for _ in range(3):
            time.sleep(rng.uniform(0.8, 2.0))
            gateway.kill()
            time.sleep(rng.uniform(0.1, 0.5))
            gateway.start()
        publisher.join()
        published = time.monotonic()
        result = wait_for_events(pg_database_url, cameras * per_camera, seconds=120)
        print(f"all stored {time.monotonic() - published:.1f} s after the last publish")
    finally:
        gateway.stop()
    assert result == {"events": 2000, "outbox": 2000, "dead": 0, "distinct": 2000}
    assert len(media_files(tmp_path)) == 2 * 2000  # one snapshot and one thumbnail each
    assert "Traceback" not in gateway.log.read_text()


def test_broker_sigkilled_with_a_backlog_loses_nothing(
    mosquitto_broker: MosquittoBroker, pg_database_url: str, tmp_path: Path
) -> None:
    fleet = prepare(pg_database_url, tmp_path, mosquitto_broker, 10)
    gateway = GatewayProcess(pg_database_url, tmp_path, mosquitto_broker, **NO_RATE_LIMIT)
    gateway.start()
    gateway.stop()  # a clean stop: the broker keeps the session and queues for it
    publish_all(mosquitto_broker, fleet, 30)
    mosquitto_broker.sync()  # the broker saves once a second (docs/broker.md)
    mosquitto_broker.kill()
    mosquitto_broker.start()
    gateway.start()
    try:
        result = wait_for_events(pg_database_url, 300, seconds=60)
    finally:
        gateway.stop()
    assert result == {"events": 300, "outbox": 300, "dead": 0, "distinct": 300}
