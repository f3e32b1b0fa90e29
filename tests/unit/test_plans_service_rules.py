"""Renewal rules the plans service relies on: a period renewed ahead of its end (RENEW_AHEAD) stays in
force and shows as such; a missed renewal never charges for a period that is over; a queued plan moved
up keeps its length; and purchase idempotency keys map to subscription ids."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.plans import (
    Billing,
    Money,
    PlanRefused,
    Status,
    Subscription,
    cancel,
    default_catalogue,
    purchase,
    renew_due,
    status_at,
)
from gateway.domain.plans.subscriptions import next_period_end, successor
from gateway.errors import InvalidRequest
from gateway.services.plans import RENEW_AHEAD, purchase_id

CAT = default_catalogue()
T0 = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)
END = datetime(2026, 4, 15, 9, 0, tzinfo=UTC)


def bought(billing: Billing = Billing.MONTHLY, existing: list[Subscription] | None = None) -> Subscription:
    return purchase(
        CAT,
        "basic-7",
        billing,
        device_id="cam-1",
        account_id="acct-1",
        now=T0,
        existing=existing or [],
        account_trial_used=False,
        account_trial_device=None,
    ).subscription


def test_a_period_renewed_ahead_stays_active_until_its_end_with_renewal_off() -> None:
    now = END - timedelta(minutes=30)
    (renewal,) = renew_due([bought()], now, ahead=RENEW_AHEAD)
    ended, nxt = renewal.ended, renewal.next
    assert (ended.status, ended.auto_renew, renewal.after_gap) == (Status.ACTIVE, False, False)
    assert status_at(ended, now) is Status.ACTIVE and status_at(nxt, now) is Status.QUEUED
    assert status_at(ended, END) is Status.ENDED and status_at(nxt, END) is Status.ACTIVE
    assert (nxt.starts_at, nxt.ends_at, nxt.anchor_at) == (END, datetime(2026, 5, 15, 9, tzinfo=UTC), T0)
    # Cancellable while in force: no refund for the month itself (the service refunds the renewal).
    after, refund = cancel(ended, now)
    assert (after.status, after.ends_at, refund) == (Status.CANCELLED, END, Money(0, "USD"))
    assert renew_due([ended], END + timedelta(days=40)) == []  # renewed once, never twice


def test_a_renewal_at_the_period_end_records_it_ended() -> None:
    (renewal,) = renew_due([bought()], END)
    assert (renewal.ended.status, renewal.next.starts_at, renewal.after_gap) == (Status.ENDED, END, False)


def test_a_missed_renewal_starts_now_with_a_new_anchor_and_charges_one_month() -> None:
    late = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)  # three periods missed
    (renewal,) = renew_due([bought()], late, ahead=RENEW_AHEAD)
    nxt = renewal.next
    assert renewal.after_gap and renewal.charge == Money(399, "USD")
    assert (nxt.starts_at, nxt.anchor_at, nxt.ends_at) == (late, late, datetime(2026, 7, 20, 12, tzinfo=UTC))
    assert renewal.ended.status is Status.ENDED and nxt.period == 2
    (following,) = renew_due([nxt], nxt.ends_at)  # on time again: follows on from the new anchor
    assert (following.next.starts_at, following.next.ends_at) == (
        nxt.ends_at,
        datetime(2026, 8, 20, 12, tzinfo=UTC),
    )
    assert not following.after_gap


def test_a_microsecond_late_is_a_gap() -> None:
    assert renew_due([bought()], END + timedelta(microseconds=1))[0].after_gap


def test_next_period_end_counts_from_the_anchor() -> None:
    anchor = datetime(2026, 1, 31, 10, tzinfo=UTC)
    assert next_period_end(anchor, anchor) == datetime(2026, 2, 28, 10, tzinfo=UTC)
    assert next_period_end(anchor, datetime(2026, 2, 28, 10, tzinfo=UTC)) == datetime(
        2026, 3, 31, 10, tzinfo=UTC
    )
    assert next_period_end(anchor, datetime(2026, 4, 30, 10, tzinfo=UTC)) == datetime(
        2026, 5, 31, 10, tzinfo=UTC
    )


def test_a_queued_plan_moved_up_keeps_its_length_from_the_new_start() -> None:
    first = bought(Billing.ANNUAL)
    queued = bought(Billing.ANNUAL, [first])
    monthly = replace(queued, billing=Billing.MONTHLY, ends_at=queued.starts_at + timedelta(days=31))
    new_start = datetime(2026, 5, 15, 9, tzinfo=UTC)
    moved = successor(queued, new_start)
    assert (moved.starts_at, moved.ends_at, moved.anchor_at) == (
        new_start,
        datetime(2027, 5, 15, 9, tzinfo=UTC),
        new_start,
    )
    assert moved.status is Status.QUEUED and moved.amount_paid == queued.amount_paid
    assert successor(monthly, new_start).ends_at == datetime(2026, 6, 15, 9, tzinfo=UTC)


def test_purchase_queues_behind_a_period_whose_renewal_was_refunded() -> None:
    (renewal,) = renew_due([bought()], END - timedelta(hours=1), ahead=RENEW_AHEAD)
    with pytest.raises(PlanRefused) as refused:  # the renewal renews: nothing to queue behind
        purchase(
            CAT,
            "standard-30",
            Billing.ANNUAL,
            device_id="cam-1",
            account_id="acct-1",
            now=END - timedelta(hours=1),
            existing=[renewal.ended, renewal.next],
            account_trial_used=False,
            account_trial_device=None,
        )
    assert refused.value.code == "cancel_renewal_first"
    refunded, _ = cancel(renewal.next, END - timedelta(hours=1))
    made = purchase(
        CAT,
        "standard-30",
        Billing.ANNUAL,
        device_id="cam-1",
        account_id="acct-1",
        now=END - timedelta(hours=1),
        existing=[renewal.ended, refunded],
        account_trial_used=False,
        account_trial_device=None,
    ).subscription
    assert (made.status, made.starts_at) == (Status.QUEUED, END)  # no overlap with the paid hour


def test_purchase_ids_are_per_account_and_key() -> None:
    assert purchase_id("acct-1", "k-1") == purchase_id("acct-1", "k-1")
    assert purchase_id("acct-1", "k-1") != purchase_id("acct-2", "k-1")
    assert purchase_id("acct-1", "k-1") != purchase_id("acct-1", "k-2")
    for bad in ("", "x" * 201, "tab\there"):
        with pytest.raises(InvalidRequest, match="Idempotency-Key"):
            purchase_id("acct-1", bad)
