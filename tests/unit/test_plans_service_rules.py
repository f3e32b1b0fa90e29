"""The plans service's two pure rules for periods renewed ahead of their end (RENEW_AHEAD): what status
they show, and how purchases see them."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from gateway.domain.plans import Billing, Status, Subscription, default_catalogue, purchase, renew_due
from gateway.services.plans import RENEW_AHEAD, as_decided, shown_status

CAT = default_catalogue()
T0 = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)
END = datetime(2026, 4, 15, 9, 0, tzinfo=UTC)


def monthly() -> Subscription:
    return purchase(
        CAT,
        "basic-7",
        Billing.MONTHLY,
        device_id="cam-1",
        account_id="acct-1",
        now=T0,
        existing=[],
        account_trial_used=False,
        account_trial_device=None,
    ).subscription


def test_a_period_renewed_ahead_shows_active_until_its_end_then_ended() -> None:
    # the service renews at now + RENEW_AHEAD: the period is recorded ended while still in force
    (renewal,) = renew_due([monthly()], END - timedelta(minutes=30) + RENEW_AHEAD)
    ended, nxt = renewal.ended, renewal.next
    before = END - timedelta(minutes=30)
    assert shown_status(ended, before) is Status.ACTIVE
    assert shown_status(nxt, before) is Status.QUEUED
    assert shown_status(ended, END) is Status.ENDED and shown_status(nxt, END) is Status.ACTIVE


def test_a_period_whose_renewal_stopped_shows_cancelled_until_its_end() -> None:
    stopped = replace(monthly(), status=Status.ENDED, auto_renew=False)
    assert shown_status(stopped, END - timedelta(hours=1)) is Status.CANCELLED
    assert shown_status(stopped, END) is Status.ENDED


def test_other_statuses_show_as_the_domain_says() -> None:
    sub = monthly()
    assert shown_status(sub, T0) is Status.ACTIVE
    assert shown_status(replace(sub, status=Status.REFUNDED), T0) is Status.REFUNDED
    assert shown_status(replace(sub, status=Status.CANCELLED), END) is Status.ENDED


def test_purchases_queue_behind_a_period_recorded_ended_but_still_in_force() -> None:
    stopped = replace(monthly(), status=Status.ENDED, auto_renew=False)
    now = END - timedelta(hours=1)
    seen = as_decided(stopped, now)
    assert (seen.status, seen.auto_renew) == (Status.CANCELLED, False)
    bought = purchase(
        CAT,
        "standard-30",
        Billing.ANNUAL,
        device_id="cam-1",
        account_id="acct-1",
        now=now,
        existing=[seen],
        account_trial_used=False,
        account_trial_device=None,
    ).subscription
    assert (bought.status, bought.starts_at) == (Status.QUEUED, END)  # no overlap with the paid hour
    assert as_decided(stopped, END) is stopped  # over: nothing to queue behind
    assert as_decided(monthly(), now) == monthly()
