"""Load mode against the real broker: the target rate is met, every alert is acknowledged, and the
gateway-side subscriber receives each one (the broker's PUBACK alone proves nothing under an ACL)."""

import asyncio
import time

import pytest

from device_sim import CameraOptions, Fleet, FleetOptions, run_load
from device_sim.aio_paho import MqttVersion
from device_sim.imaging import jpeg_pool
from device_sim.registry import new_fleet
from gateway.wire import AlertHeader, decode
from tests.support.mosquitto import MosquittoBroker


@pytest.mark.parametrize("mqtt", ["3.1.1", "5"])
async def test_load_mode_meets_a_modest_rate_and_every_alert_is_acknowledged(
    mosquitto_broker: MosquittoBroker, mqtt: MqttVersion
) -> None:
    devices = new_fleet(20)
    mosquitto_broker.add_devices({d.serial: d.broker_secret for d in devices})
    gateway = mosquitto_broker.gateway_client()
    assert gateway.connect().value == 0
    gateway.subscribe("cam/+/alert")
    pool = jpeg_pool(16)
    options = FleetOptions(camera=CameraOptions(mqtt=mqtt), scene=None)
    async with Fleet(devices, mosquitto_broker.host, mosquitto_broker.port, options) as fleet:
        report = await run_load(fleet, rate=100, duration_s=3.0, pool=pool)

    # Loose bounds: this runs on a shared 2-core machine next to the broker and the subscriber; the
    # pacing itself is checked exactly, on a fake clock, in tests/unit/test_sim_pacing.py.
    assert 70 <= report.achieved_rate <= 115, report.achieved_rate
    assert 210 <= report.sent <= 345
    assert report.all_acked and report.acked == report.sent
    assert {r.serial for r in report.records} == {d.serial for d in devices}, "cameras take turns"
    for r in report.records:
        assert r.acked_at is not None and r.ack_latency_s is not None and 0 <= r.ack_latency_s < 2
        assert r.size in {len(j) for j in pool}

    wanted = {(r.serial, r.event_id) for r in report.records}
    received: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 10
    while received != wanted and time.monotonic() < deadline:
        for message in gateway.drain():
            header, body = decode(message.payload)
            assert isinstance(header, AlertHeader) and len(body) == header.body_size
            received.add((message.topic.split("/")[1], header.event_id))
        await asyncio.sleep(0.05)
    assert received == wanted
