from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.plans import (
    Billing,
    Money,
    PlanRefused,
    Retention,
    Status,
    Subscription,
    access_allowed,
    active_on,
    add_months,
    cancel,
    default_catalogue,
    months_begun,
    move,
    purchase,
    refund_quote,
    renew_due,
    retention_for,
    status_at,
)

CAT = default_catalogue()
T0 = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)


def usd(cents: int) -> Money:
    return Money(cents, "USD")


def buy(
    plan_id: str = "standard-30",
    billing: Billing = Billing.ANNUAL,
    *,
    now: datetime = T0,
    existing: list[Subscription] | None = None,
    device: str = "cam-1",
    trial_used: bool = False,
    trial_device: str | None = None,
) -> Subscription:
    return purchase(
        CAT,
        plan_id,
        billing,
        device_id=device,
        account_id="acct-1",
        now=now,
        existing=existing or [],
        account_trial_used=trial_used,
        account_trial_device=trial_device,
    ).subscription


@contextmanager
def refused(code: str) -> Iterator[None]:
    with pytest.raises(PlanRefused) as err:
        yield
    assert err.value.code == code


# --- month arithmetic -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "months", "expected"),
    [
        (datetime(2026, 1, 31, 10, tzinfo=UTC), 1, datetime(2026, 2, 28, 10, tzinfo=UTC)),
        (datetime(2026, 1, 31, 10, tzinfo=UTC), 2, datetime(2026, 3, 31, 10, tzinfo=UTC)),
        (datetime(2026, 1, 31, 10, tzinfo=UTC), 3, datetime(2026, 4, 30, 10, tzinfo=UTC)),
        (datetime(2024, 1, 31, tzinfo=UTC), 1, datetime(2024, 2, 29, tzinfo=UTC)),  # leap year
        (datetime(2026, 3, 15, tzinfo=UTC), 12, datetime(2027, 3, 15, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), 12, datetime(2025, 2, 28, tzinfo=UTC)),
        (datetime(2026, 11, 30, tzinfo=UTC), 3, datetime(2027, 2, 28, tzinfo=UTC)),
        (datetime(2026, 3, 31, tzinfo=UTC), -1, datetime(2026, 2, 28, tzinfo=UTC)),
    ],
)
def test_add_months_by_calendar(anchor: datetime, months: int, expected: datetime) -> None:
    assert add_months(anchor, months) == expected


def test_months_begun_counts_a_begun_month_whole() -> None:
    start = datetime(2026, 1, 31, 10, tzinfo=UTC)
    assert months_begun(start, start - timedelta(seconds=1)) == 0
    assert months_begun(start, start) == 1
    assert months_begun(start, datetime(2026, 2, 28, 9, 59, tzinfo=UTC)) == 1
    assert months_begun(start, datetime(2026, 2, 28, 10, tzinfo=UTC)) == 2
    assert months_begun(start, datetime(2027, 1, 31, 10, tzinfo=UTC)) == 13


def test_naive_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_months(datetime(2026, 1, 1), 1)  # noqa: DTZ001 - the point of the test


# --- purchase ---------------------------------------------------------------------------------------


def test_purchase_starts_now_and_charges_the_price() -> None:
    made = purchase(
        CAT,
        "standard-30",
        Billing.MONTHLY,
        device_id="cam-1",
        account_id="acct-1",
        now=T0,
        existing=[],
        account_trial_used=False,
        account_trial_device=None,
    )
    sub = made.subscription
    assert made.charge == usd(999) == sub.amount_paid
    assert (sub.status, sub.starts_at, sub.ends_at) == (
        Status.ACTIVE,
        T0,
        datetime(2026, 4, 15, 9, tzinfo=UTC),
    )
    assert sub.auto_renew and sub.credits_given == usd(0) and sub.monthly_price == usd(999)
    annual = buy()
    assert annual.amount_paid == usd(9900) and not annual.auto_renew
    assert annual.ends_at == datetime(2027, 3, 15, 9, tzinfo=UTC)


def test_trial_lasts_fourteen_days_and_costs_nothing() -> None:
    sub = buy("trial", Billing.TRIAL)
    assert sub.ends_at - sub.starts_at == timedelta(days=14) and sub.amount_paid == usd(0)
    assert retention_for(CAT, sub, T0) == Retention(video=True, video_days=7, snapshot_days=7)


def test_buying_on_top_of_an_unexpired_plan_queues_it() -> None:
    first = buy()
    second = buy("premium-60", existing=[first], now=T0 + timedelta(days=40))
    third = buy("basic-7", Billing.MONTHLY, existing=[first, second], now=T0 + timedelta(days=41))
    assert (second.status, second.starts_at) == (Status.QUEUED, first.ends_at)
    assert (third.status, third.starts_at) == (Status.QUEUED, second.ends_at)
    assert status_at(second, first.ends_at) is Status.ACTIVE
    assert active_on([first, second, third], first.ends_at) == second


