"""The MQTT pass-through ceiling's subscriber, run as a process of its own (as the gateway is), so its paho
thread shares no GIL with the publishers.

    python -m bench._passthrough HOST PORT USERNAME   (the password comes on standard input)

It subscribes like the gateway (MQTT 5, a session that outlives the connection, receive maximum 64,
QoS 1 on ``cam/+/alert``), prints ``ready``, counts what arrives, and once nothing has arrived for a
second after the first message, ends its session and prints ``{"count", "first", "last"}`` (monotonic
seconds) as JSON.
"""

import json
import queue
import sys
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

QUIET_S = 1.0
GIVE_UP_S = 120.0


def main() -> None:
    """Subscribes, counts, reports."""
    host, port, username = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    password = sys.stdin.readline().rstrip("\n")
    arrivals: queue.Queue[float] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(username, password)
    client.on_message = lambda _c, _u, _m: arrivals.put(time.monotonic())
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
    connect.SessionExpiryInterval = 300
    connect.ReceiveMaximum = 64
    client.connect(host, port, clean_start=True, properties=connect)
    client.loop_start()
    client.subscribe("cam/+/alert", qos=1)
    if not subscribed.wait(10):
        raise SystemExit("no SUBACK")
    print("ready", flush=True)
    count, first, last = 0, 0.0, 0.0
    try:
        first = arrivals.get(timeout=GIVE_UP_S)
        count, last = 1, first
        while True:
            last = arrivals.get(timeout=QUIET_S)
            count += 1
    except queue.Empty:
        pass
    # End the session rather than leave the broker queueing for it.
    disconnect = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
    disconnect.SessionExpiryInterval = 0
    client.disconnect(properties=disconnect)
    client.loop_stop()
    print(json.dumps({"count": count, "first": first, "last": last}), flush=True)


if __name__ == "__main__":
    main()
