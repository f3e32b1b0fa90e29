"""Which plan covers a device at a given time, and how much an account may store: the reads that ingest,
the media API and the plans API share.

Only subscriptions of the device's **current owner** count: a plan belongs to the device and the account
that bought it (terms 7.1), so after an unbind and a bind elsewhere the new owner starts on the free plan.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ScalarSelect, Select, func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.db.tables import clip_parts, clip_uploads, clips, devices, events, subscriptions
from gateway.domain.plans import (
    Billing,
    Catalogue,
    Money,
    PlanSpec,
    Retention,
    Status,
    Subscription,
    active_on,
    retention_for,
)

MB = 1024 * 1024


def subscription_from_row(row: Row[tuple[object, ...]]) -> Subscription:
    """The domain value of a ``subscriptions`` row."""
    m = row._mapping

    def money(column: str) -> Money:
        return Money(m[column], m["currency"])

    return Subscription(
        device_id=m["device_id"],
        account_id=m["account_id"],
        plan_id=m["plan_id"],
        billing=Billing(m["billing"]),
        starts_at=m["starts_at"],
        ends_at=m["ends_at"],
        status=Status(m["status"]),
        amount_paid=money("amount_paid"),
        monthly_price=money("monthly_price"),
        credits_given=money("credits_given"),
        auto_renew=m["auto_renew"],
        anchor_at=m["anchor_at"],
        period=m["period"],
    )


def subscription_values(sub: Subscription) -> dict[str, object]:
    """The ``subscriptions`` columns of a domain value (without id and timestamps)."""
    return {
        "device_id": sub.device_id,
        "account_id": sub.account_id,
        "plan_id": sub.plan_id,
        "billing": sub.billing.value,
        "status": sub.status.value,
        "starts_at": sub.starts_at,
        "ends_at": sub.ends_at,
        "anchor_at": sub.anchor_at,
        "period": sub.period,
        "currency": sub.amount_paid.currency,
        "amount_paid": sub.amount_paid.minor,
        "monthly_price": sub.monthly_price.minor,
        "credits_given": sub.credits_given.minor,
        "auto_renew": sub.auto_renew,
    }


def of_device(account_id: str, device_id: str) -> Select[Any]:
    """The query of every subscription the account bought for the device, oldest first."""
    return (
        select(subscriptions)
        .where(subscriptions.c.device_id == device_id, subscriptions.c.account_id == account_id)
        .order_by(subscriptions.c.starts_at, subscriptions.c.created_at)
    )


async def device_subscriptions(conn: AsyncConnection, device_id: str, account_id: str) -> list[Subscription]:
    """Every subscription the account bought for the device, oldest first."""
    return [subscription_from_row(r) for r in await conn.execute(of_device(account_id, device_id))]


@dataclass(frozen=True)
class Coverage:
    """The plan covering one device at one instant, and the retention of what is captured then."""

    plan: PlanSpec
    subscription: Subscription | None  # None: the free plan
    retention: Retention


async def coverage_at(
    conn: AsyncConnection, catalogue: Catalogue, device_id: str, account_id: str, at: datetime
) -> Coverage:
    """The plan in force for the device (under ``account_id``) at ``at``: a subscription's, else free."""
    sub = active_on(await device_subscriptions(conn, device_id, account_id), at)
    plan = catalogue.plan(sub.plan_id) if sub is not None else catalogue.free
    return Coverage(plan, sub, retention_for(catalogue, sub, at))


async def quota_bytes(conn: AsyncConnection, catalogue: Catalogue, account_id: str, at: datetime) -> int:
    """The account's storage quota at ``at``: the sum over its devices of their plan's quota."""
    owned = (
        await conn.execute(select(devices.c.id).where(devices.c.owner_account_id == account_id))
    ).scalars()
    total = 0
    for device_id in owned:
        total += (await coverage_at(conn, catalogue, device_id, account_id, at)).plan.storage_quota_mb * MB
    return total


@dataclass(frozen=True)
class Usage:
    """What an account stores now: snapshots with their thumbnails, clips, and the parts staged for its
    clips in progress (they take space in the database until the clip is stored or dropped)."""

    snapshot_count: int
    snapshot_bytes: int
    clip_count: int
    clip_bytes: int
    staged_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Everything the quota counts."""
        return self.snapshot_bytes + self.clip_bytes + self.staged_bytes


def staged_bytes(account_id: str) -> ScalarSelect[Any]:
    """The bytes staged in ``clip_parts`` for the account's clips in progress (a dropped clip's parts
    are deleted with its drop)."""
    return (
        select(func.coalesce(func.sum(func.length(clip_parts.c.data)), 0))
        .select_from(clip_parts.join(clip_uploads, clip_uploads.c.id == clip_parts.c.upload_id))
        .where(clip_uploads.c.account_id == account_id)
        .scalar_subquery()
    )


async def usage(conn: AsyncConnection, account_id: str) -> Usage:
    """The account's stored objects, from the records (thumbnails count with their snapshot), and its
    staged clip parts."""
    snaps = events.c.account_id == account_id
    mine = clips.c.account_id == account_id
    query = select(
        select(func.count()).where(snaps).scalar_subquery(),
        select(func.coalesce(func.sum(events.c.snapshot_bytes + events.c.thumbnail_bytes), 0))
        .where(snaps)
        .scalar_subquery(),
        select(func.count()).where(mine).scalar_subquery(),
        select(func.coalesce(func.sum(clips.c.bytes), 0)).where(mine).scalar_subquery(),
        staged_bytes(account_id),
    )
    snap_n, snap_b, clip_n, clip_b, staged = (await conn.execute(query)).one()
    return Usage(int(snap_n), int(snap_b), int(clip_n), int(clip_b), int(staged))
