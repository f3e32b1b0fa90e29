from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.plans import (
    Billing,
    Money,
    PlanRefused,
    Status,
    Subscription,
    add_months,
    cancel,
    default_catalogue,
    months_begun,
    purchase,
    renew_due,
)

CAT = default_catalogue()
# hypothesis bounds are naive by its API; the generated times carry UTC.
times = st.datetimes(
    min_value=datetime(2020, 1, 1),  # noqa: DTZ001
    max_value=datetime(2035, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)
offsets = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800))


@given(start=times, a=offsets, b=offsets)
def test_months_begun_is_monotonic_and_brackets_the_time(start: datetime, a: timedelta, b: timedelta) -> None:
    early, late = sorted((a, b))
    assert months_begun(start, start + early) <= months_begun(start, start + late)
    at = start + a
    begun = months_begun(start, at)
    assert add_months(start, begun - 1) <= at < add_months(start, begun)


@given(
    start=times,
    monthly=st.integers(0, 5_000),
    annual=st.integers(0, 60_000),
    credits=st.integers(0, 60_000),
    elapsed=st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=365)),
)
def test_refund_is_never_negative_nor_more_than_paid(
    start: datetime, monthly: int, annual: int, credits: int, elapsed: timedelta
) -> None:
    usd = "USD"
    sub = Subscription(
        device_id="cam",
        account_id="acct",
        plan_id="standard-30",
        billing=Billing.ANNUAL,
        starts_at=start,
        ends_at=add_months(start, 12),
        status=Status.QUEUED,
        amount_paid=Money(annual, usd),
        monthly_price=Money(monthly, usd),
        credits_given=Money(credits, usd),
        auto_renew=False,
        anchor_at=start,
    )
    now = start + elapsed
    if now >= sub.ends_at:
        return
    after, refund = cancel(sub, now)
    assert Money(0, usd) <= refund <= sub.amount_paid
    assert after.ends_at <= sub.ends_at and after.status in (Status.CANCELLED, Status.REFUNDED)
    if after.status is Status.CANCELLED:
        assert after.ends_at > now  # access always continues past the cancellation


step = st.one_of(
    st.tuples(
        st.just("buy"),
        st.sampled_from(["basic-7", "standard-30", "premium-60", "trial"]),
        st.sampled_from(list(Billing)),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 20), st.just(Billing.ANNUAL)),
    st.tuples(st.just("wait"), st.integers(1, 90), st.just(Billing.ANNUAL)),
)


@settings(max_examples=200)
@given(start=times, steps=st.lists(step, max_size=25))
def test_plans_of_a_device_never_overlap(start: datetime, steps: list[tuple[str, object, Billing]]) -> None:
    now = start
    subs: list[Subscription] = []
    trial_used = False
    for action, arg, billing in steps:
        try:
            if action == "buy":
                made = purchase(
                    CAT,
                    str(arg),
                    billing,
                    device_id="cam",
                    account_id="acct",
                    now=now,
                    existing=subs,
                    account_trial_used=trial_used,
                    account_trial_device=None,
                )
                trial_used = trial_used or billing is Billing.TRIAL
                subs.append(made.subscription)
            elif action == "cancel" and subs:
                index = int(str(arg)) % len(subs)
                subs[index] = cancel(subs[index], now)[0]
            elif action == "wait":
                now += timedelta(days=int(str(arg)))
        except PlanRefused:
            continue
        for i, sub in enumerate(list(subs)):
            for renewal in renew_due([sub], now):
                subs[i] = renewal.ended
                subs.append(renewal.next)
    live = sorted((s for s in subs if s.status is not Status.REFUNDED), key=lambda s: s.starts_at)
    for earlier, later in pairwise(live):
        assert earlier.ends_at <= later.starts_at, (earlier, later)