def test_expired_refunded_and_other_devices_plans_do_not_queue() -> None:
    old = buy(now=T0 - timedelta(days=400))
    refunded = replace(buy(), status=Status.REFUNDED)
    elsewhere = buy(device="cam-2")
    assert buy(existing=[old, refunded, elsewhere]).status is Status.ACTIVE


def test_paid_plan_bought_during_the_trial_starts_when_the_trial_ends() -> None:
    trial = buy("trial", Billing.TRIAL)
    paid = buy(existing=[trial], now=T0 + timedelta(days=3))
    assert (paid.status, paid.starts_at) == (Status.QUEUED, trial.ends_at)


@pytest.mark.parametrize(
    ("plan_id", "billing", "kwargs", "code"),
    [
        ("gold", Billing.MONTHLY, {}, "unknown_plan"),
        ("free", Billing.MONTHLY, {}, "free_plan_not_purchasable"),
        ("standard-30", Billing.TRIAL, {}, "plan_not_sold_with_billing"),
        ("trial", Billing.MONTHLY, {}, "plan_not_sold_with_billing"),
        ("trial", Billing.TRIAL, {"trial_used": True}, "trial_already_used"),
        ("trial", Billing.TRIAL, {"trial_device": "cam-2"}, "trial_not_for_this_device"),
    ],
)
def test_purchase_refusals(plan_id: str, billing: Billing, kwargs: dict[str, object], code: str) -> None:
    with refused(code):
        buy(plan_id, billing, **kwargs)  # type: ignore[arg-type]


def test_trial_for_its_own_device_is_allowed() -> None:
    assert buy("trial", Billing.TRIAL, trial_device="cam-1").status is Status.ACTIVE


def test_trial_is_not_queued_behind_a_plan() -> None:
    with refused("trial_not_queueable"):
        buy("trial", Billing.TRIAL, existing=[buy()], now=T0 + timedelta(days=1))


def test_no_queueing_behind_a_renewing_monthly_plan() -> None:
    monthly = buy(billing=Billing.MONTHLY)
    with refused("cancel_renewal_first"):
        buy(existing=[monthly], now=T0 + timedelta(days=1))
    overdue = T0 + timedelta(days=40)  # period over, renewal not yet run: still renewing
    with refused("cancel_renewal_first"):
        buy(existing=[monthly], now=overdue)
    stopped, _ = cancel(monthly, T0 + timedelta(days=1))
    assert buy(existing=[stopped], now=T0 + timedelta(days=1)).starts_at == monthly.ends_at


def test_retired_plan_is_not_sold() -> None:
    retired = replace(CAT.plan("basic-7"), sold=False)
    cat = replace(CAT, plans=tuple(retired if p.id == "basic-7" else p for p in CAT.plans))
    with refused("plan_not_sold"):
        purchase(
            cat,
            "basic-7",
            Billing.MONTHLY,
            device_id="cam-1",
            account_id="a",
            now=T0,
            existing=[],
            account_trial_used=False,
            account_trial_device=None,
        )


# --- cancellation and refunds: the worked examples of docs/plans.md ------------------------------------


@pytest.mark.parametrize(
    ("example", "at", "credits", "refund", "access_until"),
    [
        ("A: day 1", T0 + timedelta(hours=5), 0, 8901, datetime(2026, 4, 15, 9, tzinfo=UTC)),
        (
            "B: 1 month and 1 day",
            datetime(2026, 4, 16, 9, tzinfo=UTC),
            0,
            7902,
            datetime(2026, 5, 15, 9, tzinfo=UTC),
        ),
        (
            "C: with a 5.00 credit",
            datetime(2026, 4, 16, 9, tzinfo=UTC),
            500,
            7402,
            datetime(2026, 5, 15, 9, tzinfo=UTC),
        ),
        (
            "D: 8 months and 1 day",
            datetime(2026, 11, 16, 9, tzinfo=UTC),
            0,
            909,
            datetime(2026, 12, 15, 9, tzinfo=UTC),
        ),
        (
            "E: 9 months and 1 day",
            datetime(2026, 12, 16, 9, tzinfo=UTC),
            0,
            0,
            datetime(2027, 3, 15, 9, tzinfo=UTC),
        ),
        (
            "F: 11 and a half months",
            datetime(2027, 3, 1, 9, tzinfo=UTC),
            0,
            0,
            datetime(2027, 3, 15, 9, tzinfo=UTC),
        ),
    ],
)
def test_annual_refund_examples(
    example: str, at: datetime, credits: int, refund: int, access_until: datetime
) -> None:
    sub = replace(buy(), credits_given=usd(credits))
    assert refund_quote(sub, at) == usd(refund), example
    after, given = cancel(sub, at)
    assert given == usd(refund)
    assert (after.status, after.auto_renew, after.ends_at) == (Status.CANCELLED, False, access_until)
    assert access_allowed([after], access_until - timedelta(seconds=1))
    assert not access_allowed([after], access_until)


