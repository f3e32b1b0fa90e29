"""Alert ingest: one MQTT message in, at most one event, one snapshot, one thumbnail and one push out.

The order of the steps is the guarantee. Nothing is written for an alert the owner opted out of; objects
are created once under keys derived from the camera's event id; the event and its push are committed in
one transaction; the caller acknowledges the message only after ``handle`` returns. A crash anywhere
before the acknowledgement makes the broker redeliver, and the redelivery finds the same keys and the
same event id: no loss, no duplicate.
"""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import metrics
from gateway.adapters.db.dialect import insert_ignore, upsert
from gateway.adapters.db.tables import (
    accounts,
    alert_settings,
    dead_letters,
    device_alert_settings,
    device_presence,
    devices,
    events,
    push_outbox,
)
from gateway.adapters.imaging import BadImage, ImageWorkers
from gateway.config import IngestSettings
from gateway.domain.alerts import (
    AlertPrefs,
    Drop,
    SnapshotDropped,
    TokenBuckets,
    before_binding,
    capture_time,
    collection_decision,
)
from gateway.domain.plans import Catalogue, Retention
from gateway.ports import Clock, Publisher
from gateway.services.coverage import Coverage, coverage_at
from gateway.services.failures import is_permanent
from gateway.wire import (
    AlertHeader,
    Channel,
    ConfigHeader,
    StatusHeader,
    WireError,
    decode,
    decode_json_header,
    encode,
    parse_topic,
    printable,
)
from gateway.wire import topic as channel_topic
from storage import StoreRouter
from storage.keys import snapshot_key, thumbnail_key
from storage.tags import retention_tags

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # a redelivery of an alert already committed
    DROPPED = "dropped"  # opted out: nothing written, counted
    DEAD_LETTER = "dead_letter"
    PRESENCE = "presence"
    STAGED = "staged"  # a clip part kept until the rest of its clip arrives


class ClipHandler(Protocol):
    """Takes the messages of clip topics (gateway.services.clips.ClipIngest)."""

    async def handle(self, topic: str, serial: str, clip_id: str, payload: bytes) -> Outcome:
        """Processes one clip part, with the same guarantees as ``IngestService.handle``."""
        ...


@dataclass(frozen=True)
class Target:
    """Who a camera message is for, and what decides whether it is collected."""

    device_id: str
    account_id: str | None
    region: str | None
    prefs: AlertPrefs
    event_kind: str | None  # kind of the stored event with the looked-up camera event id; None: not stored
    last_seen_at: datetime | None
    coverage: Coverage | None = None  # the plan in force at the capture (None when unbound)
    binding_id: str | None = None  # the current binding (None when unbound)
    bound_at: datetime | None = None  # when it started

    def before_binding(self, captured_at: datetime, received_at: datetime, max_skew: timedelta) -> bool:
        """Captured before the current binding began (``gateway.domain.alerts.before_binding``)."""
        return before_binding(captured_at, self.bound_at, received_at, max_skew)

    @property
    def known(self) -> bool:
        """This event id of this camera is already stored."""
        return self.event_kind is not None

    @property
    def retention(self) -> Retention | None:
        """Retention of the capture, from the plan in force then (None when unbound)."""
        return self.coverage.retention if self.coverage is not None else None


PRESENCE_REFRESH = timedelta(seconds=60)  # alerts refresh "last seen" at most this often


_PRESENCE_QUERY = (
    select(devices.c.id, device_presence.c.online, device_presence.c.firmware, device_presence.c.last_seen_at)
    .select_from(devices.outerjoin(device_presence, device_presence.c.device_id == devices.c.id))
    .where(devices.c.serial == bindparam("serial"))
)


def _presence_unchanged(known: Any, header: StatusHeader, now: datetime) -> bool:
    """The status says what presence says already, and "last seen" is fresh enough to keep."""
    return (
        known.online is header.online
        and (header.firmware is None or header.firmware == known.firmware)
        and known.last_seen_at is not None
        and now - known.last_seen_at < PRESENCE_REFRESH
    )


