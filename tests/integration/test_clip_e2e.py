"""End to end over a real Mosquitto: a device_sim camera on the trial sends an alert and then its clip
(a burst of JPEG frames, one part per message); the gateway app consumes with manual acks, stores the
event and encodes the clip to one VP8 WebM object that OpenCV reads back."""

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
from sqlalchemy import func, select

from device_sim import CameraOptions, Fleet, FleetOptions
from gateway.adapters.db.tables import clip_parts, clip_uploads, clips, events
from gateway.api.app import create_app
from gateway.bootstrap import Services, build
from tests.integration.conftest import test_settings
from tests.support.api import auth, new_user, serve
from tests.support.clock import ManualClock
from tests.support.mosquitto import MosquittoBroker
from tests.support.seed import import_fleet, seed_subscription

FRAMES = 10


async def wait_for(condition: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def count(services: Services, table: object) -> int:
    async with services.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


def frames_in(data: bytes) -> tuple[int, set[tuple[int, ...]]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.webm"
        path.write_bytes(data)
        capture = cv2.VideoCapture(str(path))
        shapes: set[tuple[int, ...]] = set()
        n = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            n += 1
            shapes.add(frame.shape)
        capture.release()
    return n, shapes


async def test_a_simulated_camera_on_the_trial_records_its_event_clip(
    mosquitto_broker: MosquittoBroker, database_url: str, tmp_path: Path
) -> None:
    mqtt = {
        "enabled": True,
        "host": mosquitto_broker.host,
        "port": mosquitto_broker.port,
        "username": mosquitto_broker.gateway_username,
        "password": mosquitto_broker.gateway_password,
    }
    # The trial starts a minute before the camera's captures (the camera uses the real time).
    clock = ManualClock(datetime.now(UTC) - timedelta(minutes=1))
    async with AsyncExitStack() as stack:
        services = await build(test_settings(database_url, tmp_path, mqtt=mqtt), stack, clock=clock)
        client = await serve(create_app(services), stack)
        assert services.mqtt is not None
        await asyncio.wait_for(services.mqtt.connected.wait(), 10)
        await asyncio.sleep(0.2)  # the SUBACK follows the CONNACK

        (cam,) = await import_fleet(services, 1)
        mosquitto_broker.add_devices({cam.serial: cam.broker_secret})
        token = await new_user(client, tmp_path / "mailbox", "sim@example.com")
        bound = await client.post(
            "/v1/devices", json={"serial": cam.serial, "code": cam.code}, headers=auth(token)
        )
        assert bound.status == 201
        account_id = (await (await client.get("/v1/me", headers=auth(token))).json())["id"]
        await seed_subscription(services, account_id, (await bound.json())["device"]["id"])
        clock.advance(minutes=2)  # the gateway's now is past the captures to come, as real clocks would be

        options = FleetOptions(camera=CameraOptions(clip_frames=FRAMES, clip_size=(320, 180)), scene=None)
        async with Fleet([cam], mosquitto_broker.host, mosquitto_broker.port, options) as fleet:
            alert = await fleet.trigger(cam.serial, "person")
            assert alert is not None

            async def clip_stored() -> bool:
                return await count(services, clips) == 1

            await wait_for(clip_stored)
            counters = fleet.counters
        assert counters.clips_sent == 1 and counters.clip_parts_acked == FRAMES

        assert await count(services, events) == 1
        async with services.engine.connect() as conn:
            (row,) = list(await conn.execute(select(clips)))
        assert row.camera_clip_id == alert.event_id == row.event_id
        assert (row.frames, row.width, row.height, row.plan_id) == (FRAMES, 320, 180, "trial")
        assert row.retain_until == alert.captured_at + timedelta(days=7)
        data = await services.stores.for_region("sg").get(row.key)
        assert row.bytes == len(data) and frames_in(data) == (FRAMES, {(180, 320, 3)})
        assert await count(services, clip_parts) == 0 and await count(services, clip_uploads) == 0
        assert services.mqtt.unacknowledged == 0, "every part acknowledged once committed"
