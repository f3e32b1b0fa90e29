"""Alert opt-outs: the account's message-alert switch and event kinds, per-device mute and snooze.

A device's mute and snooze belong to its current binding: a past binding's (the previous owner's, or the
same owner's before an unbind) are never read, shown or published.

Every change is recorded in the audit log with its old and new value (the consent history) and pushed
to the affected cameras as their retained config, so they stop sending what nobody wants collected.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.adapters.db.dialect import upsert
from gateway.adapters.db.tables import alert_settings, device_alert_settings, devices
from gateway.domain.alerts import AlertPrefs
from gateway.errors import NotFound
from gateway.ports import Clock, Publisher
from gateway.services import audit
from gateway.wire import Channel, ConfigHeader, encode, topic


@dataclass(frozen=True)
class AccountAlerts:
    message_alerts: bool
    event_kinds: list[str] | None
    updated_at: datetime | None


@dataclass(frozen=True)
class DeviceAlerts:
    muted: bool
    snoozed_until: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class _Owned:
    serial: str
    binding_id: str | None


class AlertSettingsService:
    """Reads and changes opt-outs, and tells the cameras."""

    def __init__(self, engine: AsyncEngine, publisher: Publisher, clock: Clock) -> None:
        self._db = engine
        self._publisher = publisher
        self._clock = clock

    async def account(self, account_id: str) -> AccountAlerts:
        """The account's settings (defaults: alerts on, every kind)."""
        async with self._db.connect() as conn:
            return await self._account(conn, account_id)

    async def _account(self, conn: AsyncConnection, account_id: str) -> AccountAlerts:
        row = (
            await conn.execute(select(alert_settings).where(alert_settings.c.account_id == account_id))
        ).first()
        if row is None:
            return AccountAlerts(True, None, None)
        return AccountAlerts(row.message_alerts, row.event_kinds, row.updated_at)

    async def set_account(
        self, account_id: str, *, message_alerts: bool, event_kinds: list[str] | None, address: str
    ) -> AccountAlerts:
        """Changes the account's settings; audited and published to every camera of the account."""
        now = self._clock.now()
        kinds = sorted(set(event_kinds)) if event_kinds is not None else None
        async with self._db.begin() as conn:
            before = await self._account(conn, account_id)
            await upsert(
                conn,
                alert_settings,
                {
                    "account_id": account_id,
                    "message_alerts": message_alerts,
                    "event_kinds": kinds,
                    "updated_at": now,
                },
                ("account_id",),
            )
            await audit.record(
                conn,
                account_id=account_id,
                actor=f"account:{account_id}",
                action="consent.alerts_changed",
                target_type="account",
                target_id=account_id,
                detail={
                    "message_alerts": {"from": before.message_alerts, "to": message_alerts},
                    "event_kinds": {"from": before.event_kinds, "to": kinds},
                },
                at=now,
                address=address,
            )
            serials = (
                await conn.execute(select(devices.c.serial).where(devices.c.owner_account_id == account_id))
            ).scalars()
            for serial in list(serials):
                await self._publish(conn, serial)
        return AccountAlerts(message_alerts, kinds, now)

    async def device(self, account_id: str, device_id: str) -> DeviceAlerts:
        """A device's mute and snooze in its current binding (the caller must own it)."""
        async with self._db.connect() as conn:
            owned = await self._owned(conn, account_id, device_id)
            return await self._device(conn, device_id, owned.binding_id)

    async def _device(self, conn: AsyncConnection, device_id: str, binding_id: str | None) -> DeviceAlerts:
        row = (
            await conn.execute(
                select(device_alert_settings).where(
                    device_alert_settings.c.device_id == device_id,
                    device_alert_settings.c.binding_id == binding_id,
                )
            )
        ).first()
        if row is None:
            return DeviceAlerts(False, None, None)
        return DeviceAlerts(row.muted, row.snoozed_until, row.updated_at)

    async def set_device(
        self, account_id: str, device_id: str, *, muted: bool, snooze_minutes: int | None, address: str
    ) -> DeviceAlerts:
        """Mutes/unmutes a device and snoozes it for N minutes (0 ends a snooze)."""
        now = self._clock.now()
        async with self._db.begin() as conn:
            owned = await self._owned(conn, account_id, device_id)
            before = await self._device(conn, device_id, owned.binding_id)
            if snooze_minutes is None:
                until = before.snoozed_until
            else:
                until = now + timedelta(minutes=snooze_minutes) if snooze_minutes > 0 else None
            values = {
                "device_id": device_id,
                "account_id": account_id,
                "binding_id": owned.binding_id,  # replaces a past binding's row
                "muted": muted,
                "snoozed_until": until,
                "updated_at": now,
            }
            await upsert(conn, device_alert_settings, values, ("device_id",))
            await audit.record(
                conn,
                account_id=account_id,
                actor=f"account:{account_id}",
                action="consent.device_alerts_changed",
                target_type="device",
                target_id=device_id,
                detail={
                    "muted": {"from": before.muted, "to": muted},
                    "snoozed_until": {
                        "from": before.snoozed_until.isoformat() if before.snoozed_until else None,
                        "to": until.isoformat() if until else None,
                    },
                },
                at=now,
                address=address,
            )
            await self._publish(conn, owned.serial)
        return DeviceAlerts(muted, until, now)

    async def publish_for(self, serial: str) -> None:
        """Publishes a camera's effective config (after binding or unbinding it)."""
        async with self._db.connect() as conn:
            await self._publish(conn, serial)

    async def _owned(self, conn: AsyncConnection, account_id: str, device_id: str) -> _Owned:
        row = (
            await conn.execute(
                select(devices.c.serial, devices.c.binding_id).where(
                    devices.c.id == device_id, devices.c.owner_account_id == account_id
                )
            )
        ).first()
        if row is None:
            raise NotFound("device_not_found", "no such device")
        return _Owned(row.serial, row.binding_id)

    async def _publish(self, conn: AsyncConnection, serial: str) -> None:
        row = (
            await conn.execute(
                select(devices.c.id, devices.c.owner_account_id, devices.c.binding_id).where(
                    devices.c.serial == serial
                )
            )
        ).first()
        if row is None:
            return
        if row.owner_account_id is None:
            prefs = AlertPrefs(message_alerts=False)  # nobody to alert
        else:
            acct = await self._account(conn, row.owner_account_id)
            dev = await self._device(conn, row.id, row.binding_id)
            prefs = AlertPrefs(
                acct.message_alerts,
                frozenset(acct.event_kinds) if acct.event_kinds is not None else None,
                dev.muted,
                dev.snoozed_until,
            )
        header = ConfigHeader(
            alerts_enabled=prefs.message_alerts and not prefs.muted,
            event_kinds=sorted(prefs.event_kinds) if prefs.event_kinds is not None else None,
            snoozed_until=prefs.snoozed_until,
            issued_at=self._clock.now(),
        )
        self._publisher.publish(topic(serial, Channel.CONFIG), encode(header), retain=True)
