"""Plans as use cases: buy for a device, list a device's plans, quote and cancel, refuse transfers, renew
monthly plans, and report the account's storage against its quota. The rules are the domain's
(gateway/domain/plans); this module gathers the facts, serialises the decisions and records the money.

Every charge and refund goes through the ``PaymentProvider`` port and lands in the ``payments`` ledger in
the same transaction as the subscription change it pays for. The provider is called last, after the
writes that can fail on a constraint, so a refusal (``PaymentDeclined``) rolls everything back; should
the commit still fail after a charge, the charge is refunded at the provider (nothing was recorded).
"""

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import Select, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.adapters import payments as ledger
from gateway.adapters.db.tables import devices, subscriptions, trial_claims
from gateway.adapters.payments import PaymentDeclined
from gateway.domain import plans as rules
from gateway.domain.plans import Billing, Catalogue, Money, PlanRefused, PlanSpec, Status, Subscription
from gateway.errors import Conflict, NotFound
from gateway.ports import Clock, PaymentProvider, Receipt
from gateway.services import audit
from gateway.services.coverage import Usage, quota_bytes, subscription_from_row, subscription_values, usage

log = logging.getLogger(__name__)

# Monthly periods are renewed this long before they end, so that a job running every hour renews them
# before the old period is over: a device never drops to the free plan between two paid periods.
RENEW_AHEAD = timedelta(hours=2)
HISTORY = 50  # subscriptions listed per device (a monthly plan adds one a month)
_CATCH_UP_ROUNDS = 24  # one period per round: two years of missed runs; any rest, on the next run


@dataclass(frozen=True)
class Held:
    """A recorded subscription with its id."""

    id: str
    subscription: Subscription
    renewal_of: str | None


@dataclass(frozen=True)
class DevicePlans:
    """A device's plans at ``at``: the one in force, the queued ones and the recent history."""

    at: datetime
    plan: PlanSpec  # in force now: the current subscription's plan, else the free plan
    current: Held | None
    queued: list[Held]
    items: list[Held]  # newest first


@dataclass(frozen=True)
class Quote:
    """What cancelling at ``at`` would give: the refund, the status and the end of access."""

    refund: Money
    status: Status
    ends_at: datetime


@dataclass(frozen=True)
class RenewalReport:
    renewed: int = 0
    declined: int = 0  # the provider refused: ended without renewal
    stopped: int = 0  # the device left the account: ended without charging
    failed: int = 0  # an unexpected error: retried on the next run


def shown_status(sub: Subscription, at: datetime) -> Status:
    """The status to show at ``at``. A monthly period renewed ahead of its end (``RENEW_AHEAD``) is
    recorded ENDED but still in force until then: it shows as active, or cancelled if not renewed."""
    state = rules.status_at(sub, at)
    if state is Status.ENDED and rules.in_force(sub, at):
        return Status.ACTIVE if sub.auto_renew else Status.CANCELLED
    return state


def as_decided(sub: Subscription, at: datetime) -> Subscription:
    """``sub`` as the purchase rules should see it at ``at``: a period recorded ENDED ahead of its end is
    one that will not renew by itself, like a cancelled one, so a new plan queues behind it."""
    if sub.status is Status.ENDED and rules.in_force(sub, at):
        return replace(sub, status=Status.CANCELLED, auto_renew=False)
    return sub


def _held(row: Row[tuple[object, ...]]) -> Held:
    return Held(row._mapping["id"], subscription_from_row(row), row._mapping["renewal_of"])


