"""Who may connect to the project's broker, and what a reload changes, against a real Mosquitto."""

import paho.mqtt.client as mqtt
import pytest

from tests.support.mosquitto import MosquittoBroker

CAM_A, SECRET_A = "CGA1B2C3D4E5", "secret-a-5a1c7e0f9b2d4c6e"
CAM_B, SECRET_B = "CGB1B2C3D4E5", "secret-b-8d3f6a2c1e9b7d5a"
CAM_C, SECRET_C = "CGC1B2C3D4E5", "secret-c-2b4d6f8a0c1e3a5c"
NOT_AUTHORIZED = 0x87  # MQTT 5 reason code; paho maps the 3.1.1 return code 5 to it as well

PROTOCOLS = pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5"])


@pytest.fixture
def broker(mosquitto_broker: MosquittoBroker) -> MosquittoBroker:
    mosquitto_broker.add_devices({CAM_A: SECRET_A, CAM_B: SECRET_B})
    return mosquitto_broker


@PROTOCOLS
def test_a_camera_connects_with_its_serial_and_secret(
    broker: MosquittoBroker, protocol: mqtt.MQTTProtocolVersion
) -> None:
    assert broker.client(CAM_A, SECRET_A, protocol=protocol).connect().value == 0


@PROTOCOLS
def test_a_wrong_secret_is_refused(broker: MosquittoBroker, protocol: mqtt.MQTTProtocolVersion) -> None:
    assert broker.client(CAM_A, SECRET_B, protocol=protocol).connect().value == NOT_AUTHORIZED


@PROTOCOLS
def test_anonymous_clients_are_refused(broker: MosquittoBroker, protocol: mqtt.MQTTProtocolVersion) -> None:
    assert broker.client(None, None, protocol=protocol).connect().value == NOT_AUTHORIZED


def test_another_cameras_client_id_does_not_kick_it_off(broker: MosquittoBroker) -> None:
    gateway = broker.gateway_client()
    assert gateway.connect().value == 0
    gateway.subscribe("cam/+/status")
    victim = broker.client(CAM_B, SECRET_B, client_id=CAM_B)
    assert victim.connect().value == 0

    intruder = broker.client(CAM_A, SECRET_A, client_id=CAM_B)
    assert intruder.connect().value == 0

    assert not victim.disconnected.wait(0.5), "B was kicked off by a client presenting B's client id"
    # The intruder's session is A's: it still cannot speak for B.
    intruder.publish(f"cam/{CAM_B}/status", b"forged")
    victim.publish(f"cam/{CAM_B}/status", b"genuine")
    message = gateway.next_message()
    assert (message.topic, message.payload) == (f"cam/{CAM_B}/status", b"genuine")


def test_a_new_device_connects_after_a_reload_without_a_restart(broker: MosquittoBroker) -> None:
    pid = broker.pid
    assert broker.client(CAM_C, SECRET_C).connect().value == NOT_AUTHORIZED

    broker.add_device(CAM_C, SECRET_C)

    assert broker.client(CAM_C, SECRET_C).connect().value == 0
    assert broker.pid == pid


def test_a_removed_device_is_cut_off_and_refused_while_others_stay(broker: MosquittoBroker) -> None:
    gateway = broker.gateway_client()
    assert gateway.connect().value == 0
    gateway.subscribe("cam/+/alert")
    removed = broker.client(CAM_A, SECRET_A)
    kept = broker.client(CAM_B, SECRET_B)
    assert removed.connect().value == 0
    assert kept.connect().value == 0

    broker.remove_device(CAM_A)

    # Mosquitto 2.0.11 re-checks connected clients on reload (its man page still says it does not).
    assert removed.disconnected.wait(5), "a removed device kept its connection after the reload"
    assert broker.client(CAM_A, SECRET_A).connect().value == NOT_AUTHORIZED
    assert not kept.disconnected.is_set()
    assert not gateway.disconnected.is_set()
    kept.publish(f"cam/{CAM_B}/alert", b"still here")
    assert gateway.next_message().payload == b"still here"


def test_a_rotated_secret_replaces_the_old_one(broker: MosquittoBroker) -> None:
    connected = broker.client(CAM_A, SECRET_A)
    assert connected.connect().value == 0

    broker.add_device(CAM_A, SECRET_C)

    assert connected.disconnected.wait(5), "a client on the old secret kept its connection"
    assert broker.client(CAM_A, SECRET_A).connect().value == NOT_AUTHORIZED
    assert broker.client(CAM_A, SECRET_C).connect().value == 0
