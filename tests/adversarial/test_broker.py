"""Issue 8, findings 6 and 7: what a hostile camera can do to the broker, tried on the real Mosquitto with
the project's policy (deploy/mosquitto: conf.d, the rendered ACL and the policy plugin).

6. Retained uplink messages and deep clip topics: replayed to the gateway on every subscribe (even after
   the camera was revoked) and kept in the database the broker rewrites every second.
7. Shared-group hijack: a camera joining the gateway's $share/<group>/... filter was handed a share of
   every camera's messages, which the broker then dropped.

Mosquitto acknowledges publishes its ACL refused (PUBACK 0 for 3.1.1), so the tests look at what
subscribers receive, with an allowed "marker" sent afterwards; MQTT 5 PUBACK reason codes are used only
where nobody could receive the message.
"""

import asyncio
import queue
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import REGISTRY

from gateway.adapters.mqtt import Incoming, MqttClient
from gateway.bootstrap import INGEST_TOPICS
from gateway.config import MqttSettings
from tests.support.mosquitto import MosquittoBroker, MqttTestClient

CAM_A, SECRET_A = "CGA1B2C3D4E5", "secret-a-5a1c7e0f9b2d4c6e"
CAM_B, SECRET_B = "CGB1B2C3D4E5", "secret-b-8d3f6a2c1e9b7d5a"
UPLINK = ("cam/+/alert", "cam/+/status", "cam/+/clip/+")
NOT_AUTHORIZED = 0x87
PROBE = b"probe"
WAIT_S = 10.0


@pytest.fixture
def broker(mosquitto_broker: MosquittoBroker) -> MosquittoBroker:
    mosquitto_broker.add_devices({CAM_A: SECRET_A, CAM_B: SECRET_B})
    return mosquitto_broker


def connected(
    broker: MosquittoBroker, serial: str, secret: str, protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv311
) -> MqttTestClient:
    client = broker.client(serial, secret, protocol=protocol)
    assert client.connect().value == 0
    return client


def fresh_gateway(broker: MosquittoBroker) -> MqttTestClient:
    """A new gateway session subscribed to the uplink: whatever the broker retained comes first."""
    client = broker.gateway_client()
    assert client.connect().value == 0
    client.subscribe(*UPLINK)
    return client


def assert_nothing_retained(broker: MosquittoBroker, marker_from: MqttTestClient, serial: str) -> None:
    gateway = fresh_gateway(broker)
    marker_from.publish(f"cam/{serial}/alert", b"marker")
    first = gateway.next_message()
    assert (first.topic, first.payload, first.retain) == (f"cam/{serial}/alert", b"marker", False)
    gateway.close()


def publish_codes(client: MqttTestClient) -> "queue.Queue[ReasonCode]":
    """The PUBACK reason codes an MQTT 5 client gets, in order."""
    codes: queue.Queue[ReasonCode] = queue.Queue()
    client.client.on_publish = lambda _c, _u, _mid, code, _p: codes.put(code)
    return codes


def connect_with_retained_will(
    broker: MosquittoBroker, serial: str, secret: str, topic: str
) -> socket.socket:
    """A raw MQTT 3.1.1 CONNECT with a retained QoS 1 last will; the broker publishes the will when the
    socket closes without a DISCONNECT."""

    def field(data: bytes) -> bytes:
        return struct.pack("!H", len(data)) + data

    flags = (
        0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02
    )  # username, password, will retain, will QoS 1, will, clean
    body = field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
    body += field(b"") + field(topic.encode()) + field(b"offline (retained)")
    body += field(serial.encode()) + field(secret.encode())
    assert len(body) < 128  # one-byte remaining length
    sock = socket.create_connection((broker.host, broker.port), timeout=WAIT_S)
    sock.sendall(bytes([0x10, len(body)]) + body)
    assert sock.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    return sock