# Everything the decision about one alert needs, including whether it is a redelivery, in one query.
_TARGET_QUERY = (
    select(
        devices.c.id,
        devices.c.owner_account_id,
        devices.c.binding_id,
        devices.c.bound_at,
        accounts.c.region,
        alert_settings.c.message_alerts,
        alert_settings.c.event_kinds,
        device_alert_settings.c.muted,
        device_alert_settings.c.snoozed_until,
        events.c.kind.label("event_kind"),
        device_presence.c.last_seen_at,
        device_presence.c.online,
    )
    .select_from(
        devices.outerjoin(accounts, accounts.c.id == devices.c.owner_account_id)
        .outerjoin(alert_settings, alert_settings.c.account_id == devices.c.owner_account_id)
        # Settings and the duplicate check are the current binding's: a past owner's never apply.
        .outerjoin(
            device_alert_settings,
            (device_alert_settings.c.device_id == devices.c.id)
            & (device_alert_settings.c.binding_id == devices.c.binding_id),
        )
        .outerjoin(
            events,
            (events.c.device_id == devices.c.id)
            & (events.c.binding_id == devices.c.binding_id)
            & (events.c.camera_event_id == bindparam("camera_event_id")),
        )
        .outerjoin(device_presence, device_presence.c.device_id == devices.c.id)
    )
    .where(devices.c.serial == bindparam("serial"))
)


