"""Subscriptions: buying, queueing, cancelling, refunding and renewing a plan for one device.

Every function is a pure decision over values the service gathered; time is passed in. A refusal raises
``PlanRefused`` with a stable ``code``. The stored ``status`` records decisions (queued, refunded,
cancelled, ended by renewal); what holds at a given time is ``status_at`` / ``in_force``, so nothing here
needs a job to flip a queued plan to active when its start comes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NoReturn

from gateway.domain.plans.catalogue import Billing, Catalogue, PlanKind, PlanRefused
from gateway.domain.plans.money import Money
from gateway.domain.plans.months import add_months, months_begun, require_aware

ANNUAL_MONTHS = 12


class Status(StrEnum):
    QUEUED = "queued"  # bought on top of an unexpired plan; starts when the last one ends
    ACTIVE = "active"
    CANCELLED = "cancelled"  # no renewal; access until ends_at
    ENDED = "ended"  # the period is over (recorded when a monthly period is renewed after its end)
    REFUNDED = "refunded"  # cancelled before it started: never in force


@dataclass(frozen=True)
class Subscription:
    """One paid (or trial) period of one plan for one device."""

    device_id: str
    account_id: str
    plan_id: str
    billing: Billing
    starts_at: datetime
    ends_at: datetime  # end of the paid period, exclusive
    status: Status
    amount_paid: Money
    monthly_price: Money  # the plan's monthly price when bought: renewals charge it, annual refunds use it
    credits_given: Money  # credits or partial refunds already issued against this payment
    auto_renew: bool
    anchor_at: datetime  # first period's start: period ends count calendar months from it
    period: int = 1  # 1 for the first monthly period, 2 after the first renewal, ...

    def __post_init__(self) -> None:
        for name in ("starts_at", "ends_at", "anchor_at"):
            require_aware(getattr(self, name), name)
        if self.ends_at <= self.starts_at:
            raise ValueError("a subscription must end after it starts")
        if self.period < 1:
            raise ValueError("period counts from 1")
        for money in (self.monthly_price, self.credits_given):
            if money.currency != self.amount_paid.currency:
                raise ValueError("a subscription is in one currency")
        if min(self.amount_paid.minor, self.monthly_price.minor, self.credits_given.minor) < 0:
            raise ValueError("amounts are never negative")


@dataclass(frozen=True)
class Purchase:
    """A decided purchase: the subscription to record and what to charge for it now."""

    subscription: Subscription
    charge: Money


@dataclass(frozen=True)
class Renewal:
    """A due monthly renewal: the period renewed (renewal off; ENDED once over) and the next one to charge
    for. ``after_gap``: the renewal was missed, so ``next`` starts at the renewal time, not at the end."""

    ended: Subscription
    next: Subscription
    charge: Money
    after_gap: bool = False


@dataclass(frozen=True)
class Retention:
    """How long captures are kept, fixed at capture time from the plan in force then."""

    video: bool
    video_days: int
    snapshot_days: int
    day: timedelta = timedelta(days=1)  # the catalogue's day (shorter only in demos)

    @property
    def video_period(self) -> timedelta:
        """How long a clip captured under this retention is kept."""
        return self.video_days * self.day

    @property
    def snapshot_period(self) -> timedelta:
        """How long a snapshot (and its thumbnail) captured under this retention is kept."""
        return self.snapshot_days * self.day


def status_at(sub: Subscription, at: datetime) -> Status:
    """The subscription's status at ``at``: the recorded decision, moved along by time."""
    if sub.status in (Status.REFUNDED, Status.ENDED):
        return sub.status
    if at >= sub.ends_at:
        return Status.ENDED
    if at < sub.starts_at:
        return Status.QUEUED
    return Status.ACTIVE if sub.status is Status.QUEUED else sub.status


def in_force(sub: Subscription, at: datetime) -> bool:
    """Whether ``sub`` covered the instant ``at`` (also for past instants of subscriptions since ended)."""
    return sub.status is not Status.REFUNDED and sub.starts_at <= at < sub.ends_at