# --- finding 6: retained uplink and deep clip topics ---------------------------------------------------


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5"])
def test_a_cameras_retained_uplink_publish_is_neither_delivered_nor_kept_even_after_revocation(
    broker: MosquittoBroker, protocol: mqtt.MQTTProtocolVersion
) -> None:
    live = fresh_gateway(broker)
    camera = connected(broker, CAM_A, SECRET_A, protocol)
    for topic in (f"cam/{CAM_A}/alert", f"cam/{CAM_A}/status", f"cam/{CAM_A}/clip/c1"):
        camera.publish(topic, b"retained by the camera", retain=True)
    camera.publish(f"cam/{CAM_A}/alert", b"marker")

    assert live.next_message().payload == b"marker"  # the retained publishes were not delivered live
    assert_nothing_retained(broker, camera, CAM_A)  # nor kept for the next subscriber

    camera.close()
    broker.remove_device(CAM_A)
    assert_nothing_retained(broker, connected(broker, CAM_B, SECRET_B), CAM_B)


def test_a_cameras_retained_last_will_is_not_kept(broker: MosquittoBroker) -> None:
    live = fresh_gateway(broker)
    sock = connect_with_retained_will(broker, CAM_A, SECRET_A, f"cam/{CAM_A}/status")
    sock.close()  # no DISCONNECT: the broker publishes the will now
    other = connected(broker, CAM_B, SECRET_B)
    # The will goes out when the broker notices the closed socket; it would be retained by then.
    for _ in range(20):
        other.publish(f"cam/{CAM_B}/alert", b"tick")
    assert {live.next_message().payload for _ in range(20)} == {b"tick"}

    assert_nothing_retained(broker, other, CAM_B)


def test_a_camera_cannot_publish_below_one_level_of_clip(broker: MosquittoBroker) -> None:
    camera = connected(broker, CAM_A, SECRET_A, mqtt.MQTTv5)
    codes = publish_codes(camera)

    camera.publish(f"cam/{CAM_A}/clip/c1", b"a clip part")
    camera.publish(f"cam/{CAM_A}/clip/a/b/c", b"deep")
    camera.publish(f"cam/{CAM_A}/clip/c1/0", b"two levels")

    got = [codes.get(timeout=WAIT_S).value for _ in range(3)]
    assert got[0] < 0x80  # accepted (0x10: nobody subscribed)
    assert got[1:] == [NOT_AUTHORIZED, NOT_AUTHORIZED]


# --- the gateway's own defence: a broker that kept retained uplink messages -------------------------------


@asynccontextmanager
async def gateway_client(broker: MosquittoBroker, **overrides: object) -> AsyncIterator[MqttClient]:
    """The gateway's real MQTT client, connected and subscribed."""
    settings = MqttSettings.model_validate(
        {
            "host": broker.host,
            "port": broker.port,
            "username": broker.gateway_username,
            "password": broker.gateway_password,
            **overrides,
        }
    )
    client = MqttClient(settings, INGEST_TOPICS)
    await client.start()
    try:
        await asyncio.wait_for(client.connected.wait(), WAIT_S)
        yield client
    finally:
        await client.stop()


async def next_message(client: MqttClient, wait_s: float = WAIT_S) -> Incoming:
    """The next message the gateway would ingest, past (and settling) the subscription probes."""

    async def first() -> Incoming:
        async for message in client.messages():
            if message.payload != PROBE:
                return message
            message.settle()
        raise AssertionError("the message stream ended")

    return await asyncio.wait_for(first(), wait_s)


async def until_subscribed(client: MqttClient, camera: MqttTestClient, serial: str) -> None:
    """Probes until the gateway receives one: its SUBACK comes after the CONNACK we waited for."""
    for _ in range(50):
        camera.publish(f"cam/{serial}/status", PROBE)
        try:
            message = await asyncio.wait_for(anext(client.messages()), 0.2)
        except TimeoutError:
            continue
        message.settle()
        return
    raise AssertionError("the gateway never received a probe")


