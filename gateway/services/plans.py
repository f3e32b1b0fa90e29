"""Plans as use cases: buy for a device, list a device's plans, quote and cancel, refuse transfers, renew
monthly plans, and report the account's storage against its quota. The rules are the domain's
(gateway/domain/plans); this module gathers the facts, serialises the decisions and records the money.

Every charge and refund goes through the ``PaymentProvider`` port and lands in the ``payments`` ledger in
the same transaction as the subscription change it pays for. The provider is called last, after the
writes that can fail on a constraint, so a refusal (``PaymentDeclined``) rolls everything back; should
the commit still fail after a charge, the charge is refunded at the provider (nothing was recorded).
Refund references are deterministic (``refund:<subscription id>``) and providers are idempotent on
them, so a cancel retried after a failed commit never pays out twice. A purchase retried with the same
``Idempotency-Key`` gets the first purchase's subscription: the key is the subscription's id (uuid5).
"""

import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.adapters import payments as ledger
from gateway.adapters.db.tables import devices, subscriptions, trial_claims
from gateway.adapters.payments import PaymentDeclined
from gateway.domain import plans as rules
from gateway.domain.plans import Billing, Catalogue, Money, PlanRefused, PlanSpec, Status, Subscription
from gateway.errors import InvalidRequest, NotFound
from gateway.ports import Clock, PaymentProvider, Receipt
from gateway.services.coverage import Usage, of_device, quota_bytes, subscription_values, usage
from gateway.services.subscription_rows import (
    Held,
    audit_subscription,
    describe,
    follow_on,
    held_from_row,
    queued_renewal,
    record_cancel,
    repeated_purchase,
)

log = logging.getLogger(__name__)

# Monthly periods are renewed this long before they end, so that a job running every hour renews them
# before the old period is over: a device never drops to the free plan between two paid periods.
RENEW_AHEAD = timedelta(hours=2)
HISTORY = 50  # subscriptions listed per device (a monthly plan adds one a month)
# Purchase idempotency keys become subscription ids (uuid5 of account and key): nothing more to store,
# and the primary key settles two requests with one key racing.
_KEYS = uuid.UUID("6f1d7c52-8a0e-4c1b-9d55-2f0b5e7a9c11")
MAX_KEY_LENGTH = 200


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


