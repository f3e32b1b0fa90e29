from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.domain.plans import (
    DEFAULT_CONFIG,
    Billing,
    Catalogue,
    CatalogueInvalid,
    Money,
    PlanKind,
    PlanRefused,
    Subscription,
    default_catalogue,
    purchase,
    retention_for,
)


def config(*plans: dict[str, Any]) -> dict[str, Any]:
    base = [dict(p) for p in DEFAULT_CONFIG["plans"]]
    return {"currency": "USD", "plans": base + list(plans)}


def test_default_catalogue_matches_the_spec() -> None:
    cat = default_catalogue()
    assert cat.free.id == "free" and not cat.free.video and cat.free.snapshot_retention_days == 3
    assert cat.trial.term_days == 14 and cat.trial.video_retention_days == 7
    assert [cat.plan(i).video_retention_days for i in ("basic-7", "standard-30", "premium-60")] == [7, 30, 60]
    standard = cat.plan("standard-30")
    assert standard.price(Billing.MONTHLY) == Money(999, "USD")
    assert standard.price(Billing.ANNUAL) == Money(9900, "USD")
    assert standard.sold_with(Billing.MONTHLY) and not standard.sold_with(Billing.TRIAL)
    assert cat.trial.sold_with(Billing.TRIAL) and not cat.trial.sold_with(Billing.ANNUAL)
    assert not cat.free.sold_with(Billing.MONTHLY)


def test_unknown_plan_is_refused_with_its_code() -> None:
    with pytest.raises(PlanRefused) as err:
        default_catalogue().plan("gold")
    assert err.value.code == "unknown_plan" and err.value.status == 422


def test_monthly_only_plan_is_allowed() -> None:
    extra = {"id": "lite", "name": "Lite", "kind": "paid", "video_retention_days": 3}
    cat = Catalogue.from_config(config(extra | {"snapshot_retention_days": 3, "monthly_price": 199}))
    assert cat.plan("lite").kind is PlanKind.PAID and not cat.plan("lite").sold_with(Billing.ANNUAL)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (config(dict(DEFAULT_CONFIG["plans"][2])), "appears twice"),
        (
            config(
                {"id": "free2", "name": "F", "kind": "free", "video": False, "snapshot_retention_days": 1}
            ),
            "exactly one free plan",
        ),
        ({"currency": "USD", "plans": list(DEFAULT_CONFIG["plans"][2:])}, "exactly one trial plan"),
        (
            config({"id": "x", "name": "X", "kind": "paid", "snapshot_retention_days": 0}),
            "snapshot_retention_days",
        ),
        (
            config(
                {"id": "x", "name": "X", "kind": "paid", "snapshot_retention_days": 1, "monthly_price": -1}
            ),
            "prices must be >= 0",
        ),
        (
            config(
                {"id": "x", "name": "X", "kind": "paid", "snapshot_retention_days": 1, "annual_price": 100}
            ),
            "annual price needs a monthly price",
        ),
        (
            config({"id": "x", "name": "X", "kind": "paid", "snapshot_retention_days": 1}),
            "needs a monthly or",
        ),
        (
            config(
                {
                    "id": "x",
                    "name": "X",
                    "kind": "paid",
                    "snapshot_retention_days": 1,
                    "monthly_price": 1,
                    "colour": 1,
                }
            ),
            "unknown key 'colour'",
        ),
        (
            config(
                {"id": "x", "name": "X", "kind": "paid", "snapshot_retention_days": 1, "monthly_price": 9.99}
            ),
            "monthly_price must be int",
        ),
        (
            config(
                {"id": "x", "name": "X", "kind": "paid", "snapshot_retention_days": True, "monthly_price": 1}
            ),
            "snapshot_retention_days must be int",
        ),
        (
            config({"id": "x", "name": "X", "kind": "gold", "snapshot_retention_days": 1}),
            "kind must be one of",
        ),
        ({"currency": "USD", "plans": []}, "non-empty list"),
        ({"currency": "usd", "plans": DEFAULT_CONFIG["plans"]}, "ISO 4217"),
        ({"currency": "USD", "plans": DEFAULT_CONFIG["plans"], "tax": 1}, "unknown keys"),
    ],
)
def test_invalid_catalogues_fail_loudly(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(CatalogueInvalid) as err:
        Catalogue.from_config(data)
    assert problem in str(err.value)


def test_every_problem_is_listed_at_once() -> None:
    data = config(
        {"id": "x", "name": "X", "kind": "paid", "snapshot_retention_days": 0},
        {"id": "y", "name": "Y", "kind": "paid", "snapshot_retention_days": 1, "monthly_price": -5},
    )
    with pytest.raises(CatalogueInvalid) as err:
        Catalogue.from_config(data)
    assert [p.split(":")[0] for p in err.value.problems] == ["plan 'x'"] * 3 + ["plan 'y'"] * 2


def test_money_is_integer_minor_units_in_one_currency() -> None:
    assert str(Money(8901, "USD")) == "89.01 USD"
    assert str(Money(-5, "EUR")) == "-0.05 EUR"
    assert Money(999, "USD") * 3 - Money(1, "USD") == Money(2996, "USD")
    assert max(Money(0, "USD"), Money(-1, "USD")) == Money(0, "USD")
    with pytest.raises(ValueError, match="cannot mix"):
        _ = Money(1, "USD") + Money(1, "EUR")
    with pytest.raises(TypeError):
        Money(9.99, "USD")  # type: ignore[arg-type]


def test_a_demo_day_shortens_trial_terms_and_retention_but_not_months() -> None:
    cat = Catalogue.from_config({**DEFAULT_CONFIG, "day_seconds": 20})
    assert cat.day == timedelta(seconds=20)
    now = datetime(2026, 1, 31, tzinfo=UTC)

    def buy(plan_id: str, billing: Billing) -> Subscription:
        return purchase(
            cat,
            plan_id,
            billing,
            device_id="d",
            account_id="a",
            now=now,
            existing=[],
            account_trial_used=False,
            account_trial_device=None,
        ).subscription

    trial = buy("trial", Billing.TRIAL)
    assert trial.ends_at - trial.starts_at == timedelta(seconds=14 * 20)
    kept = retention_for(cat, trial, now)
    assert (kept.video_period, kept.snapshot_period) == (timedelta(seconds=140), timedelta(seconds=140))
    assert buy("basic-7", Billing.MONTHLY).ends_at == datetime(2026, 2, 28, tzinfo=UTC)  # a calendar month
    assert default_catalogue().day == timedelta(days=1)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "20"])
def test_day_seconds_must_be_a_positive_whole_number(bad: object) -> None:
    with pytest.raises(CatalogueInvalid, match="day_seconds"):
        Catalogue.from_config({**DEFAULT_CONFIG, "day_seconds": bad})