class IngestService:
    """Handles camera messages; raises only for transient failures (the caller retries, unacknowledged)."""

    def __init__(
        self,
        engine: AsyncEngine,
        stores: StoreRouter,
        images: ImageWorkers,
        settings: IngestSettings,
        catalogue: Catalogue,
        clock: Clock,
        clips: ClipHandler | None = None,
        publisher: Publisher | None = None,
        letters: TokenBuckets | None = None,
    ) -> None:
        self._db = engine
        self._letters = letters if letters is not None else letter_budget(settings)
        self._publisher = publisher
        self._clips = clips
        self._catalogue = catalogue
        self._stores = stores
        self._images = images
        self._settings = settings
        self._clock = clock
        self._buckets = TokenBuckets(settings.camera_burst, settings.camera_per_minute / 60)
        # Past its rate a camera's alerts are kept without their snapshots, up to this second allowance.
        self._overflow = TokenBuckets(settings.overflow_burst, settings.overflow_per_minute / 60)
        self._told_until: dict[str, float] = {}  # serial -> monotonic time its last back-off ends
        self._max_skew = timedelta(seconds=settings.max_clock_skew_s)

    async def handle(self, topic: str, payload: bytes) -> Outcome:
        """Processes one message. Idempotent: the same message twice has the effect of once.

        Raises only while a dependency is down (``gateway.services.failures``); a deterministic refusal
        by the database ends as a dead letter, so the message always settles."""
        try:
            return await self._handle(topic, payload)
        except Exception as exc:
            if not is_permanent(exc):
                raise
            log.warning("the database refused a message on %s: %s", printable(topic, 300), exc)
            return await self.give_up(topic, "database_rejected", repr(exc), payload)

    async def _handle(self, topic: str, payload: bytes) -> Outcome:
        try:
            where = parse_topic(topic)
        except WireError as exc:
            return await self.dead_letter(topic, "", exc.reason, exc.detail, payload)
        if where.channel is Channel.STATUS:
            return await self._status(topic, where.serial, payload)
        if where.channel is Channel.CLIP and where.clip_id is not None and self._clips is not None:
            return await self._clips.handle(topic, where.serial, where.clip_id, payload)
        if where.channel is not Channel.ALERT:
            return await self.dead_letter(
                topic, where.serial, "unexpected_channel", f"nothing takes {where.channel} here", payload
            )
        if len(payload) > self._settings.max_alert_bytes:
            detail = f"{len(payload)} bytes > {self._settings.max_alert_bytes}"
            return await self.dead_letter(topic, where.serial, "too_large", detail, payload)
        try:
            header, body = decode(payload)
        except WireError as exc:
            return await self.dead_letter(topic, where.serial, exc.reason, exc.detail, payload)
        if not isinstance(header, AlertHeader):
            return await self.dead_letter(
                topic, where.serial, "unexpected_type", f"{header.type} on an alert topic", payload
            )
        return await self._alert(topic, where.serial, header, body, payload)

    async def _alert(
        self, topic: str, serial: str, header: AlertHeader, body: memoryview, payload: bytes
    ) -> Outcome:
        started = time.perf_counter()
        now = self._clock.now()
        # The camera's clock is not trusted: retention and the plan count from the clamped capture time.
        captured = capture_time(header.captured_at, now, self._max_skew)
        target = await self._target(serial, header.event_id, captured)
        if target is None:
            return await self.dead_letter(
                topic, serial, "unknown_device", "no such serial in the registry", payload
            )
        if target.account_id is None or target.region is None:
            return await self.dead_letter(
                topic, serial, "unbound_device", "the camera is bound to no account", payload
            )
        if target.before_binding(header.captured_at, now, self._max_skew):
            metrics.ALERTS_DROPPED.labels(Drop.BEFORE_BINDING.value).inc()
            metrics.ALERTS.labels(Outcome.DROPPED.value).inc()
            return Outcome.DROPPED
        drop = collection_decision(target.prefs, header.kind, now)
        if drop is not None:
            metrics.ALERTS_DROPPED.labels(drop.value).inc()
            metrics.ALERTS.labels(Outcome.DROPPED.value).inc()
            return Outcome.DROPPED
        if target.known:
            metrics.ALERTS.labels(Outcome.DUPLICATE.value).inc()
            return Outcome.DUPLICATE
        # The rate is checked here but charged only once the alert is settled: retries of a transient
        # failure must not use up the camera's allowance and turn a storage outage into rate-limit drops.
        if not self._buckets.allows(serial, time.monotonic()):
            return await self._over_rate(topic, serial, header, payload, target, now, captured)
        outcome = await self._store(topic, serial, header, body, payload, target, now, captured)
        self._buckets.take(serial, time.monotonic())
        if outcome is Outcome.STORED:
            metrics.INGEST_SECONDS.observe(time.perf_counter() - started)
        return outcome

    async def _store(
        self,
        topic: str,
        serial: str,
        header: AlertHeader,
        body: memoryview,
        payload: bytes,
        target: Target,
        now: datetime,
        captured: datetime,
    ) -> Outcome:
        assert target.account_id is not None and target.region is not None
        try:
            snap = await self._images.snapshot(body)
        except BadImage as exc:
            return await self.dead_letter(topic, serial, "bad_image", str(exc), payload)

        store = self._stores.for_region(target.region)
        # Keys come from what the camera sent (a redelivery must find the same ones), retention from the
        # clamped capture time.
        snap_key = snapshot_key(target.account_id, target.device_id, header.event_id, header.captured_at)
        thumb_key = thumbnail_key(target.account_id, target.device_id, header.event_id, header.captured_at)
        # Both at once: they are independent create-once writes, and both must land before the commit.
        assert target.retention is not None  # bound devices have one
        retention = retention_tags(target.retention.snapshot_days)
        await asyncio.gather(
            store.put(
                snap_key, bytes(body), content_type="image/jpeg", tags={"kind": "snapshot", **retention}
            ),
            store.put(
                thumb_key, snap.thumbnail, content_type="image/jpeg", tags={"kind": "thumbnail", **retention}
            ),
        )
        metrics.STORED_BYTES.inc(len(body) + len(snap.thumbnail))
        media = {
            "snapshot_key": snap_key,
            "thumbnail_key": thumb_key,
            "snapshot_bytes": len(body),
            "thumbnail_bytes": len(snap.thumbnail),
            "width": snap.width,
            "height": snap.height,
        }
        return await self._commit(header, target, now, captured, media, push=True)

    async def _over_rate(
        self,
        topic: str,
        serial: str,
        header: AlertHeader,
        payload: bytes,
        target: Target,
        now: datetime,
        captured: datetime,
    ) -> Outcome:
        """Past its rate a camera's alert is kept as an event without snapshot, thumbnail or push (its
        bytes are neither decoded nor stored), and the camera is told to back off; past a second, larger
        allowance it is dead-lettered. Nothing is held: acks are in arrival order across all cameras."""
        if not self._overflow.take(serial, time.monotonic()):
            return await self.dead_letter(
                topic, serial, "rate_limited", "the camera exceeds even its overflow allowance", payload
            )
        self._tell_to_back_off(serial, target)
        media = {"snapshot_key": "", "thumbnail_key": "", "snapshot_bytes": 0, "thumbnail_bytes": 0}
        media |= {"width": 0, "height": 0, "snapshot_dropped": SnapshotDropped.RATE_LIMITED.value}
        outcome = await self._commit(header, target, now, captured, media, push=False)
        if outcome is Outcome.STORED:
            metrics.SNAPSHOTS_DROPPED.labels(SnapshotDropped.RATE_LIMITED.value).inc()
        return outcome

    def _tell_to_back_off(self, serial: str, target: Target) -> None:
        # Once per back-off period: the notice itself must not become a flood towards the broker.
        mono = time.monotonic()
        if self._publisher is None or self._told_until.get(serial, 0.0) > mono:
            return
        wait_s = self._buckets.refill_seconds(serial, mono)
        if len(self._told_until) > 100_000:
            self._told_until = {k: v for k, v in self._told_until.items() if v > mono}
        self._told_until[serial] = mono + wait_s
        prefs = target.prefs
        now = self._clock.now()
        header = ConfigHeader(
            alerts_enabled=prefs.message_alerts and not prefs.muted,
            event_kinds=sorted(prefs.event_kinds) if prefs.event_kinds is not None else None,
            snoozed_until=prefs.snoozed_until,
            backoff_until=now + timedelta(seconds=wait_s),
            issued_at=now,
        )
        # Not retained: the retained config stays the owner's settings; this notice is for now only.
        self._publisher.publish(channel_topic(serial, Channel.CONFIG), encode(header))
        metrics.BACKOFF_NOTICES.inc()

    async def _commit(
        self,
        header: AlertHeader,
        target: Target,
        now: datetime,
        captured: datetime,
        media: dict[str, object],
        *,
        push: bool,
    ) -> Outcome:
        assert target.account_id is not None and target.region is not None and target.retention is not None
        event_id = str(uuid.uuid4())
        async with self._db.begin() as conn:
            inserted = await insert_ignore(
                conn,
                events,
                {
                    "id": event_id,
                    "account_id": target.account_id,
                    "device_id": target.device_id,
                    "binding_id": target.binding_id,
                    "camera_event_id": header.event_id,
                    "kind": header.kind,
                    "captured_at": header.captured_at,
                    "received_at": now,
                    "stored_at": self._clock.now(),
                    "region": target.region,
                    "retain_until": captured + target.retention.snapshot_period,
                    **media,
                },
                ("device_id", "binding_id", "camera_event_id"),
            )
            if inserted and push:
                await conn.execute(
                    insert(push_outbox).values(
                        event_id=event_id, account_id=target.account_id, created_at=now, next_attempt_at=now
                    )
                )
            stale = target.last_seen_at is None or now - target.last_seen_at > PRESENCE_REFRESH
            if inserted and stale:
                await self._seen(conn, target.device_id, now)
        outcome = Outcome.STORED if inserted else Outcome.DUPLICATE
        metrics.ALERTS.labels(outcome.value).inc()
        return outcome

    async def _target(self, serial: str, camera_event_id: str, captured_at: datetime) -> Target | None:
        # Read fresh for every alert: an opt-out must hold from the moment it is saved.
        async with self._db.connect() as conn:
            return await read_target(conn, self._catalogue, serial, camera_event_id, captured_at)

    async def _status(self, topic: str, serial: str, payload: bytes) -> Outcome:
        try:
            header, _ = decode(payload)
        except WireError as exc:
            return await self.dead_letter(topic, serial, exc.reason, exc.detail, payload)
        if not isinstance(header, StatusHeader):
            return await self.dead_letter(
                topic, serial, "unexpected_type", f"{header.type} on a status topic", payload
            )
        now = self._clock.now()
        async with self._db.begin() as conn:
            known = (await conn.execute(_PRESENCE_QUERY, {"serial": serial})).first()
            if known is None:
                return await self._dead_letter_in(
                    conn, topic, serial, "unknown_device", "no such serial", payload
                )
            device_id = known.id
            if _presence_unchanged(known, header, now):
                return Outcome.PRESENCE  # a repeat: no write, so a camera repeating itself costs a read
            values: dict[str, object] = {"device_id": device_id, "online": header.online, "last_seen_at": now}
            if header.firmware is not None:
                values["firmware"] = header.firmware
            await upsert(conn, device_presence, values, ("device_id",))
        return Outcome.PRESENCE

    async def _seen(self, conn: AsyncConnection, device_id: str, now: datetime) -> None:
        await upsert(
            conn,
            device_presence,
            {"device_id": device_id, "online": True, "last_seen_at": now},
            ("device_id",),
        )

    async def dead_letter(self, topic: str, serial: str, reason: str, detail: str, payload: bytes) -> Outcome:
        """Records a message that can never be processed (without its body) so it can be acknowledged."""
        async with self._db.begin() as conn:
            return await self._dead_letter_in(conn, topic, serial, reason, detail, payload)

    async def give_up(self, topic: str, reason: str, detail: str, payload: bytes) -> Outcome:
        """Dead-letters a message whatever it holds: the full record, else a minimal one (nothing from the
        payload), else only a log line. Raises only while the database is down."""
        try:
            serial = parse_topic(topic).serial
        except WireError:
            serial = ""
        try:
            return await self.dead_letter(topic, serial, reason, detail, payload)
        except Exception as exc:
            if not is_permanent(exc):
                raise
            log.warning("dead letter refused (%s); recording a minimal one", exc)
        try:
            async with self._db.begin() as conn:
                await record_dead_letter(
                    conn, self._clock.now(), topic, serial, reason, "", payload, header={"minimal": True}
                )
        except Exception as exc:
            if not is_permanent(exc):
                raise
            metrics.DEAD_LETTERS.labels("unrecorded").inc()
            log.error("could not record a dead letter from %s (%s): %s", printable(serial, 32), reason, exc)
        metrics.ALERTS.labels(Outcome.DEAD_LETTER.value).inc()
        return Outcome.DEAD_LETTER

    async def _dead_letter_in(
        self, conn: AsyncConnection, topic: str, serial: str, reason: str, detail: str, payload: bytes
    ) -> Outcome:
        await record_dead_letter(
            conn, self._clock.now(), topic, serial, reason, detail, payload, budget=self._letters
        )
        metrics.ALERTS.labels(Outcome.DEAD_LETTER.value).inc()
        return Outcome.DEAD_LETTER


