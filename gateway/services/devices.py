"""Devices: binding by serial + label code, unbinding, listing. Every query is scoped to its owner."""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.adapters.db.tables import device_presence, devices
from gateway.config import Settings
from gateway.domain.binding import BindFacts, BindOutcome, decide_bind
from gateway.domain.credentials import hash_label_code, label_code_matches, normalise_code
from gateway.errors import Conflict, InvalidRequest, Locked, NotFound, RateLimited
from gateway.ports import Clock
from gateway.services import audit, throttle
from gateway.services.throttle import Window

_SERIAL_MAX = 32


@dataclass(frozen=True)
class Device:
    id: str
    serial: str
    model: str
    name: str
    bound_at: datetime | None
    online: bool | None = None  # None: never heard from
    last_seen_at: datetime | None = None
    firmware: str | None = None


_DEVICE_COLUMNS = (
    devices.c.id,
    devices.c.serial,
    devices.c.model,
    devices.c.name,
    devices.c.bound_at,
    device_presence.c.online,
    device_presence.c.last_seen_at,
    device_presence.c.firmware,
)
_WITH_PRESENCE = devices.outerjoin(device_presence, device_presence.c.device_id == devices.c.id)


class DeviceService:
    """Binding and the owner's view of their devices."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        pepper: bytes,
        clock: Clock,
        *,
        on_owner_change: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._db = engine
        self._on_owner_change = on_owner_change
        self._pepper = pepper
        self._clock = clock
        self._per_serial = Window("bind_serial", *settings.throttle.bind_per_serial)
        self._per_account = Window("bind_account", *settings.throttle.bind_per_account)
        # Compared against when the serial is unknown, so both paths do the same work.
        self._decoy_hash = hash_label_code(pepper, "decoy", "AAAAAA")

    async def bind(
        self, account_id: str, raw_serial: str, code: str, *, name: str, address: str
    ) -> tuple[BindOutcome, Device]:
        """Binds a device to the caller. Returns BOUND or ALREADY_YOURS; raises for every refusal."""
        serial = raw_serial.strip().upper()
        if not serial or len(serial) > _SERIAL_MAX or not serial.isalnum():
            raise InvalidRequest("invalid_serial", "serial: 1 to 32 letters and digits")
        now = self._clock.now()
        actor = f"account:{account_id}"
        async with self._db.begin() as conn:
            # Reserved before the code is compared, atomically: parallel guesses cannot pass the limits.
            held = await throttle.reserve(
                conn, now, (self._per_account, account_id), (self._per_serial, serial)
            )
            if held.refused is not None and held.refused.window is self._per_account:
                raise RateLimited(
                    "bind_rate_limited",
                    "too many failed binding attempts from this account",
                    retry_after=held.refused.retry_after or self._per_account.seconds,
                )
            row = (await conn.execute(select(devices).where(devices.c.serial == serial))).mappings().first()
            stored = row["code_hash"] if row is not None else self._decoy_hash
            matches = label_code_matches(self._pepper, serial, normalise_code(code), stored)
            failures = held.refused.prior if held.refused is not None else held.granted[-1].prior
            facts = BindFacts(
                device_known=row is not None,
                code_matches=matches,
                owner_account_id=row["owner_account_id"] if row is not None else None,
                recent_failures_for_serial=failures,
            )
            outcome = decide_bind(
                facts, caller_account_id=account_id, lockout_threshold=self._per_serial.limit
            )
            if outcome is BindOutcome.LOCKED:
                retry = (held.refused.retry_after if held.refused else None) or self._per_serial.seconds
                await held.refund(conn)  # a try refused by the lock is not the account's failure
                await audit.record(
                    conn,
                    account_id=account_id,
                    actor=actor,
                    action="device.bind_locked",
                    detail={"serial": serial},
                    at=now,
                    address=address,
                )
                locked = Locked(
                    "device_locked",
                    "too many wrong codes for this serial; binding it is paused",
                    retry_after=retry,
                )
            elif outcome is BindOutcome.REJECTED:  # the reservations stand as the failure records
                await audit.record(
                    conn,
                    account_id=account_id,
                    actor=actor,
                    action="device.bind_failed",
                    detail={"serial": serial},
                    at=now,
                    address=address,
                )
            else:  # the code was right: not a failed attempt
                await held.refund(conn)
        # Refusals are raised after the block so that their counters and audit entries commit.
        if outcome is BindOutcome.LOCKED:
            raise locked
        if outcome is BindOutcome.REJECTED:
            # One answer for an unknown serial and a wrong code: same status, body and work done.
            raise InvalidRequest(
                "invalid_serial_or_code", "the serial number or the verification code is wrong"
            )
        assert row is not None
        if outcome is BindOutcome.BOUND_ELSEWHERE:
            raise Conflict(
                "device_bound_elsewhere",
                "this camera is bound to another account; its owner must unbind it first",
            )
        if outcome is BindOutcome.BOUND:
            async with self._db.begin() as conn:
                claimed = await conn.execute(
                    update(devices)
                    .where(devices.c.id == row["id"], devices.c.owner_account_id.is_(None))
                    .values(
                        owner_account_id=account_id,
                        bound_at=now,
                        binding_id=new_binding_id(),
                        name=name or row["model"],
                    )
                )
                if claimed.rowcount == 0:  # someone else bound it between our read and this write
                    raise Conflict("device_bound_elsewhere", "this camera was just bound to another account")
                await self._per_serial.clear(conn, serial)
                await audit.record(
                    conn,
                    account_id=account_id,
                    actor=actor,
                    action="device.bound",
                    target_type="device",
                    target_id=row["id"],
                    detail={"serial": serial},
                    at=now,
                    address=address,
                )
            await self._owner_changed(serial)
        return outcome, await self.get(account_id, row["id"])

    async def _owner_changed(self, serial: str) -> None:
        # The camera's config follows its owner: the new owner's opt-outs, or no alerts when unbound.
        if self._on_owner_change is not None:
            await self._on_owner_change(serial)

    async def get(self, account_id: str, device_id: str) -> Device:
        """One of the caller's devices; another account's device is NotFound, like a missing one."""
        async with self._db.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(devices).where(
                            devices.c.id == device_id, devices.c.owner_account_id == account_id
                        )
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound("device_not_found", "no such device")
        return Device(row["id"], row["serial"], row["model"], row["name"], row["bound_at"])

    async def list(self, account_id: str) -> list[Device]:
        """The caller's devices, in binding order."""
        query = (
            select(*_DEVICE_COLUMNS)
            .select_from(_WITH_PRESENCE)
            .where(devices.c.owner_account_id == account_id)
            .order_by(devices.c.bound_at)
        )
        async with self._db.connect() as conn:
            return [Device(*row) for row in await conn.execute(query)]

    async def rename(self, account_id: str, device_id: str, name: str) -> Device:
        """Renames one of the caller's devices."""
        async with self._db.begin() as conn:
            result = await conn.execute(
                update(devices)
                .where(devices.c.id == device_id, devices.c.owner_account_id == account_id)
                .values(name=name)
            )
        if result.rowcount == 0:
            raise NotFound("device_not_found", "no such device")
        return await self.get(account_id, device_id)

    async def unbind(self, account_id: str, device_id: str, *, address: str) -> None:
        """Returns the device to unbound. Its plans stay with the device (they are not transferable)."""
        now = self._clock.now()
        async with self._db.begin() as conn:
            serial = (
                await conn.execute(
                    select(devices.c.serial).where(
                        devices.c.id == device_id, devices.c.owner_account_id == account_id
                    )
                )
            ).scalar()
            if serial is None:
                raise NotFound("device_not_found", "no such device")
            await conn.execute(
                update(devices)
                .where(devices.c.id == device_id, devices.c.owner_account_id == account_id)
                .values(owner_account_id=None, bound_at=None, binding_id=None, name="")
            )
            await audit.record(
                conn,
                account_id=account_id,
                actor=f"account:{account_id}",
                action="device.unbound",
                target_type="device",
                target_id=device_id,
                at=now,
                address=address,
            )
        await self._owner_changed(serial)


def new_device_id() -> str:
    """A fresh public device id."""
    return str(uuid.uuid4())


def new_binding_id() -> str:
    """A fresh binding id: what the camera sends from now on is this binding's alone."""
    return str(uuid.uuid4())
