"""One simulated camera on the broker, speaking docs/protocol.md.

It logs in as its serial with its broker secret, registers an ``online: false`` status as its last will,
announces itself ``online: true`` with its firmware on every connection, subscribes to its retained config
topic and obeys it, publishes alerts at QoS 1 and keeps each one in its outbox until the PUBACK, so a
connection lost in between re-publishes it with the same event id. After an alert it sends the event's
clip, a burst of JPEG frames, one part per message on ``cam/<serial>/clip/<event id>``, kept in a clip
outbox and re-published the same way.

Stopping is graceful: an explicit ``online: false`` status, then a clean DISCONNECT. A clean DISCONNECT
does not fire the will, so without that status the gateway would believe a stopped camera online.
``crash()`` instead drops the socket with no DISCONNECT, and the broker publishes the will.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from device_sim.aio_paho import ConnectRefused, LinkError, MqttLink, MqttVersion, PahoHub, Will
from device_sim.alerts import EventIds, Outbox, SentAlert, config_allows
from device_sim.registry import SimDevice
from device_sim.watcher import Watcher
from gateway.wire import (
    AlertHeader,
    Channel,
    ClipFormat,
    ClipHeader,
    ConfigHeader,
    StatusHeader,
    WireError,
    clip_topic,
    decode,
    encode,
    topic,
)

log = logging.getLogger(__name__)


class CameraState(StrEnum):
    """Where a camera is in its life."""

    IDLE = "idle"  # not connected; waiting for its turn or for a retry
    CONNECTING = "connecting"
    ONLINE = "online"
    CRASHED = "crashed"  # dropped by crash(); stays down until restart()
    STOPPING = "stopping"  # offline status sent, waiting for its PUBACK before DISCONNECT
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class CameraOptions:
    """How every camera of a fleet behaves on the wire."""

    mqtt: MqttVersion = "3.1.1"
    keepalive_s: int = 60
    firmware: str = "sim-1.0.0"
    max_inflight: int = 20  # unacknowledged QoS 1 publishes per connection
    outbox_limit: int = 64  # alerts kept until acknowledged; beyond it new alerts are dropped
    cooldown_s: float = 10.0  # minimum gap between two motion alerts of one camera
    connect_timeout_s: float = 10.0
    clip_frames: int = 15  # JPEG frames in the clip sent after each alert; 0: no clips
    clip_fps: float = 5.0
    clip_size: tuple[int, int] = (640, 360)
    clip_outbox_limit: int = 256  # clip parts kept until acknowledged; a clip that does not fit is dropped


@dataclass(slots=True)
class Tally:
    """Fleet-wide counters, incremented by the cameras (one object: summing 1,000 cameras is slow)."""

    connects: int = 0
    connect_failures: int = 0
    refused: int = 0  # CONNACK failures: wrong secret, unknown serial
    connection_losses: int = 0
    motion_events: int = 0
    alerts_sent: int = 0
    alerts_acked: int = 0
    alerts_refused: int = 0  # MQTT 5 PUBACK with a failure code (e.g. the ACL)
    alerts_republished: int = 0
    suppressed_by_config: int = 0
    suppressed_by_cooldown: int = 0
    dropped_outbox_full: int = 0
    dropped_busy: int = 0  # snapshot renderer saturated
    configs_received: int = 0
    bad_configs: int = 0
    clips_sent: int = 0
    clip_parts_acked: int = 0
    clips_dropped: int = 0  # clip outbox full, or the frames could not be drawn


class CameraHost(Protocol):
    """What a camera needs from its fleet."""

    tally: Tally

    def camera_down(self, camera: "Camera") -> None:
        """The camera is not connected and wants to be (again)."""

    def alert_sent(self, alert: SentAlert) -> None:
        """An alert was published for the first time."""

    def alert_acked(self, serial: str, event_id: str, at: float) -> None:
        """The broker acknowledged an alert."""


class Camera:
    """A camera: one MQTT link at a time, an outbox, its config, and optionally a watched scene."""

    def __init__(
        self,
        device: SimDevice,
        hub: PahoHub,
        host: CameraHost,
        options: CameraOptions,
        watcher: Watcher | None = None,
    ) -> None:
        self.device = device
        self.serial = device.serial
        self.options = options
        self.watcher = watcher
        self.state = CameraState.IDLE
        self.config: ConfigHeader | None = None
        self.outbox = Outbox(options.outbox_limit)
        self.clip_outbox = Outbox(options.clip_outbox_limit)  # keys: "<clip id>/<part>"
        self.alerts_sent = 0
        self.alerts_acked = 0
        self.failures = 0  # consecutive failed connects, for the back-off
        self._hub = hub
        self._host = host
        self._ids = EventIds()
        self._link: MqttLink | None = None
        self._mids: dict[int, tuple[Outbox, str]] = {}  # message id -> outbox and key, on this link
        self._offline_mid = -1
        self._last_alert = -float("inf")
        self._alert_topic = topic(self.serial, Channel.ALERT)
        self._status_topic = topic(self.serial, Channel.STATUS)
        self._config_topic = topic(self.serial, Channel.CONFIG)

    async def connect(self, host: str, port: int) -> None:
        """One connection attempt; raises LinkError when it fails (the fleet retries)."""
        offline = encode(StatusHeader(online=False, firmware=self.options.firmware))
        link = MqttLink(
            self._hub,
            self,
            client_id=self.serial,
            username=self.serial,
            password=self.device.broker_secret,
            version=self.options.mqtt,
            will=Will(self._status_topic, offline, qos=1),
            max_inflight=self.options.max_inflight,
        )
        self.attach(link)
        try:
            await link.connect(
                host, port, keepalive_s=self.options.keepalive_s, timeout_s=self.options.connect_timeout_s
            )
        except LinkError as exc:
            self.failures += 1
            if isinstance(exc, ConnectRefused):
                self._host.tally.refused += 1
            else:
                self._host.tally.connect_failures += 1
            if self.state is CameraState.CONNECTING:
                self.state = CameraState.IDLE
            raise

    def attach(self, link: MqttLink) -> None:
        """Uses ``link`` from now on (each connection attempt is a new link); its CONNACK makes the
        camera ONLINE."""
        self._link = link
        self.state = CameraState.CONNECTING

    def may_alert(self, kind: str, now: datetime, clock: float | None = None) -> bool:
        """Whether an alert of ``kind`` may go out at ``now`` (config), and at monotonic ``clock``
        (cooldown; None: no cooldown, for alerts on demand and load mode); counts refusals."""
        if not config_allows(self.config, kind, now):
            self._host.tally.suppressed_by_config += 1
            return False
        if clock is not None and clock - self._last_alert < self.options.cooldown_s:
            self._host.tally.suppressed_by_cooldown += 1
            return False
        return True

    def start_cooldown(self, clock: float) -> None:
        """An alert is on its way: the next motion alert waits ``cooldown_s``."""
        self._last_alert = clock

    def send_alert(self, kind: str, captured_at: datetime, jpeg: bytes) -> SentAlert | None:
        """Publishes an alert now (or at the next connection); None when the outbox is full."""
        if self.outbox.full:
            self._host.tally.dropped_outbox_full += 1
            return None
        event_id = self._ids.next(captured_at)
        header = AlertHeader(event_id=event_id, captured_at=captured_at, kind=kind, body_size=len(jpeg))
        payload = encode(header, jpeg)
        self.outbox.add(event_id, payload)
        self._publish(self.outbox, event_id, payload)
        alert = SentAlert(self.serial, event_id, kind, captured_at, len(jpeg), time.time())
        self.alerts_sent += 1
        self._host.tally.alerts_sent += 1
        self._host.alert_sent(alert)
        return alert

    def send_clip(self, clip_id: str, captured_at: datetime, frames: Sequence[bytes], fps: float) -> bool:
        """Publishes a clip of JPEG frames, one part each, now (or at the next connection); False when its
        parts do not all fit in the clip outbox (nothing is kept then: a partial clip is never stored)."""
        if not frames or self.clip_outbox.room < len(frames):
            self._host.tally.clips_dropped += 1
            return False
        for part, jpeg in enumerate(frames):
            header = ClipHeader(
                clip_id=clip_id,
                event_id=clip_id,
                captured_at=captured_at,
                format=ClipFormat.JPEG_FRAMES,
                part=part,
                parts=len(frames),
                fps=fps,
                body_size=len(jpeg),
            )
            key, payload = f"{clip_id}/{part}", encode(header, jpeg)
            self.clip_outbox.add(key, payload)
            self._publish(self.clip_outbox, key, payload)
        self._host.tally.clips_sent += 1
        return True

    def _publish(self, box: Outbox, key: str, payload: bytes) -> None:
        if self._link is not None and self.state is CameraState.ONLINE:
            self._mids[self._link.publish(self._topic_of(box, key), payload)] = (box, key)

    def _topic_of(self, box: Outbox, key: str) -> str:
        return (
            clip_topic(self.serial, key.rsplit("/", 1)[0]) if box is self.clip_outbox else self._alert_topic
        )

    def crash(self) -> None:
        """Drops the connection with no DISCONNECT (the broker publishes the will); stays down."""
        self.state = CameraState.CRASHED
        if self._link is not None:
            self._link.abort()

    def begin_stop(self) -> bool:
        """Starts a graceful stop; True when there is a connection to wind down."""
        if self.state is CameraState.ONLINE and self._link is not None:
            self.state = CameraState.STOPPING
            status = encode(StatusHeader(online=False, firmware=self.options.firmware, at=datetime.now(UTC)))
            self._offline_mid = self._link.publish(self._status_topic, status)
            return True
        if self._link is not None:
            self._link.abort()
        self.state = CameraState.STOPPED
        return False

    def disconnect_now(self) -> None:
        """Skips the wait for the offline status's PUBACK (stop timed out)."""
        if self._link is not None and self.state is CameraState.STOPPING:
            self._link.disconnect()

    # --- LinkListener ----------------------------------------------------------------------

    def link_up(self, link: MqttLink) -> None:
        """Announces itself, subscribes to its config, and re-publishes what was never acknowledged."""
        if link is not self._link:
            return
        if self.state is not CameraState.CONNECTING:  # stopped or crashed while connecting
            link.abort()
            return
        self.state = CameraState.ONLINE
        self.failures = 0
        self._host.tally.connects += 1
        self._mids.clear()
        status = StatusHeader(online=True, firmware=self.options.firmware, at=datetime.now(UTC))
        link.publish(self._status_topic, encode(status))
        link.subscribe(self._config_topic, qos=1)
        for event_id, payload in self.outbox.pending():
            self._mids[link.publish(self._alert_topic, payload)] = (self.outbox, event_id)
            self._host.tally.alerts_republished += 1
        for key, payload in self.clip_outbox.pending():
            self._mids[link.publish(self._topic_of(self.clip_outbox, key), payload)] = (self.clip_outbox, key)

    def link_down(self, link: MqttLink, reason: str) -> None:
        """Back to IDLE and asks the fleet for a reconnect, unless stopping or crashed."""
        if link is not self._link:
            return
        self._link = None
        self._mids.clear()
        if self.state is CameraState.STOPPING:
            self.state = CameraState.STOPPED
        elif self.state is CameraState.ONLINE:
            log.info("camera %s lost its connection: %s", self.serial, reason)
            self._host.tally.connection_losses += 1
            self.state = CameraState.IDLE
            self._host.camera_down(self)

    def message(self, link: MqttLink, topic: str, payload: bytes) -> None:
        """Applies a config envelope; an empty retained payload (config cleared) restores defaults."""
        if topic != self._config_topic:
            return
        if not payload:
            self.config = None
            return
        try:
            header, _ = decode(payload)
        except WireError as exc:
            self._host.tally.bad_configs += 1
            log.warning("camera %s ignored a bad config: %s", self.serial, exc)
            return
        if isinstance(header, ConfigHeader):
            self._host.tally.configs_received += 1
            self.config = header

    def acked(self, link: MqttLink, mid: int, accepted: bool) -> None:
        """Settles an alert (or the final status, which lets the camera disconnect)."""
        if link is not self._link:
            return
        if mid == self._offline_mid and self.state is CameraState.STOPPING:
            link.disconnect()
            return
        sent = self._mids.pop(mid, None)
        if sent is None:
            return  # a status publish
        box, event_id = sent
        if not box.ack(event_id):
            return
        if box is self.clip_outbox:
            self._host.tally.clip_parts_acked += int(accepted)
            return
        if not accepted:
            self._host.tally.alerts_refused += 1
            return
        self.alerts_acked += 1
        self._host.tally.alerts_acked += 1
        self._host.alert_acked(self.serial, event_id, time.time())