def letter_budget(settings: IngestSettings) -> TokenBuckets:
    """How many dead letters one camera may have written: its overflow allowance. Past it they are only
    counted, so a camera looping malformed messages costs the database nothing (docs/security.md)."""
    return TokenBuckets(settings.overflow_burst, settings.overflow_per_minute / 60)


async def read_target(
    conn: AsyncConnection, catalogue: Catalogue, serial: str, camera_event_id: str, captured_at: datetime
) -> Target | None:
    """The camera's owner, region, alert settings and plan at ``captured_at``, with the kind of its
    stored event ``camera_event_id`` if any; None for an unknown serial. Shared by alerts and clips."""
    row = (await conn.execute(_TARGET_QUERY, {"serial": serial, "camera_event_id": camera_event_id})).first()
    if row is None:
        return None
    cover = None
    if row.owner_account_id is not None:
        cover = await coverage_at(conn, catalogue, row.id, row.owner_account_id, captured_at)
    prefs = AlertPrefs(
        message_alerts=row.message_alerts if row.message_alerts is not None else True,
        event_kinds=frozenset(row.event_kinds) if row.event_kinds is not None else None,
        muted=bool(row.muted),
        snoozed_until=row.snoozed_until,
    )
    last_seen = row.last_seen_at if row.online else None
    return Target(
        row.id,
        row.owner_account_id,
        row.region,
        prefs,
        row.event_kind,
        last_seen,
        cover,
        row.binding_id,
        row.bound_at,
    )


