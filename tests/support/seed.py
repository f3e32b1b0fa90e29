"""Rows and objects put straight into the database and the store, for tests of what reads them."""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import insert

from device_sim.registry import SimDevice, new_fleet
from gateway.adapters.db.tables import clips, subscriptions
from gateway.bootstrap import Services
from gateway.domain.plans import Billing, purchase
from gateway.services.coverage import subscription_values
from gateway.services.registry import import_registry
from storage.keys import clip_key


async def import_fleet(services: Services, count: int) -> list[SimDevice]:
    """``count`` new simulated cameras imported through the registry service."""
    devices = new_fleet(count)
    rows = [
        (
            i + 2,  # the CSV line number, as an import from a file would report it
            {
                "serial": d.serial,
                "verification_code": d.code,
                "model": d.model,
                "broker_secret": d.broker_secret,
            },
        )
        for i, d in enumerate(devices)
    ]
    report = await import_registry(services.engine, services.pepper, services.clock, rows)
    assert report.imported == len(devices), report.rejected
    return devices


async def seed_subscription(
    services: Services, account_id: str, device_id: str, *, plan_id: str = "trial", at: datetime | None = None
) -> str:
    """Records a plan for the device as if bought at ``at`` (default now), decided by the plan rules."""
    now = at or services.clock.now()
    billing = Billing.TRIAL if plan_id == "trial" else Billing.MONTHLY
    decided = purchase(
        services.settings.catalogue(),
        plan_id,
        billing,
        device_id=device_id,
        account_id=account_id,
        now=now,
        existing=[],
        account_trial_used=False,
        account_trial_device=None,
    )
    sub_id = str(uuid.uuid4())
    async with services.engine.begin() as conn:
        await conn.execute(
            insert(subscriptions).values(
                id=sub_id, created_at=now, updated_at=now, **subscription_values(decided.subscription)
            )
        )
    return sub_id


async def seed_clip(
    services: Services,
    account_id: str,
    device_id: str,
    *,
    data: bytes = b"\x1a\x45\xdf\xa3 not really a webm",
    captured_at: datetime | None = None,
    retain_days: int = 7,
    region: str = "sg",
) -> str:
    """Stores an object and its clip row; returns the clip id."""
    captured = captured_at or services.clock.now()
    clip_id = str(uuid.uuid4())
    key = clip_key(account_id, device_id, clip_id, captured)
    await services.stores.for_region(region).put(key, data, content_type="video/webm")
    async with services.engine.begin() as conn:
        await conn.execute(
            insert(clips).values(
                id=clip_id,
                account_id=account_id,
                device_id=device_id,
                camera_clip_id=clip_id,
                region=region,
                key=key,
                content_type="video/webm",
                bytes=len(data),
                plan_id="trial",
                captured_at=captured,
                received_at=captured,
                stored_at=captured,
                retain_until=captured + timedelta(days=retain_days),
            )
        )
    return clip_id
