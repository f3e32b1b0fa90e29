"""Payload and packet size limits of the project's broker (deploy/mosquitto/conf.d/camgate.conf)."""

import pytest

from tests.support.mosquitto import MosquittoBroker, MqttTestClient

CAM_A, SECRET_A = "CGA1B2C3D4E5", "secret-a-5a1c7e0f9b2d4c6e"
MESSAGE_SIZE_LIMIT = 1024 * 1024
MAX_PACKET_SIZE = 2 * 1024 * 1024
ALERT = f"cam/{CAM_A}/alert"


@pytest.fixture
def camera(mosquitto_broker: MosquittoBroker) -> MqttTestClient:
    mosquitto_broker.add_device(CAM_A, SECRET_A)
    client = mosquitto_broker.client(CAM_A, SECRET_A)
    assert client.connect().value == 0
    return client


@pytest.fixture
def gateway(mosquitto_broker: MosquittoBroker) -> MqttTestClient:
    client = mosquitto_broker.gateway_client()
    assert client.connect().value == 0
    client.subscribe(ALERT)
    return client


def test_a_payload_up_to_one_mib_reaches_the_gateway(camera: MqttTestClient, gateway: MqttTestClient) -> None:
    payload = bytes(MESSAGE_SIZE_LIMIT)
    camera.publish(ALERT, payload)
    assert gateway.next_message().payload == payload


def test_a_larger_payload_is_acknowledged_and_dropped(
    camera: MqttTestClient, gateway: MqttTestClient
) -> None:
    camera.publish(ALERT, bytes(MESSAGE_SIZE_LIMIT + 1))
    camera.publish(ALERT, b"marker")

    assert gateway.next_message().payload == b"marker"
    assert not camera.disconnected.is_set()  # a camera that overshoots moves on instead of retrying


def test_a_packet_past_two_mib_disconnects_the_sender(camera: MqttTestClient) -> None:
    camera.client.publish(ALERT, bytes(MAX_PACKET_SIZE), qos=1)
    assert camera.disconnected.wait(5)
