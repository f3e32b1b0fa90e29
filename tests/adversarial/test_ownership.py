"""Finding 8: a camera's old alerts and clips must not land in its next owner's account, and mute/snooze
and the duplicate check belong to the binding, not the device.

Messages are injected as the MQTT consumer hands them over (``services.ingest.handle``): a message
"queued in the broker" or "re-sent by the camera" is one whose capture time is earlier than its delivery.
Results are read through the real HTTP API; both databases; the local object store."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from alembic import command
from sqlalchemy import func, select

from device_sim.registry import SimDevice
from gateway.adapters.db.engine import _alembic_config, create_engine, migrate
from gateway.adapters.db.tables import (
    clip_parts,
    clips,
    dead_letters,
    device_alert_settings,
    devices,
    events,
)
from gateway.bootstrap import Services
from gateway.metrics import ALERTS_DROPPED, CLIPS_DROPPED
from gateway.services.alert_settings import AlertSettingsService
from gateway.services.ingest import Outcome
from gateway.wire import ClipFormat, ClipHeader, ConfigHeader, clip_topic, decode, encode
from tests.support.api import auth, new_user
from tests.support.clock import ManualClock
from tests.support.media import alert, jpeg
from tests.support.seed import seed_subscription

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # ManualClock's start


def at(minutes: float) -> datetime:
    """``minutes`` after the test clock's start."""
    return START + timedelta(minutes=minutes)


def iso(moment: datetime) -> str:
    """How the API writes an instant."""
    return moment.isoformat().replace("+00:00", "Z")


class Owners:
    """Two accounts that pass one camera between them through the API."""

    def __init__(self, client: TestClient, clock: ManualClock, cam: SimDevice) -> None:
        self.client = client
        self.clock = clock
        self.cam = cam
        self.device_id = ""

    async def bind(self, token: str) -> None:
        resp = await self.client.post(
            "/v1/devices", json={"serial": self.cam.serial, "code": self.cam.code}, headers=auth(token)
        )
        assert resp.status == 201, await resp.text()
        self.device_id = (await resp.json())["device"]["id"]

    async def unbind(self, token: str) -> None:
        resp = await self.client.delete(f"/v1/devices/{self.device_id}", headers=auth(token))
        assert resp.status == 204, await resp.text()

    async def events(self, token: str) -> list[dict[str, str]]:
        resp = await self.client.get("/v1/events", headers=auth(token))
        assert resp.status == 200, await resp.text()
        return list((await resp.json())["items"])

    async def device_alerts(self, token: str) -> dict[str, object]:
        resp = await self.client.get(f"/v1/devices/{self.device_id}/alerts", headers=auth(token))
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())

    async def account_id(self, token: str) -> str:
        return str((await (await self.client.get("/v1/me", headers=auth(token))).json())["id"])


async def count(services: Services, table: object) -> int:
    async with services.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


class RecordingPublisher:
    """Stands in for the broker: keeps what the gateway would publish to cameras."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Records the message."""
        self.sent.append((topic, payload, retain))


