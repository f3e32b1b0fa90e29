"""Simulated cameras on the project's real Mosquitto, watched by a gateway-side subscriber.

Assertions look at what the subscriber receives (Mosquitto acknowledges publishes its ACL refused).
The subscriber's client runs in paho's thread; these tests poll its queue without blocking the event
loop the fleet runs on.
"""

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from device_sim import CameraOptions, Fleet, FleetOptions, SceneOptions, SentAlert, SimDevice
from device_sim.aio_paho import MqttVersion
from device_sim.registry import new_fleet, read_registry, write_registry
from gateway.wire import AlertHeader, ConfigHeader, StatusHeader, decode, encode
from tests.support.mosquitto import MosquittoBroker, MqttTestClient

# Busy scenes and short cooldowns, so a few seconds show plenty of alerts.
BUSY = FleetOptions(
    camera=CameraOptions(cooldown_s=0.5, firmware="sim-9.9.9"),
    scene=SceneOptions(mean_gap_s=0.7, crossing_s=(1.5, 3.0)),
    fps=5.0,
)


@dataclass(frozen=True)
class Received:
    serial: str
    header: AlertHeader | StatusHeader | ConfigHeader
    body: bytes


class Watch:
    """What the gateway-side subscriber got, decoded, gathered without blocking the loop."""

    def __init__(self, client: MqttTestClient) -> None:
        self.client = client
        self.got: list[Received] = []

    def _take(self) -> None:
        for message in self.client.drain():
            header, body = decode(message.payload)
            self.got.append(Received(message.topic.split("/")[1], header, bytes(body)))

    async def until(self, done: Callable[[list[Received]], bool], timeout_s: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while True:
            self._take()
            if done(self.got):
                return self.got
            if time.monotonic() > deadline:
                raise AssertionError(f"not seen within {timeout_s} s; got {len(self.got)} messages")
            await asyncio.sleep(0.05)

    async def settle(self, seconds: float) -> list[Received]:
        await asyncio.sleep(seconds)
        self._take()
        return self.got

    def alerts(self, serial: str | None = None) -> list[tuple[str, AlertHeader, bytes]]:
        return [
            (r.serial, r.header, r.body)
            for r in self.got
            if isinstance(r.header, AlertHeader) and serial in (None, r.serial)
        ]

    def statuses(self, online: bool) -> list[Received]:
        return [r for r in self.got if isinstance(r.header, StatusHeader) and r.header.online is online]


class Sent:
    """An AlertListener that keeps what the fleet sent."""

    def __init__(self) -> None:
        self.alerts: list[SentAlert] = []
        self.acked: set[tuple[str, str]] = set()

    def alert_sent(self, alert: SentAlert) -> None:
        self.alerts.append(alert)

    def alert_acked(self, serial: str, event_id: str, at: float) -> None:
        self.acked.add((serial, event_id))


@pytest.fixture
def devices(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> list[SimDevice]:
    """Twenty cameras, read back from a registry CSV, with broker accounts."""
    path = tmp_path / "registry.csv"
    write_registry(new_fleet(20), path)
    fleet = read_registry(path)
    mosquitto_broker.add_devices({d.serial: d.broker_secret for d in fleet})
    return fleet


@pytest.fixture
def watch(mosquitto_broker: MosquittoBroker) -> Watch:
    client = mosquitto_broker.gateway_client()
    assert client.connect().value == 0
    client.subscribe("cam/+/status", "cam/+/alert")
    return Watch(client)


async def _configure(broker_client: MqttTestClient, serial: str, config: ConfigHeader) -> None:
    await asyncio.to_thread(broker_client.publish, f"cam/{serial}/config", encode(config), retain=True)


@pytest.mark.parametrize("mqtt", ["3.1.1", "5"])
async def test_a_fleet_connects_announces_itself_and_sends_real_snapshots(
    mosquitto_broker: MosquittoBroker, devices: list[SimDevice], watch: Watch, mqtt: MqttVersion
) -> None:
    sent = Sent()
    options = FleetOptions(
        camera=CameraOptions(mqtt=mqtt, cooldown_s=0.5, firmware="sim-9.9.9"), scene=BUSY.scene
    )
    fleet = Fleet(devices, mosquitto_broker.host, mosquitto_broker.port, options)
    fleet.add_listener(sent)
    async with fleet:
        assert fleet.online == 20
        online = await watch.until(lambda _: len(watch.statuses(online=True)) >= 20)
        assert {r.serial for r in watch.statuses(online=True)} == {d.serial for d in devices}
        assert all(r.header.firmware == "sim-9.9.9" for r in online if isinstance(r.header, StatusHeader))
        await watch.until(lambda _: len({s for s, _, _ in watch.alerts()}) >= 5)
    alerts = watch.alerts()
    by_id = {(a.serial, a.event_id): a for a in sent.alerts}
    for serial, header, body in alerts:
        assert (serial, header.event_id) in by_id  # the camera reported what it sent
        assert header.kind in {"motion", "person"} and header.body_size == len(body)
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (720, 1280, 3)
        assert 50_000 < len(body) < 150_000
    # Which kinds show up among a handful of random crossings is chance: it can be a single kind;
    # each alert's kind is checked above, and person detection in tests/unit/test_sim_motion.py.
    # A graceful stop says goodbye explicitly: a clean DISCONNECT does not fire the will.
    offline = await watch.until(lambda _: len(watch.statuses(online=False)) >= 20)
    assert len([r for r in offline if isinstance(r.header, StatusHeader) and not r.header.online]) == 20
    counters = fleet.counters
    assert counters.alerts_sent == len(sent.alerts) and counters.alerts_acked == len(sent.acked)
    assert counters.refused == 0 and counters.connection_losses == 0


async def test_cameras_obey_their_config(
    mosquitto_broker: MosquittoBroker, devices: list[SimDevice], watch: Watch
) -> None:
    muted, picky = devices[0].serial, devices[1].serial
    sent = Sent()
    async with Fleet(devices, mosquitto_broker.host, mosquitto_broker.port, BUSY) as fleet:
        fleet.add_listener(sent)
        await watch.until(lambda got: len(watch.alerts(muted)) >= 1, timeout_s=20)
        now = datetime.now(UTC)
        await _configure(watch.client, muted, ConfigHeader(alerts_enabled=False, issued_at=now))
        await _configure(
            watch.client, picky, ConfigHeader(alerts_enabled=True, event_kinds=["person"], issued_at=now)
        )
        await watch.until(
            lambda _: fleet.camera(muted).config is not None and fleet.camera(picky).config is not None
        )
        before = {a.event_id for a in sent.alerts if a.serial == muted}
        since = len(sent.alerts)

        assert await fleet.trigger(picky, "motion") is None
        assert await fleet.trigger(picky, "person") is not None
        assert await fleet.trigger(muted, "person") is None
        await watch.settle(3.0)

        later = sent.alerts[since:]
        assert not [a for a in later if a.serial == muted]
        assert {a.kind for a in later if a.serial == picky} == {"person"}
        assert len({a.serial for a in later}) >= 5, "the other cameras carry on"
    assert {h.event_id for _, h, _ in watch.alerts(muted)} <= before
    assert fleet.counters.suppressed_by_config >= 3


async def test_a_crashed_camera_gets_its_last_will_published(
    mosquitto_broker: MosquittoBroker, devices: list[SimDevice], watch: Watch
) -> None:
    victim = devices[3].serial
    async with Fleet(
        devices, mosquitto_broker.host, mosquitto_broker.port, FleetOptions(scene=None)
    ) as fleet:
        await watch.until(lambda _: len(watch.statuses(online=True)) >= 20)
        fleet.crash(victim)
        got = await watch.until(lambda _: len(watch.statuses(online=False)) >= 1, timeout_s=5)
        [will] = [r for r in got if isinstance(r.header, StatusHeader) and not r.header.online]
        assert will.serial == victim and will.header.firmware == "sim-1.0.0"
        await watch.settle(0.5)
        assert len(watch.statuses(online=False)) == 1, "nobody else went down"
        assert fleet.online == 19


async def test_a_restarted_camera_republishes_unacknowledged_alerts_with_their_event_ids(
    mosquitto_broker: MosquittoBroker, devices: list[SimDevice], watch: Watch
) -> None:
    serial = devices[5].serial
    async with Fleet(devices[:6], mosquitto_broker.host, mosquitto_broker.port, BUSY) as fleet:
        camera = fleet.camera(serial)
        fleet.crash(serial)
        # Made while down: kept in the outbox, as a camera keeps them in flash.
        pending = await fleet.trigger(serial, "person")
        assert pending is not None and len(camera.outbox) >= 1
        fleet.restart(serial)
        await watch.until(lambda _: pending.event_id in {h.event_id for _, h, _ in watch.alerts(serial)})
        assert await fleet.wait_online(6, timeout_s=5)
        assert fleet.counters.alerts_republished >= 1


async def test_a_camera_with_a_wrong_secret_is_refused_and_the_rest_connect(
    mosquitto_broker: MosquittoBroker, devices: list[SimDevice]
) -> None:
    wrong = SimDevice(devices[0].serial, devices[0].code, devices[0].model, "not-the-secret-at-all")
    fleet = Fleet(
        [wrong, *devices[1:5]], mosquitto_broker.host, mosquitto_broker.port, FleetOptions(scene=None)
    )
    await fleet.start(timeout_s=None)
    try:
        assert await fleet.wait_online(4, timeout_s=10)
        await asyncio.sleep(0.3)
        assert fleet.online == 4
        assert fleet.counters.refused >= 1
    finally:
        await fleet.stop()


async def test_cameras_come_back_after_the_broker_restarts(
    mosquitto_broker: MosquittoBroker, devices: list[SimDevice]
) -> None:
    options = FleetOptions(scene=None, reconnect_s=(0.1, 0.5))
    # A persistent session, saved before the crash: the cameras may re-publish before the watcher is
    # back, and the broker queues what they send for it.
    watch = mosquitto_broker.gateway_client(clean=False, session_expiry_s=600)
    assert watch.connect().value == 0
    watch.subscribe("cam/+/alert")
    watch.close()
    async with Fleet(devices[:5], mosquitto_broker.host, mosquitto_broker.port, options) as fleet:
        await asyncio.to_thread(mosquitto_broker.sync)
        await asyncio.to_thread(mosquitto_broker.kill)
        await asyncio.sleep(0.5)  # several refused reconnects meanwhile
        assert fleet.online == 0
        # Made during the outage: kept, and published once the broker is back.
        during = await fleet.trigger(devices[0].serial, "motion")
        assert during is not None
        await asyncio.to_thread(mosquitto_broker.start)
        assert await fleet.wait_online(5, timeout_s=10)
        watch = mosquitto_broker.gateway_client(clean=False, session_expiry_s=600)
        assert watch.connect().value == 0
        counters = fleet.counters
        assert counters.connection_losses == 5 and counters.connects == 10 and counters.connect_failures >= 5
        message = await asyncio.to_thread(watch.next_message)
        header, _ = decode(message.payload)
        assert isinstance(header, AlertHeader) and header.event_id == during.event_id


async def test_no_broker_means_counted_failures_and_a_quick_clean_stop() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    fleet = Fleet(new_fleet(3), "127.0.0.1", port, FleetOptions(scene=None, reconnect_s=(0.05, 0.1)))
    await fleet.start(timeout_s=None)
    await asyncio.sleep(0.5)
    assert fleet.online == 0 and fleet.counters.connect_failures >= 6
    started = time.monotonic()
    await fleet.stop()
    assert time.monotonic() - started < 2


async def test_a_broker_that_never_answers_connect_times_out() -> None:
    silent: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # holds the connection open and says nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    options = FleetOptions(camera=CameraOptions(connect_timeout_s=0.3), scene=None, reconnect_s=(5.0, 5.0))
    fleet = Fleet(new_fleet(2), "127.0.0.1", port, options)
    try:
        await fleet.start(timeout_s=None)
        await asyncio.sleep(0.8)
        assert fleet.online == 0 and fleet.counters.connect_failures == 2
    finally:
        await fleet.stop()
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()