def purchase(
    catalogue: Catalogue,
    plan_id: str,
    billing: Billing,
    *,
    device_id: str,
    account_id: str,
    now: datetime,
    existing: list[Subscription],
    account_trial_used: bool,
    account_trial_device: str | None,
) -> Purchase:
    """Decides a purchase for one device: active from ``now``, or queued after the device's unexpired
    subscriptions (``existing``; those of other devices are ignored)."""
    require_aware(now, "now")
    plan = catalogue.plan(plan_id)
    if plan.kind is PlanKind.FREE:
        raise PlanRefused("free_plan_not_purchasable", "the free plan applies without buying it")
    if not plan.sold:
        raise PlanRefused("plan_not_sold", f"plan {plan_id!r} is no longer sold", plan_id=plan_id)
    if not plan.sold_with(billing):
        raise PlanRefused(
            "plan_not_sold_with_billing",
            f"plan {plan_id!r} is not sold with {billing} billing",
            plan_id=plan_id,
            billing=str(billing),
        )
    mine = [s for s in existing if s.device_id == device_id]
    unexpired = [s for s in mine if s.status is not Status.REFUNDED and status_at(s, now) is not Status.ENDED]
    if plan.kind is PlanKind.TRIAL:
        if account_trial_used:
            raise PlanRefused("trial_already_used", "the trial is available once per account")
        if account_trial_device is not None and account_trial_device != device_id:
            raise PlanRefused("trial_not_for_this_device", "the account's trial belongs to another device")
        if unexpired:
            raise PlanRefused("trial_not_queueable", "the trial cannot start while the device has a plan")
    if any(s.auto_renew and s.status in (Status.ACTIVE, Status.QUEUED) for s in mine):
        # A renewing plan has no end to queue behind; queueing would overlap its next period.
        raise PlanRefused("cancel_renewal_first", "cancel the device's monthly renewal before buying")

    starts_at = max([now, *(s.ends_at for s in unexpired)])
    if billing is Billing.TRIAL:
        assert plan.term_days is not None  # the catalogue guarantees it for the trial
        ends_at = starts_at + plan.term_days * catalogue.day
        charge = Money.zero(catalogue.currency)
    else:
        ends_at = add_months(starts_at, 1 if billing is Billing.MONTHLY else ANNUAL_MONTHS)
        price = plan.price(billing)
        assert price is not None  # sold_with checked it
        charge = price
    sub = Subscription(
        device_id=device_id,
        account_id=account_id,
        plan_id=plan_id,
        billing=billing,
        starts_at=starts_at,
        ends_at=ends_at,
        status=Status.QUEUED if starts_at > now else Status.ACTIVE,
        amount_paid=charge,
        monthly_price=plan.monthly_price or Money.zero(catalogue.currency),
        credits_given=Money.zero(catalogue.currency),
        auto_renew=billing is Billing.MONTHLY,
        anchor_at=starts_at,
    )
    return Purchase(sub, charge)


def cancel(sub: Subscription, now: datetime) -> tuple[Subscription, Money]:
    """Cancels ``sub`` at ``now``: the updated subscription and the amount to refund."""
    require_aware(now, "now")
    if sub.billing is Billing.TRIAL:
        raise PlanRefused("trial_not_cancellable", "the trial cannot be cancelled")
    zero = Money.zero(sub.amount_paid.currency)
    state = status_at(sub, now)
    if state in (Status.CANCELLED, Status.REFUNDED):
        raise PlanRefused("already_cancelled", "the subscription is already cancelled")
    if state is Status.ENDED:
        raise PlanRefused("subscription_ended", "the subscription has already ended")
    if state is Status.QUEUED:
        refund = max(zero, sub.amount_paid - sub.credits_given)
        return replace(sub, status=Status.REFUNDED, auto_renew=False), refund
    if sub.billing is Billing.MONTHLY:
        return replace(sub, status=Status.CANCELLED, auto_renew=False), zero
    begun = min(ANNUAL_MONTHS, months_begun(sub.starts_at, now))
    refund = max(zero, sub.amount_paid - sub.monthly_price * begun - sub.credits_given)
    # With money back the paid period is the months charged; with none, the whole year was paid for.
    ends_at = add_months(sub.starts_at, begun) if refund.minor > 0 else sub.ends_at
    return replace(sub, status=Status.CANCELLED, auto_renew=False, ends_at=ends_at), refund