def test_example_g_monthly_cancel_gives_no_refund_and_keeps_access() -> None:
    sub = buy(billing=Billing.MONTHLY)
    after, refund = cancel(sub, T0 + timedelta(days=1))
    assert refund == usd(0)
    assert (after.status, after.auto_renew, after.ends_at) == (Status.CANCELLED, False, sub.ends_at)
    assert renew_due([after], sub.ends_at) == []


def test_example_h_queued_plan_is_refunded_in_full() -> None:
    first = buy()
    queued = buy("premium-60", existing=[first], now=T0 + timedelta(days=200))
    after, refund = cancel(queued, first.ends_at - timedelta(seconds=1))
    assert refund == usd(14900) and after.status is Status.REFUNDED
    assert active_on([first, after], first.ends_at) is None
    assert refund_quote(queued, first.ends_at) == usd(14900 - 1499)  # once started, the annual rules apply


def test_trial_cannot_be_cancelled() -> None:
    with refused("trial_not_cancellable"):
        cancel(buy("trial", Billing.TRIAL), T0)


@pytest.mark.parametrize(
    ("sub_status", "at_offset", "code"),
    [
        (Status.CANCELLED, timedelta(days=1), "already_cancelled"),
        (Status.REFUNDED, timedelta(days=1), "already_cancelled"),
        (Status.ACTIVE, timedelta(days=400), "subscription_ended"),
        (Status.ENDED, timedelta(days=1), "subscription_ended"),
    ],
)
def test_cancel_refusals(sub_status: Status, at_offset: timedelta, code: str) -> None:
    with refused(code):
        cancel(replace(buy(), status=sub_status), T0 + at_offset)


def test_plans_cannot_move_to_another_device() -> None:
    for sub in (buy(), buy("trial", Billing.TRIAL)):
        with refused("plan_not_transferable"):
            move(sub, "cam-2")


# --- renewal ------------------------------------------------------------------------------------------


def test_monthly_renewal_keeps_the_anchor_day() -> None:
    start = datetime(2026, 1, 31, 10, tzinfo=UTC)
    sub = buy(billing=Billing.MONTHLY, now=start)
    assert renew_due([sub], sub.ends_at - timedelta(seconds=1)) == []
    ends = [sub.ends_at]
    for _ in range(3):
        (renewal,) = renew_due([sub], sub.ends_at)
        assert renewal.ended.status is Status.ENDED and renewal.charge == usd(999)
        assert renewal.next.starts_at == sub.ends_at and renewal.next.amount_paid == usd(999)
        sub = renewal.next
        ends.append(sub.ends_at)
    assert [e.date().isoformat() for e in ends] == ["2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]
    assert renew_due([renewal.ended], sub.ends_at) == []  # an ended period never renews twice


def test_annual_and_trial_do_not_renew() -> None:
    subs = [buy(), buy("trial", Billing.TRIAL, device="cam-2")]
    assert renew_due(subs, T0 + timedelta(days=800)) == []


# --- retention and access -----------------------------------------------------------------------------


def test_retention_is_the_plan_in_force_at_capture_else_free() -> None:
    sub = buy("premium-60", Billing.MONTHLY)
    assert retention_for(CAT, sub, T0) == Retention(True, 60, 60)
    assert retention_for(CAT, sub, sub.ends_at) == Retention(False, 0, 3)  # period over: free plan
    assert retention_for(CAT, None, T0) == Retention(False, 0, 3)
    assert retention_for(CAT, sub, T0 - timedelta(seconds=1)) == Retention(False, 0, 3)


def test_access_only_while_a_plan_is_in_force() -> None:
    sub = buy(billing=Billing.MONTHLY)
    assert not access_allowed([], T0)
    assert access_allowed([sub], T0) and access_allowed([sub], sub.ends_at - timedelta(microseconds=1))
    assert not access_allowed([sub], sub.ends_at)
    ended = replace(sub, status=Status.ENDED)  # history still answers "which plan was in force then"
    assert active_on([ended], T0) == ended


def test_subscription_values_are_checked() -> None:
    sub = buy()
    with pytest.raises(ValueError, match="end after"):
        replace(sub, ends_at=sub.starts_at)
    with pytest.raises(ValueError, match="one currency"):
        replace(sub, credits_given=Money(0, "EUR"))
    with pytest.raises(ValueError, match="never negative"):
        replace(sub, credits_given=usd(-1))