class PlanService:
    """Plans bought per device, their payments, and renewals."""

    def __init__(
        self, engine: AsyncEngine, catalogue: Catalogue, payments: PaymentProvider, clock: Clock
    ) -> None:
        self._db = engine
        self._catalogue = catalogue
        self._payments = payments
        self._clock = clock

    def catalogue(self) -> Catalogue:
        """The plan catalogue."""
        return self._catalogue

    async def purchase(
        self, account_id: str, device_id: str, plan_id: str, billing: Billing, *, address: str = ""
    ) -> Held:
        """Buys a plan for one of the account's devices: active now, or queued after its current plans."""
        now = self._clock.now()
        sub_id = str(uuid.uuid4())
        charged: tuple[Money, Receipt] | None = None
        try:
            async with self._db.begin() as conn:
                await self._lock_device(conn, account_id, device_id)
                rows = await conn.execute(_of_device(account_id, device_id))
                existing = [as_decided(_held(r).subscription, now) for r in rows]
                claim = (
                    await conn.execute(select(trial_claims).where(trial_claims.c.account_id == account_id))
                ).first()
                decided = rules.purchase(
                    self._catalogue,
                    plan_id,
                    billing,
                    device_id=device_id,
                    account_id=account_id,
                    now=now,
                    existing=existing,
                    account_trial_used=claim is not None and claim.device_id == device_id,
                    account_trial_device=claim.device_id if claim is not None else None,
                )
                sub = decided.subscription
                await conn.execute(
                    insert(subscriptions).values(
                        id=sub_id, created_at=now, updated_at=now, **subscription_values(sub)
                    )
                )
                if sub.billing is Billing.TRIAL:
                    # The primary key (one row per account) settles two trials bought at once.
                    await conn.execute(
                        insert(trial_claims).values(
                            account_id=account_id, device_id=device_id, subscription_id=sub_id, claimed_at=now
                        )
                    )
                if decided.charge.minor > 0:
                    charged = decided.charge, await self._charge(conn, sub_id, sub, decided.charge, now)
                await _audit(conn, "plan.purchased", sub_id, sub, now, address=address, charge=decided.charge)
        except Exception as exc:
            if charged is not None:
                await self._void(account_id, sub_id, *charged)
            if isinstance(exc, IntegrityError) and billing is Billing.TRIAL:
                raise PlanRefused("trial_already_used", "the trial is available once per account") from None
            raise
        return Held(sub_id, sub, None)

    async def device_plans(self, account_id: str, device_id: str) -> DevicePlans:
        """One of the account's devices: its plan now, its current and queued subscriptions, its history."""
        now = self._clock.now()
        async with self._db.connect() as conn:
            await self._owned(conn, account_id, device_id)
            held = [_held(r) for r in await conn.execute(_of_device(account_id, device_id))]
        current_sub = rules.active_on([h.subscription for h in held], now)
        current = next((h for h in held if h.subscription is current_sub), None)
        queued = [h for h in held if shown_status(h.subscription, now) is Status.QUEUED]
        plan = self._catalogue.plan(current.subscription.plan_id) if current else self._catalogue.free
        return DevicePlans(now, plan, current, queued, held[::-1][:HISTORY])

    async def get(self, account_id: str, subscription_id: str) -> Held:
        """One of the account's subscriptions."""
        async with self._db.connect() as conn:
            return await self._subscription(conn, account_id, subscription_id)

    async def refund_quote(self, account_id: str, subscription_id: str) -> Quote:
        """What cancelling now would refund and until when access would last; changes nothing."""
        held = await self.get(account_id, subscription_id)
        after, refund = rules.cancel(held.subscription, self._clock.now())
        return Quote(refund, after.status, after.ends_at)

    async def cancel(self, account_id: str, subscription_id: str, *, address: str = "") -> tuple[Held, Money]:
        """Cancels a subscription: no renewal, access to the end of the paid period, refund per the rules."""
        now = self._clock.now()
        async with self._db.begin() as conn:
            held = await self._subscription(conn, account_id, subscription_id)
            sub = held.subscription
            after, refund = rules.cancel(sub, now)
            # Conditional on what was read: of two cancels (or a cancel and a renewal) one wins.
            won = await conn.execute(
                update(subscriptions)
                .where(subscriptions.c.id == held.id, subscriptions.c.status == sub.status.value)
                .values(status=after.status.value, ends_at=after.ends_at, auto_renew=False, updated_at=now)
            )
            if won.rowcount != 1:
                raise Conflict("subscription_changed", "the subscription changed meanwhile; read it again")
            if refund.minor > 0:
                original = await ledger.charge_ref(conn, held.id)
                receipt = await self._payments.refund(account_id, refund, held.id, original)
                what = f"refund: {_description(self._catalogue, sub)}"
                await ledger.record(
                    conn,
                    "refund",
                    account_id=account_id,
                    subscription_id=held.id,
                    amount=refund,
                    receipt=receipt,
                    description=what,
                    at=now,
                )
            await _audit(conn, "plan.cancelled", held.id, after, now, address=address, refund=refund)
        return Held(held.id, after, held.renewal_of), refund

    async def transfer(self, account_id: str, subscription_id: str, device_id: str) -> NoReturn:
        """Always refused (``plan_not_transferable``), once both ids are known to be the account's."""
        async with self._db.connect() as conn:
            held = await self._subscription(conn, account_id, subscription_id)
            await self._owned(conn, account_id, device_id)
        rules.move(held.subscription, device_id)

    async def storage(self, account_id: str) -> tuple[Usage, int]:
        """What the account stores now, and its quota in bytes."""
        async with self._db.connect() as conn:
            return await usage(conn, account_id), await quota_bytes(
                conn, self._catalogue, account_id, self._clock.now()
            )

    async def renew_due(self) -> RenewalReport:
        """Renews every monthly period ending within ``RENEW_AHEAD``: charges the next period and records
        it, or ends the subscription when the provider declines. Safe with several instances running."""
        counts: Counter[str] = Counter()
        failed: set[str] = set()
        for _ in range(_CATCH_UP_ROUNDS):
            now = self._clock.now()
            query = (
                select(subscriptions, devices.c.owner_account_id)
                .join(devices, devices.c.id == subscriptions.c.device_id)
                .where(
                    subscriptions.c.billing == Billing.MONTHLY.value,
                    subscriptions.c.auto_renew.is_(True),
                    subscriptions.c.status.in_([Status.ACTIVE.value, Status.QUEUED.value]),
                    subscriptions.c.ends_at <= now + RENEW_AHEAD,
                )
                .order_by(subscriptions.c.ends_at)
            )
            async with self._db.connect() as conn:
                rows = [r for r in await conn.execute(query) if r.id not in failed]
            if not rows:
                break
            for row in rows:
                held = _held(row)
                (renewal,) = rules.renew_due([held.subscription], now + RENEW_AHEAD)
                try:
                    outcome = await self._renew(held, renewal, row.owner_account_id == row.account_id, now)
                except Exception:
                    log.exception("renewing subscription %s failed; retrying on the next run", held.id)
                    failed.add(held.id)
                    outcome = "failed"
                counts[outcome] += 1
        report = RenewalReport(counts["renewed"], counts["declined"], counts["stopped"], counts["failed"])
        if report != RenewalReport():
            log.info("renewals: %s", report)
        return report

    async def _renew(self, held: Held, renewal: rules.Renewal, owned: bool, now: datetime) -> str:
        account_id, old = held.subscription.account_id, held.subscription
        next_id = str(uuid.uuid4())
        charged: tuple[Money, Receipt] | None = None
        try:
            async with self._db.begin() as conn:
                # The conditional UPDATE is the claim: of two instances renewing at once one wins.
                won = await conn.execute(
                    update(subscriptions)
                    .where(
                        subscriptions.c.id == held.id,
                        subscriptions.c.status == old.status.value,
                        subscriptions.c.auto_renew.is_(True),
                    )
                    .values(status=Status.ENDED.value, updated_at=now)
                )
                if won.rowcount != 1:
                    return "lost"
                if not owned:
                    # The device left the account: a plan is not transferable, so it is not renewed either.
                    await self._end_without_renewal(conn, held, now, "device_not_owned")
                    return "stopped"
                if renewal.charge.minor > 0:
                    try:
                        receipt = await self._charge(conn, next_id, renewal.next, renewal.charge, now)
                    except PaymentDeclined as exc:
                        log.warning("renewal of subscription %s declined: %s", held.id, exc.detail)
                        await self._end_without_renewal(conn, held, now, "payment_declined")
                        return "declined"
                    charged = renewal.charge, receipt
                values = subscription_values(renewal.next)
                await conn.execute(
                    insert(subscriptions).values(
                        id=next_id, renewal_of=held.id, created_at=now, updated_at=now, **values
                    )
                )
        except Exception:
            if charged is not None:
                await self._void(account_id, next_id, *charged)
            raise
        return "renewed"

    async def _end_without_renewal(
        self, conn: AsyncConnection, held: Held, now: datetime, reason: str
    ) -> None:
        await conn.execute(
            update(subscriptions).where(subscriptions.c.id == held.id).values(auto_renew=False)
        )
        await _audit(conn, "plan.renewal_stopped", held.id, held.subscription, now, reason=reason)

    async def _charge(
        self, conn: AsyncConnection, sub_id: str, sub: Subscription, amount: Money, now: datetime
    ) -> Receipt:
        """Charges for ``sub`` (recorded as ``sub_id``) and writes the ledger row; may raise PaymentDeclined."""
        what = _description(self._catalogue, sub)
        receipt = await self._payments.charge(sub.account_id, amount, sub_id, what)
        await ledger.record(
            conn,
            "charge",
            account_id=sub.account_id,
            subscription_id=sub_id,
            amount=amount,
            receipt=receipt,
            description=what,
            at=now,
        )
        return receipt

    async def _void(self, account_id: str, reference: str, amount: Money, receipt: Receipt) -> None:
        # The charge went through but its record did not commit: give the money back at the provider.
        try:
            await self._payments.refund(account_id, amount, reference, receipt.provider_ref)
        except Exception:
            log.exception(
                "could not void charge %s (%s); it needs a manual refund", receipt.provider_ref, amount
            )

    async def _lock_device(self, conn: AsyncConnection, account_id: str, device_id: str) -> None:
        """Serialises purchases for one device (and checks it is the account's) for this transaction."""
        owned = (devices.c.id == device_id, devices.c.owner_account_id == account_id)
        if conn.dialect.name == "postgresql":
            found = (await conn.execute(select(devices.c.id).where(*owned).with_for_update())).first()
            if found is None:
                raise NotFound("device_not_found", "no such device")
            return
        # SQLite has no row locks: a write that changes nothing takes the database's write lock now, so
        # the reads after it and the decision on them cannot be overtaken by another purchase.
        touched = await conn.execute(
            update(devices).where(*owned).values(owner_account_id=devices.c.owner_account_id)
        )
        if touched.rowcount != 1:
            raise NotFound("device_not_found", "no such device")

    async def _owned(self, conn: AsyncConnection, account_id: str, device_id: str) -> None:
        found = await conn.execute(
            select(devices.c.id).where(devices.c.id == device_id, devices.c.owner_account_id == account_id)
        )
        if found.first() is None:
            raise NotFound("device_not_found", "no such device")

    async def _subscription(self, conn: AsyncConnection, account_id: str, subscription_id: str) -> Held:
        row = (
            await conn.execute(
                select(subscriptions).where(
                    subscriptions.c.id == subscription_id, subscriptions.c.account_id == account_id
                )
            )
        ).first()
        if row is None:
            raise NotFound("subscription_not_found", "no such subscription")
        return _held(row)


def _of_device(account_id: str, device_id: str) -> Select[Any]:
    return (
        select(subscriptions)
        .where(subscriptions.c.device_id == device_id, subscriptions.c.account_id == account_id)
        .order_by(subscriptions.c.starts_at, subscriptions.c.created_at)
    )


def _description(catalogue: Catalogue, sub: Subscription) -> str:
    name = catalogue.plan(sub.plan_id).name
    return f"{name}, {sub.billing}, {sub.starts_at:%Y-%m-%d} to {sub.ends_at:%Y-%m-%d}"[:200]


async def _audit(
    conn: AsyncConnection,
    action: str,
    sub_id: str,
    sub: Subscription,
    at: datetime,
    *,
    address: str = "",
    reason: str | None = None,
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