async def broker_read_disconnect(broker: MosquittoBroker) -> None:
    """Waits until the broker has read the gateway's connection to its end (acknowledgements included)."""
    ends = (f"Client {broker.gateway_username} disconnected", f"Client {broker.gateway_username} closed")
    for _ in range(500):
        if any(end in broker.log_text() for end in ends):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the broker never saw the gateway leave:\n{broker.log_tail()}")


def retained_ignored() -> float:
    return REGISTRY.get_sample_value("camgate_retained_uplink_total") or 0.0


async def test_the_gateway_ignores_acknowledges_and_deletes_retained_uplink_messages(
    broker: MosquittoBroker,
) -> None:
    plugin = broker.plugin
    broker.stop()
    broker.set_plugin(None)  # a broker deployed before the policy plugin accepts retained uplink
    broker.start()
    camera = connected(broker, CAM_A, SECRET_A)
    camera.publish(f"cam/{CAM_A}/alert", b"planted before the policy plugin", retain=True)
    before = retained_ignored()

    async with gateway_client(broker) as gateway:
        await until_subscribed(gateway, camera, CAM_A)
        camera.publish(f"cam/{CAM_A}/status", b"retained while we listen", retain=True)
        camera.publish(f"cam/{CAM_A}/alert", b"live alert")

        message = await next_message(gateway)
        assert message.payload == b"live alert"  # neither retained message reached ingest
        message.settle()
        assert gateway.unacknowledged == 0  # the ignored ones were acknowledged in their turn
    assert retained_ignored() - before >= 2

    await broker_read_disconnect(broker)  # and with it our acknowledgements, before the stop saves
    broker.stop()  # a clean stop saves what it retained
    broker.set_plugin(plugin)
    broker.start()
    camera = connected(broker, CAM_A, SECRET_A)
    before = retained_ignored()
    async with gateway_client(broker) as gateway:
        # Two replays, deleted by the gateway (the plugin lets it publish an empty retained message),
        # and the two empty echoes of that deletion: ignored too, and not deleted again.
        for _ in range(100):
            if retained_ignored() - before >= 4:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await next_message(gateway, wait_s=0.2)
    camera.close()
    broker.remove_device(CAM_A)
    assert_nothing_retained(broker, connected(broker, CAM_B, SECRET_B), CAM_B)


# --- finding 7: no subscription of a camera loses or reads another camera's messages ----------------------


async def test_no_camera_subscription_loses_or_reads_another_cameras_messages(
    broker: MosquittoBroker,
) -> None:
    sender = connected(broker, CAM_A, SECRET_A)
    async with gateway_client(broker, shared_group="ingest") as gateway:
        await until_subscribed(gateway, sender, CAM_A)
        hijackers = [connected(broker, CAM_B, SECRET_B, mqtt.MQTTv5)]
        broker.add_device("CGC1B2C3D4E5", "secret-c-3e5a7c9e1b3d5f7a")
        hijackers.append(connected(broker, "CGC1B2C3D4E5", "secret-c-3e5a7c9e1b3d5f7a"))
        for hijacker in hijackers:
            hijacker.subscribe(
                *(f"$share/ingest/{topic}" for topic in INGEST_TOPICS),
                "$share/anything/#",
                "#",
                "cam/+/alert",
                f"cam/{CAM_A}/#",
                "$SYS/#",
            )

        sent = [f"alert {n}".encode() for n in range(20)]
        for payload in sent:
            sender.publish(f"cam/{CAM_A}/alert", payload)
        received = []
        for _ in sent:
            message = await next_message(gateway)
            received.append(message.payload)
            message.settle()
        assert sorted(received) == sorted(sent)

    # What a hijacker may read comes after anything it could have been handed.
    gateway_test = broker.gateway_client()
    assert gateway_test.connect().value == 0
    for serial, hijacker in zip((CAM_B, "CGC1B2C3D4E5"), hijackers, strict=True):
        gateway_test.publish(f"cam/{serial}/cmd/marker", b"marker")
        assert hijacker.next_message().payload == b"marker"
        assert {m.payload for m in hijacker.drain()} <= {b"marker"}  # overlapping filters may repeat it
