"""End to end over a real Mosquitto (the project's deploy/ policy) and, where named, the S3 server:
cameras publish, the gateway app consumes with manual acks, the result is read through the HTTP API."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from device_sim.registry import SimDevice
from gateway.adapters.db.tables import events
from gateway.api.app import create_app
from gateway.bootstrap import Services, build
from gateway.config import Settings
from gateway.services.registry import import_registry
from gateway.wire import ConfigHeader, decode
from tests.integration.conftest import test_settings
from tests.support.api import auth, new_user, serve
from tests.support.clock import ManualClock
from tests.support.media import alert, jpeg
from tests.support.mosquitto import MosquittoBroker, MqttTestClient
from tests.support.s3server import S3Server, create_bucket

Factory = Callable[..., Awaitable[tuple[TestClient, Services]]]


@pytest.fixture
async def gateway(
    mosquitto_broker: MosquittoBroker,
    database_url: str,
    tmp_path: Path,
) -> AsyncIterator[Factory]:
    """Starts the real app (HTTP + MQTT consumer) against the test broker; settings can be overridden."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> tuple[TestClient, Services]:
            mqtt = {
                "enabled": True,
                "host": mosquitto_broker.host,
                "port": mosquitto_broker.port,
                "username": mosquitto_broker.gateway_username,
                "password": mosquitto_broker.gateway_password,
            }
            settings: Settings = test_settings(database_url, tmp_path, mqtt=mqtt, **overrides)
            services = await build(settings, stack, clock=ManualClock())
            client = await serve(create_app(services), stack)
            await asyncio.wait_for(services.mqtt.connected.wait(), 10)  # type: ignore[union-attr]
            await asyncio.sleep(0.2)  # the SUBACK follows the CONNACK
            return client, services

        yield start


async def cameras(services: Services, broker: MosquittoBroker, count: int) -> list[SimDevice]:
    from device_sim.registry import new_fleet

    fleet = new_fleet(count)
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
    broker.add_devices({d.serial: d.broker_secret for d in fleet})
    return fleet


def connect(broker: MosquittoBroker, cam: SimDevice) -> MqttTestClient:
    client = broker.client(cam.serial, cam.broker_secret)
    assert not client.connect().is_failure
    return client


async def wait_for(condition: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def event_count(services: Services) -> int:
    async with services.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(events))).scalar_one())


async def test_alert_over_the_broker_is_stored_once(
    gateway: Factory, mosquitto_broker: MosquittoBroker, mailbox: Path
) -> None:
    client, services = await gateway()
    cam, other = await cameras(services, mosquitto_broker, 2)
    token = await new_user(client, mailbox, "e2e@example.com")
    assert (
        await client.post("/v1/devices", json={"serial": cam.serial, "code": cam.code}, headers=auth(token))
    ).status == 201

    camera = connect(mosquitto_broker, cam)
    camera.publish(f"cam/{cam.serial}/alert", alert("e2e-1"))
    camera.publish(f"cam/{cam.serial}/alert", alert("e2e-1"))  # the camera was unsure and sent it again

    async def one_event() -> bool:
        return await event_count(services) == 1

    await wait_for(one_event)
    await asyncio.sleep(0.3)
    assert await event_count(services) == 1
    page = await (await client.get("/v1/events", headers=auth(token))).json()
    snap = await client.get(page["items"][0]["snapshot_url"], headers=auth(token))
    assert await snap.read() == jpeg()

    # another camera publishing on this camera's topic: refused by the broker, nothing stored
    intruder = connect(mosquitto_broker, other)
    intruder.publish(f"cam/{cam.serial}/alert", alert("forged-1"))
    await asyncio.sleep(0.5)
    assert await event_count(services) == 1


async def test_opt_out_reaches_the_camera_and_stores_nothing(
    gateway: Factory, mosquitto_broker: MosquittoBroker, mailbox: Path, tmp_path: Path
) -> None:
    client, services = await gateway()
    (cam,) = await cameras(services, mosquitto_broker, 1)
    token = await new_user(client, mailbox, "off@example.com")
    await client.post("/v1/devices", json={"serial": cam.serial, "code": cam.code}, headers=auth(token))
    await client.put("/v1/settings/alerts", json={"message_alerts": False}, headers=auth(token))

    camera = connect(mosquitto_broker, cam)
    camera.subscribe(f"cam/{cam.serial}/config")
    config, _ = decode(camera.next_message().payload)  # retained: the camera gets it on subscribing
    assert isinstance(config, ConfigHeader) and config.alerts_enabled is False

    for i in range(5):  # a camera that ignores its config anyway
        camera.publish(f"cam/{cam.serial}/alert", alert(f"off-{i}"))
    await asyncio.sleep(1.0)
    assert await event_count(services) == 0
    media = tmp_path / "media"
    assert not media.exists() or not [p for p in media.rglob("*") if p.is_file()]
    assert services.mqtt is not None and services.mqtt.unacknowledged == 0, (
        "dropped messages are acknowledged"
    )


async def test_alerts_go_to_s3_and_wait_out_an_s3_outage(
    gateway: Factory, mosquitto_broker: MosquittoBroker, mailbox: Path, private_s3_server: S3Server
) -> None:
    bucket = create_bucket(private_s3_server, versioned=False)
    store = bucket.settings(max_attempts=1, connect_timeout_s=0.5, read_timeout_s=2).model_dump()
    client, services = await gateway(
        regions={"sg": {"display_name": "Singapore", "store": store}},
        ingest={"retry_max_s": 0.5},
    )
    (cam,) = await cameras(services, mosquitto_broker, 1)
    token = await new_user(client, mailbox, "s3@example.com")
    await client.post("/v1/devices", json={"serial": cam.serial, "code": cam.code}, headers=auth(token))
    camera = connect(mosquitto_broker, cam)

    camera.publish(f"cam/{cam.serial}/alert", alert("s3-0"))

    async def stored(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await event_count(services) == n

        return check

    await wait_for(await stored(1))
    event = (await (await client.get("/v1/events", headers=auth(token))).json())["items"][0]
    redirect = await client.get(event["snapshot_url"], headers=auth(token), allow_redirects=False)
    assert redirect.status == 307
    async with aiohttp.ClientSession() as http, http.get(redirect.headers["Location"]) as presigned:
        assert await presigned.read() == jpeg()

    private_s3_server.stop()
    for i in range(1, 11):
        camera.publish(f"cam/{cam.serial}/alert", alert(f"s3-{i}"))
    await asyncio.sleep(2.0)
    assert await event_count(services) == 1, "nothing stored while S3 is down"
    print(
        "DEBUG",
        services.mqtt._sequencer.generation,
        services.mqtt.connected.is_set(),
        services.mqtt._queue.qsize(),
    )
    assert services.mqtt is not None and services.mqtt.unacknowledged == 10, "nothing acknowledged early"

    private_s3_server.start()
    private_s3_server.admin().create_bucket(Bucket=bucket.name)  # moto forgets buckets across restarts
    await wait_for(await stored(11), seconds=30)
    assert services.mqtt.unacknowledged == 0
    keys = [
        o["Key"] for o in private_s3_server.admin().list_objects_v2(Bucket=bucket.name).get("Contents", [])
    ]
    assert len(keys) == 20  # snapshot + thumbnail for each alert sent during the outage