def purchase_id(account_id: str, key: str) -> str:
    """The subscription id of the account's purchase with idempotency ``key`` (the same for a repeat)."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(
            "invalid_idempotency_key", f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters"
        )
    return str(uuid.uuid5(_KEYS, f"{account_id}\n{key}"))


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
        self,
        account_id: str,
        device_id: str,
        plan_id: str,
        billing: Billing,
        *,
        address: str = "",
        idempotency_key: str | None = None,
    ) -> Held:
        """Buys a plan for one of the account's devices: active now, or queued after its current plans.
        With ``idempotency_key``, a repeat of the account's purchase with that key returns the first one."""
        now = self._clock.now()
        keyed = idempotency_key is not None
        sub_id = (
            purchase_id(account_id, idempotency_key) if idempotency_key is not None else str(uuid.uuid4())
        )
        charged: tuple[Money, Receipt] | None = None
        try:
            async with self._db.begin() as conn:
                await self._lock_device(conn, account_id, device_id)
                if keyed and (
                    first := await repeated_purchase(conn, account_id, sub_id, device_id, plan_id, billing)
                ):
                    return first
                rows = await conn.execute(of_device(account_id, device_id))
                existing = [held_from_row(r).subscription for r in rows]
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
                await audit_subscription(
                    conn, "plan.purchased", sub_id, sub, now, address=address, charge=decided.charge
                )
        except Exception as exc:
            if charged is not None:
                await self._void(account_id, sub_id, *charged)
            if isinstance(exc, IntegrityError):
                if keyed:  # the same key racing: the other request's purchase is the answer
                    async with self._db.connect() as conn:
                        first = await repeated_purchase(conn, account_id, sub_id, device_id, plan_id, billing)
                    if first is not None:
                        return first
                if billing is Billing.TRIAL:
                    raise PlanRefused(
                        "trial_already_used", "the trial is available once per account"
                    ) from None
            raise
        return Held(sub_id, sub, None)

    async def device_plans(self, account_id: str, device_id: str) -> DevicePlans:
        """One of the account's devices: its plan now, its current and queued subscriptions, its history."""
        now = self._clock.now()
        async with self._db.connect() as conn:
            await self._owned(conn, account_id, device_id)
            held = [held_from_row(r) for r in await conn.execute(of_device(account_id, device_id))]
        current_sub = rules.active_on([h.subscription for h in held], now)
        current = next((h for h in held if h.subscription is current_sub), None)
        queued = [h for h in held if rules.status_at(h.subscription, now) is Status.QUEUED]
        plan = self._catalogue.plan(current.subscription.plan_id) if current else self._catalogue.free
        return DevicePlans(now, plan, current, queued, held[::-1][:HISTORY])

    async def get(self, account_id: str, subscription_id: str) -> Held:
        """One of the account's subscriptions."""
        async with self._db.connect() as conn:
            return await self._subscription(conn, account_id, subscription_id)

    async def refund_quote(self, account_id: str, subscription_id: str) -> Quote:
        """What cancelling now would refund and until when access would last; changes nothing."""
        now = self._clock.now()
        async with self._db.connect() as conn:
            held = await self._subscription(conn, account_id, subscription_id)
            chain = [
                held_from_row(r)
                for r in await conn.execute(of_device(account_id, held.subscription.device_id))
            ]
        after, refund = rules.cancel(held.subscription, now)
        renewal = queued_renewal(chain, held.id, now)
        if renewal is not None:
            refund = refund + rules.cancel(renewal.subscription, now)[1]
        return Quote(refund, after.status, after.ends_at)

    async def cancel(self, account_id: str, subscription_id: str, *, address: str = "") -> tuple[Held, Money]:
        """Cancels a subscription: no renewal, access to the end of the paid period, refund per the rules.
        A period already renewed ahead of its end also gets its renewal (not started) refunded in full;
        plans queued behind a period that now ends earlier (or never starts) move up to follow on."""
        now = self._clock.now()
        async with self._db.begin() as conn:
            # Serialises with purchases for the device: the device's queue may be re-planned below.
            await self._lock_device_of(conn, subscription_id)
            held = await self._subscription(conn, account_id, subscription_id)
            chain = [
                held_from_row(r)
                for r in await conn.execute(of_device(account_id, held.subscription.device_id))
            ]
            after, refund = rules.cancel(held.subscription, now)
            await record_cancel(conn, held, after, now)
            await self._refund(conn, held, refund, now)
            await audit_subscription(
                conn, "plan.cancelled", held.id, after, now, address=address, refund=refund
            )
            total = refund
            renewal = queued_renewal(chain, held.id, now)
            if renewal is not None:
                renewal_after, renewal_refund = rules.cancel(renewal.subscription, now)
                await record_cancel(conn, renewal, renewal_after, now)
                await self._refund(conn, renewal, renewal_refund, now)
                await audit_subscription(
                    conn,
                    "plan.cancelled",
                    renewal.id,
                    renewal_after,
                    now,
                    address=address,
                    refund=renewal_refund,
                )
                total = total + renewal_refund
            await follow_on(conn, chain, held, after, now)
        return Held(held.id, after, held.renewal_of), total

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
        it, or ends the subscription when the provider declines. A period that already ended (the job
        missed it) is not charged for: the next one starts now. Safe with several instances running."""
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
            rows = list(await conn.execute(query))
        counts: Counter[str] = Counter()
        for row in rows:
            held = held_from_row(row)
            # One renewal per period is enough: the next period ends a month on, never within RENEW_AHEAD.
            (renewal,) = rules.renew_due([held.subscription], now, ahead=RENEW_AHEAD)
            try:
                outcome = await self._renew(held, renewal, row.owner_account_id == row.account_id, now)
            except Exception:
                log.exception("renewing subscription %s failed; retrying on the next run", held.id)
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
                # The conditional UPDATE is the claim: of two instances renewing at once (or a renewal and
                # a cancel) one wins. A period renewed ahead keeps its status: it is in force to its end.
                won = await conn.execute(
                    update(subscriptions)
                    .where(
                        subscriptions.c.id == held.id,
                        subscriptions.c.status == old.status.value,
                        subscriptions.c.auto_renew.is_(True),
                    )
                    .values(status=renewal.ended.status.value, auto_renew=False, updated_at=now)
                )
                if won.rowcount != 1:
                    return "lost"
                if not owned:
                    # The device left the account: a plan is not transferable, so it is not renewed either.
                    await self._end_without_renewal(conn, held, renewal.ended, now, "device_not_owned")
                    return "stopped"
                if renewal.charge.minor > 0:
                    try:
                        receipt = await self._charge(conn, next_id, renewal.next, renewal.charge, now)
                    except PaymentDeclined as exc:
                        log.warning("renewal of subscription %s declined: %s", held.id, exc.detail)
                        await self._end_without_renewal(conn, held, renewal.ended, now, "payment_declined")
                        return "declined"
                    charged = renewal.charge, receipt
                values = subscription_values(renewal.next)
                await conn.execute(
                    insert(subscriptions).values(
                        id=next_id, renewal_of=held.id, created_at=now, updated_at=now, **values
                    )
                )
                if renewal.after_gap:
                    log.info(
                        "subscription %s resumed after a gap: its period ended %s, the next (%s) starts now",
                        held.id,
                        old.ends_at.isoformat(),
                        next_id,
                    )
                    await audit_subscription(
                        conn,
                        "plan.renewal_resumed",
                        next_id,
                        renewal.next,
                        now,
                        reason="renewal_missed",
                        extra={"renewal_of": held.id, "gap_from": old.ends_at.isoformat()},
                        charge=renewal.charge,
                    )
        except Exception:
            if charged is not None:
                await self._void(account_id, next_id, *charged)
            raise
        return "renewed"

    async def _end_without_renewal(
        self, conn: AsyncConnection, held: Held, ended: Subscription, now: datetime, reason: str
    ) -> None:
        # Still in force: shown (and treated) as cancelled, with access to the end of the paid period.
        status = Status.ENDED if ended.status is Status.ENDED else Status.CANCELLED
        await conn.execute(
            update(subscriptions)
            .where(subscriptions.c.id == held.id)
            .values(status=status.value, auto_renew=False)
        )
        await audit_subscription(conn, "plan.renewal_stopped", held.id, held.subscription, now, reason=reason)

    async def _charge(
        self, conn: AsyncConnection, sub_id: str, sub: Subscription, amount: Money, now: datetime
    ) -> Receipt:
        """Charges for ``sub`` (recorded as ``sub_id``) and writes the ledger row; may raise PaymentDeclined."""
        what = describe(self._catalogue, sub)
        # One reference per attempt: a purchase retried after its charge was voided must be charged anew
        # (repeats of a committed purchase are answered from the database, never charged).
        reference = f"charge:{sub_id}:{uuid.uuid4().hex[:12]}"
        receipt = await self._payments.charge(sub.account_id, amount, reference, what)
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

    async def _refund(self, conn: AsyncConnection, held: Held, amount: Money, now: datetime) -> None:
        """Refunds ``amount`` of the charge for ``held`` and writes the ledger row (nothing for zero)."""
        if amount.minor <= 0:
            return
        original = await ledger.charge_ref(conn, held.id)
        # Deterministic: should this transaction fail to commit, a retried cancel asks the provider
        # again under the same reference and gets the first refund back instead of a second payout.
        receipt = await self._payments.refund(
            held.subscription.account_id, amount, f"refund:{held.id}", original
        )
        await ledger.record(
            conn,
            "refund",
            account_id=held.subscription.account_id,
            subscription_id=held.id,
            amount=amount,
            receipt=receipt,
            description=f"refund: {describe(self._catalogue, held.subscription)}",
            at=now,
        )

    async def _void(self, account_id: str, sub_id: str, amount: Money, receipt: Receipt) -> None:
        # The charge went through but its record did not commit: give the money back at the provider.
        try:
            await self._payments.refund(
                account_id, amount, f"void:{receipt.provider_ref}", receipt.provider_ref
            )
        except Exception:
            log.exception(
                "could not void charge %s of %s (%s); it needs a manual refund",
                receipt.provider_ref,
                sub_id,
                amount,
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

    async def _lock_device_of(self, conn: AsyncConnection, subscription_id: str) -> None:
        """Takes the purchase lock of the subscription's device, whoever owns the device now."""
        device = (
            select(subscriptions.c.device_id).where(subscriptions.c.id == subscription_id).scalar_subquery()
        )
        if conn.dialect.name == "postgresql":
            await conn.execute(select(devices.c.id).where(devices.c.id == device).with_for_update())
        else:
            await conn.execute(
                update(devices)
                .where(devices.c.id == device)
                .values(owner_account_id=devices.c.owner_account_id)
            )

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
        return held_from_row(row)
