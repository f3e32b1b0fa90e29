"""The parts' own ceilings, measured on the same machine in the same run as the gateway.

- ``put_ceiling``: plain boto3 PutObject of the load's JPEGs against the same S3 server, from as many
  threads as the gateway's S3 pool, with the client the gateway builds (``storage.s3.build_client``);
  with the server's and the client's CPU per PUT.
- ``mqtt_ceiling``: the broker with the project's policy passing the load's alert envelopes from paho
  publishers (camera accounts, MQTT 3.1.1, 20 in flight each, like the simulator's cameras) to one paho
  subscriber in a process of its own (``bench._passthrough``: a gateway account subscribed as the gateway
  is), QoS 1 both ways.
- ``opencv_ceiling``: the gateway's own ``make_snapshot`` (reduced-scale decode, thumbnail, encode) on
  one core, and a plain full ``imdecode`` for reference.
"""

import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench._rig import cpu_s
from gateway.adapters.imaging import make_snapshot
from gateway.adapters.opencv import cv2  # with the gateway's decoding ceilings, as the gateway has them
from gateway.config import IngestSettings
from gateway.wire import AlertHeader, encode
from storage.s3 import build_client
from storage.settings import S3StoreSettings


@dataclass(frozen=True)
class OpenCvCeiling:
    snapshot_ms: float  # CPU per make_snapshot, one thread
    full_decode_ms: float  # CPU per plain full imdecode, one thread

    @property
    def per_core(self) -> float:
        """make_snapshot calls a second on one core."""
        return 1000 / self.snapshot_ms


def opencv_ceiling(pool: Sequence[bytes], seconds: float) -> OpenCvCeiling:
    """CPU time per image (thread time, so other processes on the machine do not count)."""
    limits = IngestSettings()
    jpegs = itertools.cycle(pool)

    def snapshot() -> None:
        make_snapshot(
            next(jpegs),
            min_dim=limits.min_dimension,
            max_dim=limits.max_dimension,
            thumb_width=limits.thumbnail_width,
        )

    def full() -> None:
        cv2.imdecode(np.frombuffer(next(jpegs), dtype=np.uint8), cv2.IMREAD_COLOR)

    return OpenCvCeiling(_cpu_ms(snapshot, seconds), _cpu_ms(full, seconds / 2))


def _cpu_ms(work: Callable[[], None], seconds: float) -> float:
    for _ in range(5):  # warm-up: first calls allocate
        work()
    count = 0
    started = time.thread_time()
    while (spent := time.thread_time() - started) < seconds:
        work()
        count += 1
    return 1000 * spent / count


@dataclass(frozen=True)
class PutCeiling:
    rate: float  # PutObject/s
    threads: int
    server_cpu_ms: float  # the S3 server's CPU per PUT
    client_cpu_ms: float  # boto3's CPU per PUT (this process)


def put_ceiling(
    store: S3StoreSettings,
    pool: Sequence[bytes],
    seconds: float,
    server_pid: int,
    *,
    threads: int | None = None,
) -> PutCeiling:
    """PutObject/s of the pool's JPEGs (fresh keys) from ``threads`` threads (default: the gateway's
    S3 pool size) with the client the gateway builds, after a warm-up that opens the connections."""
    threads = threads or store.pool_size
    client = build_client(store)
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [time.monotonic() + 3600]  # set once every thread is warm

    def worker(index: int) -> None:
        bodies = itertools.cycle(pool[index::threads] or pool)
        for _ in range(3):
            client.put_object(
                Bucket=store.bucket, Key=f"bench/raw/warm/{uuid.uuid4().hex}", Body=next(bodies)
            )
        start.wait()
        while time.monotonic() < stop_at[0]:
            client.put_object(Bucket=store.bucket, Key=f"bench/raw/{uuid.uuid4().hex}", Body=next(bodies))
            counts[index] += 1

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    start.wait()
    began, server_before, client_before = time.monotonic(), cpu_s(server_pid), time.process_time()
    stop_at[0] = began + seconds
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - began
    server, own = cpu_s(server_pid) - server_before, time.process_time() - client_before
    client.close()
    puts = sum(counts)
    return PutCeiling(puts / elapsed, threads, 1000 * server / puts, 1000 * own / puts)


@dataclass(frozen=True)
class MqttAccount:
    username: str
    password: str


@dataclass(frozen=True)
class MqttCeiling:
    rate: float  # messages/s arriving at the subscriber
    broker_cpu: float  # the broker's CPU meanwhile, 1.0 = one core


def alert_envelopes(pool: Sequence[bytes]) -> list[bytes]:
    """The pool's JPEGs in alert envelopes, as cameras publish them."""
    at = datetime.now(UTC)
    return [
        encode(AlertHeader(event_id=f"bench-{i}", captured_at=at, kind="motion", body_size=len(j)), j)
        for i, j in enumerate(pool)
    ]


def mqtt_ceiling(
    host: str,
    port: int,
    cameras: Sequence[MqttAccount],
    subscriber: MqttAccount,
    payloads: Sequence[bytes],
    seconds: float,
    broker_pid: int,
) -> MqttCeiling:
    """Messages/s arriving at a subscriber process (``bench._passthrough``) while every camera publishes
    from a thread of this process as fast as its window allows."""
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench._passthrough", host, str(port), subscriber.username],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(subscriber.password + "\n")
        child.stdin.close()
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the pass-through subscriber did not start")
        stop_at = [time.monotonic() + seconds]
        publishers = [
            threading.Thread(target=_publish, args=(host, port, cam, payloads, stop_at), daemon=True)
            for cam in cameras
        ]
        broker_before, began = cpu_s(broker_pid), time.monotonic()
        for thread in publishers:
            thread.start()
        for thread in publishers:
            thread.join()
        broker_cpu = (cpu_s(broker_pid) - broker_before) / (time.monotonic() - began)
        report = json.loads(child.stdout.readline())
    finally:
        if child.poll() is None:
            child.wait(30)
    if report["count"] < 2:
        raise RuntimeError("the pass-through subscriber received nothing")
    return MqttCeiling((report["count"] - 1) / (report["last"] - report["first"]), broker_cpu)


def _publish(
    host: str, port: int, camera: MqttAccount, payloads: Sequence[bytes], stop_at: list[float]
) -> None:
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=camera.username, protocol=MQTTProtocolVersion.MQTTv311
    )
    client.username_pw_set(camera.username, camera.password)
    client.max_inflight_messages_set(20)
    client.connect(host, port)
    client.loop_start()
    pending: deque[paho.MQTTMessageInfo] = deque()
    topic = f"cam/{camera.username}/alert"
    try:
        for payload in itertools.cycle(payloads):
            if time.monotonic() >= stop_at[0]:
                break
            pending.append(client.publish(topic, payload, qos=1))
            while len(pending) > 40:  # bounded: paho queues unsent messages in memory
                pending.popleft().wait_for_publish(5)
        while pending:
            pending.popleft().wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def end_session(host: str, port: int, account: MqttAccount) -> None:
    """Ends a stopped gateway's persistent session, so the broker stops queueing alerts for it."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=account.username, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set(account.username, account.password)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
    properties.SessionExpiryInterval = 0
    client.connect(host, port, clean_start=True, properties=properties)
    client.loop_start()
    connected.wait(5)
    client.disconnect()
    client.loop_stop()
