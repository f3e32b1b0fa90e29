"""The gateway's queued alerts survive a broker crash (SIGKILL) with the project's persistence settings."""

import time

import pytest

from tests.support.mosquitto import MosquittoBroker, MqttTestClient

CAMERAS = {f"CGP{n:09d}": f"secret-{n}-persistence-test" for n in range(10)}
PER_CAMERA = 150  # 1,500 in all: more than Mosquitto's default queue of 1,000 per client
SESSION_EXPIRY_S = 3600


def gateway_session(broker: MosquittoBroker) -> MqttTestClient:
    """The gateway as it runs in production: MQTT 5, a session that outlives the connection."""
    return broker.gateway_client(clean=False, session_expiry_s=SESSION_EXPIRY_S)


def collect(client: MqttTestClient, count: int, timeout: float) -> list[bytes]:
    received: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        received.extend(message.payload for message in client.drain())
        time.sleep(0.01)
    return received


@pytest.mark.parametrize("uplink", ["cam/+/alert", "$share/ingest/cam/+/alert"], ids=["plain", "shared"])
def test_queued_alerts_survive_a_broker_sigkill(mosquitto_broker: MosquittoBroker, uplink: str) -> None:
    broker = mosquitto_broker
    broker.add_devices(CAMERAS)
    gateway = gateway_session(broker)
    assert gateway.connect().value == 0
    gateway.subscribe(uplink)
    gateway.close()  # the gateway goes away; its session and subscription stay

    sent: set[bytes] = set()
    cameras = []
    for serial, secret in CAMERAS.items():
        camera = broker.client(serial, secret)
        assert camera.connect().value == 0
        cameras.append((serial, camera))
    infos = []
    for n in range(PER_CAMERA):
        for serial, camera in cameras:
            payload = f"{serial}:{n}".encode()
            sent.add(payload)
            infos.append(camera.client.publish(f"cam/{serial}/alert", payload, qos=1))
    for info in infos:
        info.wait_for_publish(timeout=30)
    assert all(info.is_published() for info in infos)  # the broker acknowledged every one of them

    # Mosquitto saves once a second: a crash loses what arrived since the last save. Wait for that save.
    broker.sync()
    broker.kill()
    broker.start()

    gateway = gateway_session(broker)
    assert gateway.connect().value == 0
    received = collect(gateway, len(sent), timeout=10)
    missing = sorted(sent - set(received))
    assert not missing, f"{len(missing)} of {len(sent)} queued alerts lost: {missing[:10]}"
    assert len(received) == len(sent)
    assert set(received) == sent
