"""Subscription rows as the plans service reads and changes them: a row with its id (``Held``), a
device's chain of plans, the conditional updates that settle races, and their audit entries."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.db.tables import subscriptions
from gateway.domain import plans as rules
from gateway.domain.plans import Billing, Catalogue, Money, Status, Subscription
from gateway.domain.plans.subscriptions import successor
from gateway.errors import Conflict
from gateway.services import audit
from gateway.services.coverage import subscription_from_row


@dataclass(frozen=True)
class Held:
    """A recorded subscription with its id."""

    id: str
    subscription: Subscription
    renewal_of: str | None


def held_from_row(row: Row[tuple[object, ...]]) -> Held:
    """A ``subscriptions`` row as a ``Held``."""
    return Held(row._mapping["id"], subscription_from_row(row), row._mapping["renewal_of"])


async def repeated_purchase(
    conn: AsyncConnection, account_id: str, sub_id: str, device_id: str, plan_id: str, billing: Billing
) -> Held | None:
    """The purchase already made with this idempotency key, if any; a different purchase under the same
    key is refused rather than answered with the first one."""
    row = (
        await conn.execute(
            select(subscriptions).where(
                subscriptions.c.id == sub_id, subscriptions.c.account_id == account_id
            )
        )
    ).first()
    if row is None:
        return None
    first = held_from_row(row)
    sub = first.subscription
    if (sub.device_id, sub.plan_id, sub.billing) != (device_id, plan_id, billing):
        raise Conflict("idempotency_key_reused", "this Idempotency-Key was used for a different purchase")
    return first


async def record_cancel(conn: AsyncConnection, held: Held, after: Subscription, now: datetime) -> None:
    """Records a cancel's decision, conditional on what was read: of two cancels (or a cancel and a
    renewal claiming the period) one wins."""
    sub = held.subscription
    won = await conn.execute(
        update(subscriptions)
        .where(
            subscriptions.c.id == held.id,
            subscriptions.c.status == sub.status.value,
            subscriptions.c.auto_renew == sub.auto_renew,
            subscriptions.c.ends_at == sub.ends_at,
        )
        .values(status=after.status.value, ends_at=after.ends_at, auto_renew=False, updated_at=now)
    )
    if won.rowcount != 1:
        raise Conflict("subscription_changed", "the subscription changed meanwhile; read it again")


def queued_renewal(chain: list[Held], period_id: str, at: datetime) -> Held | None:
    """The renewal of ``period_id`` made ahead of its end and not started at ``at``, if any."""
    return next(
        (
            h
            for h in chain
            if h.renewal_of == period_id and rules.status_at(h.subscription, at) is Status.QUEUED
        ),
        None,
    )


async def follow_on(
    conn: AsyncConnection, chain: list[Held], cancelled: Held, after: Subscription, now: datetime
) -> None:
    """Moves the plans queued behind ``cancelled`` up so they follow on without a gap, when its paid
    period got shorter (an annual refund) or it will never start (a queued plan refunded)."""
    before = cancelled.subscription
    if after.status is Status.REFUNDED:
        cursor = before.starts_at
    elif after.ends_at < before.ends_at:
        cursor = after.ends_at
    else:
        return
    later = sorted(
        (
            h
            for h in chain
            if h.id != cancelled.id
            and h.renewal_of != cancelled.id
            and h.subscription.starts_at >= before.ends_at
            and rules.status_at(h.subscription, now) is Status.QUEUED
        ),
        key=lambda h: h.subscription.starts_at,
    )
    for held in later:
        sub = held.subscription
        moved = successor(sub, cursor)
        won = await conn.execute(
            update(subscriptions)
            .where(
                subscriptions.c.id == held.id,
                subscriptions.c.status == sub.status.value,
                subscriptions.c.starts_at == sub.starts_at,
            )
            .values(
                starts_at=moved.starts_at, ends_at=moved.ends_at, anchor_at=moved.anchor_at, updated_at=now
            )
        )
        if won.rowcount != 1:
            raise Conflict("subscription_changed", "a queued plan changed meanwhile; read it again")
        await audit_subscription(
            conn,
            "plan.rescheduled",
            held.id,
            moved,
            now,
            reason="earlier_plan_cancelled",
            extra={"after": cancelled.id, "was_starts_at": sub.starts_at.isoformat()},
        )
        cursor = moved.ends_at


def describe(catalogue: Catalogue, sub: Subscription) -> str:
    """A ledger line for a payment for ``sub``."""
    name = catalogue.plan(sub.plan_id).name
    return f"{name}, {sub.billing}, {sub.starts_at:%Y-%m-%d} to {sub.ends_at:%Y-%m-%d}"[:200]


async def audit_subscription(
    conn: AsyncConnection,
    action: str,
    sub_id: str,
    sub: Subscription,
    at: datetime,
    *,
    address: str = "",
    reason: str | None = None,
    extra: dict[str, object] | None = None,
    **amounts: Money,
) -> None:
    """An audit entry about a subscription; with a ``reason`` the actor is the system (renewals)."""
    detail: dict[str, object] = {
        "device_id": sub.device_id,
        "plan_id": sub.plan_id,
        "billing": sub.billing.value,
        "status": sub.status.value,
        "starts_at": sub.starts_at.isoformat(),
        "ends_at": sub.ends_at.isoformat(),
    }
    detail.update({name: {"amount": m.minor, "currency": m.currency} for name, m in amounts.items()})
    if reason is not None:
        detail["reason"] = reason
    detail.update(extra or {})
    await audit.record(
        conn,
        account_id=sub.account_id,
        actor="system" if reason is not None else f"account:{sub.account_id}",
        action=action,
        target_type="subscription",
        target_id=sub_id,
        detail=detail,
        at=at,
        address=address,
    )