async def record_dead_letter(
    conn: AsyncConnection,
    now: datetime,
    topic: str,
    serial: str,
    reason: str,
    detail: str,
    payload: bytes,
    header: dict[str, object] | None = None,
    budget: TokenBuckets | None = None,
) -> None:
    """Records a message that can never be processed (its header, never its body); logs and counts it.
    Every text is cleaned of control characters and cut to its column (PostgreSQL refuses a NUL). With a
    ``budget`` (per camera), a dead letter past it is counted and not written."""
    if budget is not None and not budget.take(serial or topic[:64], time.monotonic()):
        metrics.DEAD_LETTERS.labels(printable(reason, 64)).inc()
        metrics.DEAD_LETTERS_NOT_WRITTEN.inc()
        return
    topic, serial, reason, detail = (
        printable(topic, 300),
        printable(serial, 32),
        printable(reason, 64),
        printable(detail, 500),
    )
    log.info("dead letter from %s: %s (%s)", serial or topic[:64], reason, detail)
    await conn.execute(
        insert(dead_letters).values(
            topic=topic,
            serial=serial,
            reason=reason,
            detail=detail,
            header=decode_json_header(payload[:8192]) if header is None else header,
            payload_bytes=len(payload),
            received_at=now,
        )
    )
    metrics.DEAD_LETTERS.labels(reason).inc()
