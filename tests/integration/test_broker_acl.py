"""Topic isolation on the project's broker: every camera inside cam/<serial>/, the gateway across them.

Mosquitto acknowledges a publish its ACL refused and grants any subscription (the read check comes at
delivery), so these tests look at what subscribers receive. A refused message would have been queued
before a later "marker" that is allowed, so "the first message is the marker" proves nothing leaked,
without sleeping.
"""

import time

import pytest

from tests.support.mosquitto import MosquittoBroker, MqttTestClient

CAM_A, SECRET_A = "CGA1B2C3D4E5", "secret-a-5a1c7e0f9b2d4c6e"
CAM_B, SECRET_B = "CGB1B2C3D4E5", "secret-b-8d3f6a2c1e9b7d5a"
UPLINK = ("cam/+/alert", "cam/+/status", "cam/+/clip/+")


@pytest.fixture
def broker(mosquitto_broker: MosquittoBroker) -> MosquittoBroker:
    mosquitto_broker.add_devices({CAM_A: SECRET_A, CAM_B: SECRET_B})
    return mosquitto_broker


@pytest.fixture
def gateway(broker: MosquittoBroker) -> MqttTestClient:
    client = broker.gateway_client()
    assert client.connect().value == 0
    client.subscribe(*UPLINK)
    return client


def connected(broker: MosquittoBroker, serial: str, secret: str) -> MqttTestClient:
    client = broker.client(serial, secret)
    assert client.connect().value == 0
    return client


def test_a_camera_publishes_alerts_status_and_clips_under_its_serial(
    broker: MosquittoBroker, gateway: MqttTestClient
) -> None:
    camera = connected(broker, CAM_A, SECRET_A)
    sent = [f"cam/{CAM_A}/alert", f"cam/{CAM_A}/status", f"cam/{CAM_A}/clip/ev1"]
    for topic in sent:
        camera.publish(topic, b"x")
    assert [gateway.next_message().topic for _ in sent] == sent


def test_a_camera_cannot_publish_under_another_serial(
    broker: MosquittoBroker, gateway: MqttTestClient
) -> None:
    camera = connected(broker, CAM_A, SECRET_A)
    for topic in (f"cam/{CAM_B}/alert", f"cam/{CAM_B}/status", f"cam/{CAM_B}/clip/ev1"):
        camera.publish(topic, b"forged")
    camera.publish(f"cam/{CAM_A}/alert/extra", b"off the tree")
    camera.publish(f"cam/{CAM_A}/alert", b"marker")

    assert gateway.next_message().payload == b"marker"
    assert gateway.drain() == []


def test_a_camera_cannot_read_another_cameras_downlink_or_uplink(
    broker: MosquittoBroker, gateway: MqttTestClient
) -> None:
    gateway.publish(f"cam/{CAM_B}/config", b"retained for B", retain=True)
    owner = connected(broker, CAM_B, SECRET_B)
    owner.subscribe(f"cam/{CAM_B}/config")
    assert owner.next_message().payload == b"retained for B"  # the retained path works for its owner

    snoop = connected(broker, CAM_A, SECRET_A)
    snoop.subscribe(f"cam/{CAM_B}/config", f"cam/{CAM_B}/cmd/#", "cam/+/alert", "cam/#", "#")
    gateway.publish(f"cam/{CAM_B}/config", b"live for B")
    gateway.publish(f"cam/{CAM_B}/cmd/reboot", b"command for B")
    owner.publish(f"cam/{CAM_B}/alert", b"B's alert")
    gateway.publish(f"cam/{CAM_A}/cmd/marker", b"marker")

    assert snoop.next_message().payload == b"marker"
    assert snoop.drain() == []


def test_a_camera_cannot_publish_on_its_own_downlink(
    broker: MosquittoBroker, gateway: MqttTestClient
) -> None:
    camera = connected(broker, CAM_A, SECRET_A)
    camera.subscribe(f"cam/{CAM_A}/config", f"cam/{CAM_A}/cmd/#")
    camera.publish(f"cam/{CAM_A}/config", b"self-issued config", retain=True)
    camera.publish(f"cam/{CAM_A}/cmd/unlock", b"self-issued command")
    gateway.publish(f"cam/{CAM_A}/cmd/marker", b"marker")

    assert camera.next_message().payload == b"marker"
    assert camera.drain() == []


def test_gateway_instances_share_the_uplink_without_duplicates(broker: MosquittoBroker) -> None:
    broker.add_gateway("camgate-gateway-2", "gw2-secret-7c1d9e3a")
    members = [broker.gateway_client(), broker.client("camgate-gateway-2", "gw2-secret-7c1d9e3a")]
    for member in members:
        assert member.connect().value == 0
        member.subscribe("$share/ingest/cam/+/alert")
    camera = connected(broker, CAM_A, SECRET_A)
    sent = {str(n).encode() for n in range(20)}
    for payload in sorted(sent):
        camera.publish(f"cam/{CAM_A}/alert", payload)

    received: list[list[bytes]] = [[], []]
    deadline = time.monotonic() + 5
    while sum(map(len, received)) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.01)
        for bucket, member in zip(received, members, strict=True):
            bucket.extend(message.payload for message in member.drain())

    assert sorted(received[0] + received[1]) == sorted(sent)  # each message once, to one member
    assert received[0] and received[1]


def test_a_retired_gateway_accounts_retained_config_is_still_delivered(broker: MosquittoBroker) -> None:
    broker.add_gateway("camgate-gateway-2", "gw2-secret-7c1d9e3a")
    retiring = broker.client("camgate-gateway-2", "gw2-secret-7c1d9e3a")
    assert retiring.connect().value == 0
    retiring.publish(f"cam/{CAM_A}/config", b"config from instance 2", retain=True)
    retiring.close()
    broker.remove_gateway("camgate-gateway-2")

    camera = connected(broker, CAM_A, SECRET_A)
    camera.subscribe(f"cam/{CAM_A}/config")

    assert camera.next_message().payload == b"config from instance 2"
