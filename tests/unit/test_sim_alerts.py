"""A camera's alert bookkeeping without a broker: event ids, config obedience, and re-publishing what
was never acknowledged with the same event id (links faked on the adapter's own class)."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from device_sim.aio_paho import MqttLink, PahoHub
from device_sim.alerts import EventIds, Outbox, SentAlert, config_allows
from device_sim.camera import Camera, CameraOptions, CameraState, Tally
from device_sim.registry import SimDevice
from gateway.wire import AlertHeader, ClipHeader, ConfigHeader, StatusHeader, decode, encode

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
JPEG = b"\xff\xd8" + b"x" * 1000 + b"\xff\xd9"


class FakeLink(MqttLink):
    """Records what the camera publishes; message ids count from 1."""

    def __init__(self, camera: Camera) -> None:
        super().__init__(PahoHub(), camera, client_id="fake", username="fake", password="fake")
        self.published: list[tuple[str, bytes]] = []
        self.subscribed: list[str] = []
        self.disconnected = False

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        self.published.append((topic, payload))
        return len(self.published)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscribed.append(topic)

    def disconnect(self) -> None:
        self.disconnected = True

    def abort(self) -> None:
        pass


class FakeHost:
    def __init__(self) -> None:
        self.tally = Tally()
        self.down: list[str] = []
        self.sent: list[SentAlert] = []
        self.acked: list[tuple[str, str]] = []

    def camera_down(self, camera: Camera) -> None:
        self.down.append(camera.serial)

    def alert_sent(self, alert: SentAlert) -> None:
        self.sent.append(alert)

    def alert_acked(self, serial: str, event_id: str, at: float) -> None:
        self.acked.append((serial, event_id))


def _camera(options: CameraOptions | None = None) -> tuple[Camera, FakeHost]:
    host = FakeHost()
    device = SimDevice("CGTESTCAM0001", "ABC234", "CG-Sim-720", "secret-" + "s" * 20)
    return Camera(device, PahoHub(), host, options or CameraOptions()), host


def _online(camera: Camera) -> FakeLink:
    link = FakeLink(camera)
    camera.attach(link)
    camera.link_up(link)
    return link


def _alerts(link: FakeLink) -> list[tuple[int, AlertHeader]]:
    found = []
    for mid, (topic, payload) in enumerate(link.published, start=1):
        header, _ = decode(payload)
        if isinstance(header, AlertHeader):
            assert topic == "cam/CGTESTCAM0001/alert"
            found.append((mid, header))
    return found


def test_event_ids_are_unique_and_valid() -> None:
    ids, other_boot = EventIds(), EventIds()
    made = [ids.next(NOW) for _ in range(1000)] + [other_boot.next(NOW) for _ in range(1000)]
    assert len(set(made)) == 2000
    for event_id in made[:3]:
        AlertHeader(event_id=event_id, captured_at=NOW, kind="motion", body_size=1)  # validates the pattern


def test_on_connect_a_camera_announces_itself_and_subscribes_to_its_config() -> None:
    camera, _ = _camera(CameraOptions(firmware="2.0.1"))
    link = _online(camera)
    assert camera.state is CameraState.ONLINE
    topic, payload = link.published[0]
    status, _ = decode(payload)
    assert topic == "cam/CGTESTCAM0001/status"
    assert isinstance(status, StatusHeader) and status.online and status.firmware == "2.0.1"
    assert link.subscribed == ["cam/CGTESTCAM0001/config"]


def test_an_unacknowledged_alert_is_republished_with_the_same_event_id() -> None:
    camera, host = _camera()
    first = _online(camera)
    alert = camera.send_alert("person", NOW, JPEG)
    assert alert is not None and host.sent == [alert]
    [(_, header)] = _alerts(first)
    assert header.event_id == alert.event_id and header.body_size == len(JPEG)

    camera.link_down(first, "connection lost")  # no PUBACK came
    assert camera.state is CameraState.IDLE and host.down == [camera.serial]
    second = _online(camera)
    [(mid, again)] = _alerts(second)
    assert again.event_id == alert.event_id
    assert second.published[mid - 1][1] == first.published[1][1]  # byte for byte
    assert host.tally.alerts_republished == 1 and host.sent == [alert]  # not reported as a new alert

    camera.acked(second, mid, accepted=True)
    assert host.acked == [(camera.serial, alert.event_id)] and len(camera.outbox) == 0
    camera.link_down(second, "again")
    # acknowledged moments ago: sent once more in case the broker crashed before saving it (same event id)
    [(_, resent)] = _alerts(_online(camera))
    assert resent.event_id == alert.event_id


def test_alerts_made_while_offline_go_out_on_the_next_connection() -> None:
    camera, _ = _camera()
    alert = camera.send_alert("motion", NOW, JPEG)
    assert alert is not None
    [(_, header)] = _alerts(_online(camera))
    assert header.event_id == alert.event_id


def test_callbacks_from_an_old_link_are_ignored() -> None:
    camera, host = _camera()
    old = _online(camera)
    camera.send_alert("motion", NOW, JPEG)
    camera.link_down(old, "lost")
    new = _online(camera)
    camera.acked(old, 2, accepted=True)  # a late PUBACK of the old connection
    camera.link_down(old, "late")
    assert len(camera.outbox) == 1 and host.acked == [] and camera.state is CameraState.ONLINE
    assert new.published


def test_the_outbox_is_bounded() -> None:
    camera, host = _camera(CameraOptions(outbox_limit=2))
    _online(camera)
    assert [camera.send_alert("motion", NOW, JPEG) is not None for _ in range(3)] == [True, True, False]
    assert host.tally.dropped_outbox_full == 1


def test_a_refused_publish_is_counted_and_not_retried() -> None:
    camera, host = _camera()
    link = _online(camera)
    camera.send_alert("motion", NOW, JPEG)
    [(mid, _)] = _alerts(link)
    camera.acked(link, mid, accepted=False)  # MQTT 5: PUBACK 0x87 not authorised
    assert host.tally.alerts_refused == 1 and host.acked == [] and len(camera.outbox) == 0


def test_the_camera_obeys_its_retained_config() -> None:
    camera, host = _camera()
    link = _online(camera)
    topic = "cam/CGTESTCAM0001/config"
    camera.message(
        link, topic, encode(ConfigHeader(alerts_enabled=True, event_kinds=["person"], issued_at=NOW))
    )
    assert camera.may_alert("person", NOW, 0.0) and not camera.may_alert("motion", NOW, 0.0)
    camera.message(link, topic, encode(ConfigHeader(alerts_enabled=False, issued_at=NOW)))
    assert not camera.may_alert("person", NOW, 100.0)
    camera.message(link, topic, b"not an envelope")
    assert host.tally.bad_configs == 1 and camera.config is not None  # the last good config stays
    camera.message(link, topic, b"")  # retained config cleared
    assert camera.config is None and camera.may_alert("motion", NOW, 200.0)
    assert host.tally.suppressed_by_config == 2


def test_cooldown_spaces_motion_alerts() -> None:
    camera, _ = _camera(CameraOptions(cooldown_s=10.0))
    camera.start_cooldown(100.0)
    assert not camera.may_alert("motion", NOW, 105.0)
    assert camera.may_alert("motion", NOW)
    assert camera.may_alert("motion", NOW, 110.0)


@pytest.mark.parametrize(
    ("config", "kind", "allowed"),
    [
        (None, "motion", True),
        (ConfigHeader(alerts_enabled=False, issued_at=NOW), "motion", False),
        (ConfigHeader(alerts_enabled=True, issued_at=NOW), "sound", True),
        (ConfigHeader(alerts_enabled=True, event_kinds=[], issued_at=NOW), "motion", False),
        (
            ConfigHeader(alerts_enabled=True, snoozed_until=NOW + timedelta(minutes=5), issued_at=NOW),
            "motion",
            False,
        ),
        (
            ConfigHeader(alerts_enabled=True, snoozed_until=NOW - timedelta(seconds=1), issued_at=NOW),
            "motion",
            True,
        ),
    ],
)
def test_config_allows(config: ConfigHeader | None, kind: str, allowed: bool) -> None:
    assert config_allows(config, kind, NOW) is allowed


def test_graceful_stop_sends_offline_then_disconnects_after_its_puback() -> None:
    camera, _ = _camera()
    link = _online(camera)
    assert camera.begin_stop()
    status, _ = decode(link.published[-1][1])
    assert isinstance(status, StatusHeader) and not status.online
    assert not link.disconnected
    camera.acked(link, len(link.published), accepted=True)
    assert link.disconnected
    camera.link_down(link, "normal disconnection")
    assert camera.state is CameraState.STOPPED


def test_outbox_keeps_order_and_forgets_acked() -> None:
    box = Outbox(limit=3)
    for i in range(3):
        assert box.add(f"e{i}", bytes([i]))
    assert box.full and not box.add("e3", b"")
    assert box.ack("e1") and not box.ack("e1")
    later = time.monotonic() + 60  # past the resend window of the acknowledged one
    assert list(box.pending(now=later)) == [("e0", b"\x00"), ("e2", b"\x02")]


def test_outbox_resends_recently_acknowledged_alerts_after_a_reconnect() -> None:
    box = Outbox(limit=10, resend_window_s=5.0)
    box.add("old", b"o")
    box.add("new", b"n")
    box.add("open", b"x")
    assert box.ack("old", now=100.0) and box.ack("new", now=104.0)
    # at 106 s "old" is past the window, "new" may have been lost by a broker crash, "open" was never acked
    assert list(box.pending(now=106.0)) == [("new", b"n"), ("open", b"x")]
    assert list(box.pending(now=110.0)) == [("open", b"x")]


def _clip_parts(link: FakeLink) -> list[tuple[int, str, ClipHeader, bytes]]:
    found = []
    for mid, (topic, payload) in enumerate(link.published, start=1):
        header, body = decode(payload)
        if isinstance(header, ClipHeader):
            found.append((mid, topic, header, bytes(body)))
    return found


def test_a_clip_goes_out_as_numbered_parts_on_its_own_topic() -> None:
    camera, host = _camera()
    link = _online(camera)
    frames = [JPEG + bytes([i]) for i in range(4)]
    assert camera.send_clip("e-clip-1", NOW, frames, 5.0)
    parts = _clip_parts(link)
    assert [h.part for _, _, h, _ in parts] == [0, 1, 2, 3]
    assert {t for _, t, _, _ in parts} == {"cam/CGTESTCAM0001/clip/e-clip-1"}
    for _, _, header, body in parts:
        assert (header.clip_id, header.event_id, header.parts, header.fps) == ("e-clip-1", "e-clip-1", 4, 5.0)
        assert header.captured_at == NOW and body == frames[header.part]
    assert host.tally.clips_sent == 1 and len(camera.clip_outbox) == 4
    for mid, _, _, _ in parts[:3]:
        camera.acked(link, mid, accepted=True)
    assert host.tally.clip_parts_acked == 3 and len(camera.clip_outbox) == 1
    assert host.acked == [], "clip parts are not alerts"


def test_unacknowledged_clip_parts_are_republished_after_a_reconnect() -> None:
    camera, host = _camera()
    first = _online(camera)
    camera.send_clip("e-clip-2", NOW, [JPEG, JPEG + b"x", JPEG + b"y"], 5.0)
    parts = _clip_parts(first)
    camera.acked(first, parts[0][0], accepted=True)
    camera.link_down(first, "connection lost")
    second = _online(camera)
    again = _clip_parts(second)
    # part 0 was acknowledged moments ago: re-sent too, in case the broker crashed before saving it
    assert [h.part for _, _, h, _ in again] == [0, 1, 2]
    assert [second.published[m - 1][1] for m, _, _, _ in again] == [
        first.published[m - 1][1] for m, _, _, _ in parts
    ]
    for mid, _, _, _ in again:
        camera.acked(second, mid, accepted=True)
    assert len(camera.clip_outbox) == 0 and host.tally.clip_parts_acked == 3  # part 0's repeat ack is no news


def test_a_clip_made_offline_waits_and_one_that_does_not_fit_is_dropped_whole() -> None:
    camera, host = _camera(CameraOptions(clip_outbox_limit=5))
    assert camera.send_clip("e-clip-3", NOW, [JPEG] * 3, 5.0)  # offline: kept
    assert not camera.send_clip("e-clip-4", NOW, [JPEG] * 3, 5.0)  # 3 more do not fit in 5
    assert host.tally.clips_dropped == 1 and len(camera.clip_outbox) == 3
    parts = _clip_parts(_online(camera))
    assert [(h.clip_id, h.part) for _, _, h, _ in parts] == [
        ("e-clip-3", 0),
        ("e-clip-3", 1),
        ("e-clip-3", 2),
    ]
