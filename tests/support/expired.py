"""Media for the retention sweep's tests: accounts, devices, events and clips put straight into the
database, their objects written through the store, and a look at what is left in a store."""

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from gateway.adapters.db.tables import accounts, clips, devices, events, push_outbox
from gateway.bootstrap import Services
from storage.keys import clip_key, snapshot_key, thumbnail_key
from tests.support.s3server import S3Bucket, S3Server

REGION = "sg"


@dataclass(frozen=True)
class Seeded:
    """One record and the objects it names."""

    table: str  # events | clips
    id: str
    account_id: str
    keys: tuple[str, ...]
    bytes: int  # what the record says (snapshot or clip size)


def region_settings(bucket: S3Bucket | None) -> dict[str, Any]:
    """Settings overrides putting region sg on ``bucket`` (None: the default local folders)."""
    if bucket is None:
        return {}
    return {"regions": {REGION: {"display_name": "Singapore", "store": bucket.settings()}}}


async def new_account(services: Services, region: str = REGION) -> tuple[str, str]:
    """An account with one device bound to it; returns (account id, device id)."""
    account_id, device_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = services.clock.now()
    async with services.engine.begin() as conn:
        await conn.execute(
            insert(accounts).values(
                id=account_id,
                email=f"{account_id}@example.com",
                password_hash="x",
                birth_date=date(1990, 1, 1),
                region=region,
                status="active",
                created_at=now,
            )
        )
        await conn.execute(
            insert(devices).values(
                id=device_id,
                serial=f"CG{uuid.uuid4().hex[:12].upper()}",
                model="CG-Sim-720",
                code_hash="x",
                broker_secret_hash="x",
                owner_account_id=account_id,
                imported_at=now,
            )
        )
    return account_id, device_id


async def seed_event(
    services: Services,
    account_id: str,
    device_id: str,
    retain_until: datetime,
    *,
    size: int = 300,
    region: str = REGION,
    captured_at: datetime | None = None,
) -> Seeded:
    """An event row with its snapshot and thumbnail written to the store, and its push outbox row."""
    event_id, camera_event_id = str(uuid.uuid4()), f"ev-{uuid.uuid4().hex[:10]}"
    captured = captured_at or services.clock.now()
    snap = snapshot_key(account_id, device_id, camera_event_id, captured)
    thumb = thumbnail_key(account_id, device_id, camera_event_id, captured)
    store = services.stores.for_region(region)
    await store.put(snap, b"s" * size, content_type="image/jpeg")
    await store.put(thumb, b"t" * 50, content_type="image/jpeg")
    async with services.engine.begin() as conn:
        await conn.execute(
            insert(events).values(
                id=event_id,
                account_id=account_id,
                device_id=device_id,
                camera_event_id=camera_event_id,
                kind="motion",
                captured_at=captured,
                received_at=captured,
                stored_at=captured,
                region=region,
                snapshot_key=snap,
                thumbnail_key=thumb,
                snapshot_bytes=size,
                width=64,
                height=64,
                retain_until=retain_until,
            )
        )
        await conn.execute(
            insert(push_outbox).values(
                event_id=event_id, account_id=account_id, created_at=captured, next_attempt_at=captured
            )
        )
    return Seeded("events", event_id, account_id, (snap, thumb), size)


async def seed_clip(
    services: Services,
    account_id: str,
    device_id: str,
    retain_until: datetime,
    *,
    size: int = 700,
    region: str = REGION,
) -> Seeded:
    """A clip row with its object written to the store."""
    clip_id = str(uuid.uuid4())
    captured = services.clock.now()
    key = clip_key(account_id, device_id, clip_id, captured)
    await services.stores.for_region(region).put(key, b"c" * size, content_type="video/webm")
    async with services.engine.begin() as conn:
        await conn.execute(
            insert(clips).values(
                id=clip_id,
                account_id=account_id,
                device_id=device_id,
                camera_clip_id=f"clip-{clip_id[:8]}",
                region=region,
                key=key,
                content_type="video/webm",
                bytes=size,
                plan_id="trial",
                captured_at=captured,
                received_at=captured,
                stored_at=captured,
                retain_until=retain_until,
            )
        )
    return Seeded("clips", clip_id, account_id, (key,), size)


async def seed_many(
    services: Services, count: int, retain_until: datetime, accounts_count: int = 3
) -> list[Seeded]:
    """``count`` records (two events for each clip) spread over a few accounts."""
    owners = [await new_account(services) for _ in range(accounts_count)]
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> Seeded:
        account_id, device_id = owners[i % len(owners)]
        async with gate:
            if i % 3 == 2:
                return await seed_clip(services, account_id, device_id, retain_until, size=100 + i)
            return await seed_event(services, account_id, device_id, retain_until, size=100 + i)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def count_rows(services: Services, table: Any) -> int:
    """Rows in a table."""
    async with services.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


def stored_entries(services: Services, bucket: S3Bucket | None, server: S3Server | None) -> set[str]:
    """Every key the region's store holds: every version and delete marker in a bucket, files locally."""
    if bucket is not None:
        assert server is not None
        client = server.admin()
        try:
            found = set()
            for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket.name):
                for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    found.add(entry["Key"])
            return found
        finally:
            client.close()
    root = Path(services.settings.data_dir) / "media" / REGION
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).as_posix().startswith(".meta/")
    }


def expired_at(services: Services) -> datetime:
    """A retain_until already past."""
    return services.clock.now() - timedelta(seconds=1)


def later(services: Services, days: int = 30) -> datetime:
    """A retain_until in the future."""
    return services.clock.now() + timedelta(days=days)


def real_now() -> datetime:
    """The wall clock (what S3 and the file system stamp objects with), whole seconds."""
    return datetime.now(UTC).replace(microsecond=0)