async def test_alerts_captured_before_the_binding_are_not_stored_for_the_new_owner(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    cam, topic = fleet[0], f"cam/{fleet[0].serial}/alert"
    owners = Owners(client, clock, cam)
    a = await new_user(client, mailbox, "a@example.com")
    b = await new_user(client, mailbox, "b@example.com")
    await owners.bind(a)
    clock.advance(minutes=5)
    assert await services.ingest.handle(topic, alert("e-1", at=at(2))) is Outcome.STORED
    clock.advance(minutes=5)
    await owners.unbind(a)
    clock.advance(minutes=10)
    await owners.bind(b)  # at(20)
    clock.advance(minutes=5)
    before = ALERTS_DROPPED.labels("before_binding")._value.get()
    # e-1 re-sent by the camera (it was acknowledged less than its re-send window ago), and e-2, captured
    # while A had the camera and queued in the broker while the gateway was away.
    assert await services.ingest.handle(topic, alert("e-1", at=at(2))) is Outcome.DROPPED
    assert await services.ingest.handle(topic, alert("e-2", at=at(3))) is Outcome.DROPPED
    assert await services.ingest.handle(topic, alert("e-3", at=at(19.9))) is Outcome.DROPPED
    assert ALERTS_DROPPED.labels("before_binding")._value.get() == before + 3
    assert await owners.events(b) == []
    assert [e["captured_at"] for e in await owners.events(a)] == [iso(at(2))]
    assert await count(services, events) == 1, "nothing written for B"
    assert await count(services, dead_letters) == 0, "a drop, not a dead letter"


async def test_a_new_owner_may_reuse_an_event_id_of_the_previous_owner(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    cam, topic = fleet[1], f"cam/{fleet[1].serial}/alert"
    owners = Owners(client, clock, cam)
    a = await new_user(client, mailbox, "a@example.com")
    b = await new_user(client, mailbox, "b@example.com")
    await owners.bind(a)
    clock.advance(minutes=5)
    assert await services.ingest.handle(topic, alert("e-1", at=at(2))) is Outcome.STORED
    await owners.unbind(a)
    clock.advance(minutes=5)
    await owners.bind(b)  # at(10); the camera was reset and counts its event ids from the start again
    clock.advance(minutes=5)
    assert await services.ingest.handle(topic, alert("e-1", at=at(12))) is Outcome.STORED
    assert await services.ingest.handle(topic, alert("e-1", at=at(12))) is Outcome.DUPLICATE  # redelivery
    (mine,) = await owners.events(b)
    assert mine["captured_at"] == iso(at(12))
    (theirs,) = await owners.events(a)
    assert theirs["captured_at"] == iso(at(2))
    snap = await client.get(mine["snapshot_url"], headers=auth(b))
    assert snap.status == 200 and await snap.read() == jpeg()


async def test_mute_and_snooze_of_a_past_binding_do_not_apply(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    cam, topic = fleet[2], f"cam/{fleet[2].serial}/alert"
    owners = Owners(client, clock, cam)
    a = await new_user(client, mailbox, "a@example.com")
    b = await new_user(client, mailbox, "b@example.com")
    await owners.bind(a)
    url = f"/v1/devices/{owners.device_id}/alerts"
    resp = await client.put(url, json={"muted": True, "snooze_minutes": 600}, headers=auth(a))
    assert resp.status == 200 and (await resp.json())["muted"] is True
    await owners.unbind(a)
    clock.advance(minutes=1)
    await owners.bind(b)
    defaults = {"muted": False, "snoozed_until": None, "updated_at": None}
    assert await owners.device_alerts(b) == defaults
    # The camera is told the new owner's settings, not the previous owner's mute and snooze.
    recorder = RecordingPublisher()
    await AlertSettingsService(services.engine, recorder, clock).publish_for(cam.serial)
    ((sent_to, payload, retained),) = recorder.sent
    config, _ = decode(payload)
    assert sent_to == f"cam/{cam.serial}/config" and retained and isinstance(config, ConfigHeader)
    assert (config.alerts_enabled, config.snoozed_until) == (True, None)
    clock.advance(minutes=1)
    assert await services.ingest.handle(topic, alert("b-1", at=clock.now())) is Outcome.STORED
    # Changing only the mute keeps the snooze: B's (none), not A's.
    resp = await client.put(url, json={"muted": False}, headers=auth(b))
    assert await resp.json() == {"muted": False, "snoozed_until": None, "updated_at": iso(clock.now())}
    # Settings belong to the binding, not the account: A binding the camera again starts afresh too.
    await client.put(url, json={"muted": True}, headers=auth(b))
    await owners.unbind(b)
    clock.advance(minutes=1)
    await owners.bind(a)
    assert await owners.device_alerts(a) == defaults
    clock.advance(minutes=1)
    assert await services.ingest.handle(topic, alert("a-2", at=clock.now())) is Outcome.STORED


def clip(clip_id: str, captured: datetime, count: int = 3) -> list[bytes]:
    """The parts of a camera's frame-burst clip."""
    chunks = [jpeg(320, 180, seed=100 + i) for i in range(count)]
    return [
        encode(
            ClipHeader(
                clip_id=clip_id,
                event_id=clip_id,
                captured_at=captured,
                format=ClipFormat.JPEG_FRAMES,
                part=i,
                parts=count,
                fps=5.0,
                body_size=len(chunk),
            ),
            chunk,
        )
        for i, chunk in enumerate(chunks)
    ]


async def test_a_clip_captured_before_the_binding_is_not_stored_for_the_new_owner(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    cam = fleet[3]
    topic = clip_topic(cam.serial, "c-1")
    owners = Owners(client, clock, cam)
    a = await new_user(client, mailbox, "a@example.com")
    b = await new_user(client, mailbox, "b@example.com")
    # B had the camera first and bought a plan with video for it; plans stay with the device and account.
    await owners.bind(b)
    await seed_subscription(services, await owners.account_id(b), owners.device_id, plan_id="trial")
    clock.advance(minutes=5)
    await owners.unbind(b)
    await owners.bind(a)  # at(5): A records clip c-1 at(7), which waits in the broker
    clock.advance(minutes=5)
    await owners.unbind(a)
    clock.advance(minutes=5)
    await owners.bind(b)  # at(15)
    clock.advance(minutes=5)
    before = CLIPS_DROPPED.labels("before_binding")._value.get()
    outcomes = [await services.ingest.handle(topic, p) for p in clip("c-1", at(7))]
    assert outcomes == [Outcome.DROPPED] * 3
    assert CLIPS_DROPPED.labels("before_binding")._value.get() == before + 1
    assert await count(services, clips) == 0 and await count(services, clip_parts) == 0
    resp = await client.get("/v1/clips", headers=auth(b))
    assert resp.status == 200 and (await resp.json())["items"] == []
    # The camera's next clip may re-use the id: it is B's, captured in B's binding.
    outcomes = [await services.ingest.handle(topic, p) for p in clip("c-1", at(17))]
    assert outcomes == [Outcome.STAGED, Outcome.STAGED, Outcome.STORED]
    (stored,) = (await (await client.get("/v1/clips", headers=auth(b))).json())["items"]
    assert stored["captured_at"] == iso(at(17))


async def test_a_clip_id_of_the_previous_owner_is_not_the_new_owners_duplicate(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    cam = fleet[4]
    topic = clip_topic(cam.serial, "c-1")
    owners = Owners(client, clock, cam)
    a = await new_user(client, mailbox, "a@example.com")
    b = await new_user(client, mailbox, "b@example.com")
    await owners.bind(a)
    await seed_subscription(services, await owners.account_id(a), owners.device_id, plan_id="trial")
    clock.advance(minutes=5)
    assert [await services.ingest.handle(topic, p) for p in clip("c-1", at(2))][-1] is Outcome.STORED
    await owners.unbind(a)
    clock.advance(minutes=5)
    await owners.bind(b)  # at(10)
    await seed_subscription(services, await owners.account_id(b), owners.device_id, plan_id="standard-30")
    clock.advance(minutes=5)
    outcomes = [await services.ingest.handle(topic, p) for p in clip("c-1", at(12))]
    assert outcomes == [Outcome.STAGED, Outcome.STAGED, Outcome.STORED]
    (mine,) = (await (await client.get("/v1/clips", headers=auth(b))).json())["items"]
    assert mine["captured_at"] == iso(at(12))
    assert await count(services, clips) == 2


async def test_existing_rows_join_the_current_binding_when_migrated(database_url: str) -> None:
    """Migration 0006: rows of a device's current owner join its (new) binding; a past owner's rows
    are in the past binding "", so their settings are not read and their ids are no duplicates."""
    engine = create_engine(database_url)
    now = START
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "0004"))
            for account in ("old", "new"):
                await conn.execute(
                    sa.text(
                        "INSERT INTO accounts (id, password_hash, birth_date, region, status, created_at)"
                        " VALUES (:id, 'x', '1990-01-01', 'sg', 'active', :at)"
                    ),
                    {"id": account, "at": now},
                )
            for device, owner in (("d-bound", "new"), ("d-free", None)):
                await conn.execute(
                    sa.text(
                        "INSERT INTO devices (id, serial, model, code_hash, broker_secret_hash,"
                        " owner_account_id, bound_at, imported_at)"
                        " VALUES (:id, :id, 'm', 'h', 'h', :owner, :bound, :at)"
                    ),
                    {"id": device, "owner": owner, "bound": now if owner else None, "at": now},
                )
            for event, account, device in (
                ("e-old", "old", "d-bound"),
                ("e-new", "new", "d-bound"),
                ("e-free", "old", "d-free"),
            ):
                await conn.execute(
                    sa.text(
                        "INSERT INTO events (id, account_id, device_id, camera_event_id, kind, captured_at,"
                        " received_at, region, snapshot_key, thumbnail_key, snapshot_bytes, width,"
                        " height, retain_until)"
                        " VALUES (:id, :account, :device, :id, 'motion', :at, :at, 'sg', 's', 't', 1,"
                        " 64, 64, :at)"
                    ),
                    {"id": event, "account": account, "device": device, "at": now},
                )
            await conn.execute(
                sa.text(
                    "INSERT INTO device_alert_settings (device_id, account_id, muted, updated_at)"
                    " VALUES ('d-bound', 'old', :t, :at)"
                ),
                {"t": True, "at": now},
            )
        await migrate(engine)
        async with engine.connect() as conn:
            bindings = dict((await conn.execute(select(devices.c.id, devices.c.binding_id))).all())
            of_events = dict((await conn.execute(select(events.c.id, events.c.binding_id))).all())
            of_settings = (await conn.execute(select(device_alert_settings.c.binding_id))).scalar_one()
        assert bindings["d-free"] is None and len(bindings["d-bound"] or "") == 36
        assert of_events == {"e-old": "", "e-new": bindings["d-bound"], "e-free": ""}
        assert of_settings == "", "the previous owner's mute is not the current binding's"
    finally:
        await engine.dispose()