def refund_quote(sub: Subscription, now: datetime) -> Money:
    """The refund ``cancel`` would give at ``now``, changing nothing (refusals are raised the same)."""
    return cancel(sub, now)[1]


def renew_due(subs: list[Subscription], now: datetime, *, ahead: timedelta = timedelta(0)) -> list[Renewal]:
    """Monthly subscriptions with renewal on whose period ends by ``now + ahead``, each with its next
    period. A period that ends at or after ``now`` is followed without a gap. One that already ended
    before ``now`` was missed (the device was on the free plan meanwhile): it is never charged for; the
    next period starts at ``now`` instead, with a new anchor (``Renewal.after_gap``)."""
    require_aware(now, "now")
    due: list[Renewal] = []
    for sub in subs:
        if not (
            sub.billing is Billing.MONTHLY
            and sub.auto_renew
            and sub.status in (Status.ACTIVE, Status.QUEUED)
            and sub.ends_at <= now + ahead
        ):
            continue
        missed = sub.ends_at < now
        anchor = now if missed else sub.anchor_at
        starts_at = now if missed else sub.ends_at
        nxt = replace(
            sub,
            starts_at=starts_at,
            ends_at=next_period_end(anchor, starts_at),
            anchor_at=anchor,
            status=Status.ACTIVE,
            amount_paid=sub.monthly_price,
            credits_given=Money.zero(sub.monthly_price.currency),
            period=sub.period + 1,
        )
        # A period renewed ahead of its end keeps its status (it is still in force); only renewal is off.
        ended = replace(sub, auto_renew=False, status=Status.ENDED if sub.ends_at <= now else sub.status)
        due.append(Renewal(ended, nxt, sub.monthly_price, after_gap=missed))
    return due


def next_period_end(anchor: datetime, starts_at: datetime) -> datetime:
    """The end of the monthly period starting at ``starts_at`` (the anchor or a month end counted from
    it): the next calendar month end counted from ``anchor``, so the anchor day comes back."""
    return add_months(anchor, months_begun(anchor, starts_at))


def successor(sub: Subscription, starts_at: datetime) -> Subscription:
    """``sub`` (queued) moved to start at ``starts_at``, keeping its length: a monthly period is one
    calendar month, an annual one twelve, counted from the new start (the new anchor); a term, as long."""
    if sub.billing is Billing.TRIAL:
        ends_at = starts_at + (sub.ends_at - sub.starts_at)
    else:
        ends_at = add_months(starts_at, 1 if sub.billing is Billing.MONTHLY else ANNUAL_MONTHS)
    return replace(sub, starts_at=starts_at, ends_at=ends_at, anchor_at=starts_at)


def active_on(subs: list[Subscription], at: datetime) -> Subscription | None:
    """The subscription of one device in force at ``at``, or None (the free plan applies)."""
    covering = [s for s in subs if in_force(s, at)]
    return max(covering, key=lambda s: s.starts_at, default=None)


def retention_for(catalogue: Catalogue, sub: Subscription | None, at: datetime) -> Retention:
    """Retention for a capture made at ``at`` under ``sub``: its plan's when in force then, else free."""
    plan = catalogue.plan(sub.plan_id) if sub is not None and in_force(sub, at) else catalogue.free
    return Retention(plan.video, plan.video_retention_days, plan.snapshot_retention_days, catalogue.day)


def access_allowed(subs: list[Subscription], at: datetime) -> bool:
    """Whether the device's cloud recordings are served at ``at``: only while a subscription is in
    force (terms 8.1: after the paid period ends they are no longer accessible)."""
    return active_on(subs, at) is not None


def move(sub: Subscription, new_device_id: str) -> NoReturn:
    """Always refused: a plan belongs to the device it was bought for (terms 7.1, 7.2.1, 7.2.2)."""
    raise PlanRefused(
        "plan_not_transferable",
        "a plan cannot be moved to another device",
        device_id=sub.device_id,
        new_device_id=new_device_id,
    )
