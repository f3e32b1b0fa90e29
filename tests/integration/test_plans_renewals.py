"""Monthly renewals on the manual clock, both databases: one charge per period however often the job runs
and however many instances run it, renewal ahead of the end so coverage never lapses, catching up on
overdue periods, and the renewal ending (without a charge) when the payment is declined or the device
has left the account."""

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from device_sim.registry import SimDevice
from gateway.adapters.db.tables import audit_log, subscriptions
from gateway.adapters.payments import LedgerProvider
from gateway.bootstrap import Services
from gateway.config import Settings
from gateway.services.coverage import coverage_at
from gateway.services.plans import PlanService, RenewalReport
from tests.integration.test_plans_api import (
    T0,
    DecliningProvider,
    buy,
    ledger,
    long_session_settings,
    owner,
    when,
)
from tests.support.api import auth
from tests.support.clock import ManualClock

PERIOD_END = datetime(2026, 4, 15, 9, 0, tzinfo=UTC)  # a monthly plan bought at T0 (2026-03-15 09:00)


@pytest.fixture
def clock() -> ManualClock:
    """The app's clock, at the purchase time of docs/plans.md's examples."""
    return ManualClock(T0)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Sessions that outlive the clock's moves."""
    return long_session_settings(database_url, tmp_path)


def move_to(clock: ManualClock, at: datetime) -> None:
    clock.advance(seconds=(at - clock.now()).total_seconds())


async def periods(services: Services) -> list[dict[str, Any]]:
    """Every subscription row, in period order."""
    async with services.engine.connect() as conn:
        rows = await conn.execute(select(subscriptions).order_by(subscriptions.c.starts_at))
        return [dict(r._mapping) for r in rows]


async def monthly(
    client: TestClient, mailbox: Path, fleet: list[SimDevice]
) -> tuple[str, str, dict[str, Any]]:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    sub = await buy(client, token, device, "basic-7", "monthly")
    assert when(sub["ends_at"]) == PERIOD_END
    return token, device, sub


async def test_a_due_period_is_renewed_and_charged_once(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, device, sub = await monthly(client, mailbox, fleet)
    move_to(clock, PERIOD_END - timedelta(hours=3))
    assert await services.plans.renew_due() == RenewalReport()  # not due yet
    move_to(clock, PERIOD_END + timedelta(minutes=5))
    assert await services.plans.renew_due() == RenewalReport(renewed=1)
    assert await services.plans.renew_due() == RenewalReport()  # a second run finds nothing
    old, new = await periods(services)
    assert (old["id"], old["status"]) == (sub["id"], "ended")
    assert (new["renewal_of"], new["period"], new["status"], new["amount_paid"]) == (
        sub["id"],
        2,
        "active",
        399,
    )
    assert (new["starts_at"], new["ends_at"]) == (PERIOD_END, datetime(2026, 5, 15, 9, 0, tzinfo=UTC))
    assert await ledger(services) == [(sub["id"], "charge", 399, "USD"), (new["id"], "charge", 399, "USD")]
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    current = plans["current"]
    assert (current["id"], current["period"], current["renewal_of"], current["status"]) == (
        new["id"],
        2,
        sub["id"],
        "active",
    )
    assert [i["status"] for i in plans["items"]] == ["active", "ended"]


async def test_renewal_ahead_of_the_end_leaves_no_gap_and_can_be_refunded(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, device, sub = await monthly(client, mailbox, fleet)
    me = await (await client.get("/v1/me", headers=auth(token))).json()
    move_to(clock, PERIOD_END - timedelta(hours=1))
    assert (await services.plans.renew_due()).renewed == 1
    _, new = await periods(services)
    async with services.engine.connect() as conn:
        for at in (PERIOD_END - timedelta(seconds=1), PERIOD_END, PERIOD_END + timedelta(days=20)):
            cover = await coverage_at(conn, services.settings.catalogue(), device, me["id"], at)
            assert cover.plan.id == "basic-7", at
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert (plans["current"]["id"], plans["current"]["status"]) == (sub["id"], "active")
    assert [q["id"] for q in plans["queued"]] == [new["id"]]
    # The renewed period has not started: cancelling it is a queued plan's full refund.
    body = await (await client.post(f"/v1/subscriptions/{new['id']}/cancel", headers=auth(token))).json()
    assert (body["refund"]["amount"], body["subscription"]["status"]) == (399, "refunded")
    assert [k for _, k, _, _ in await ledger(services)] == ["charge", "charge", "refund"]
    move_to(clock, PERIOD_END)
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["plan_id"] == "free" and plans["current"] is None
    assert await services.plans.renew_due() == RenewalReport()


async def test_two_instances_renewing_at_once_charge_once(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    await monthly(client, mailbox, fleet)
    other = PlanService(services.engine, services.settings.catalogue(), LedgerProvider(), clock)
    move_to(clock, PERIOD_END + timedelta(minutes=1))
    reports = await asyncio.gather(services.plans.renew_due(), other.renew_due(), services.plans.renew_due())
    assert sum(r.renewed for r in reports) == 1 and all(r.failed == 0 for r in reports)
    assert [k for _, k, _, _ in await ledger(services)] == ["charge", "charge"]
    assert len(await periods(services)) == 2


async def test_overdue_periods_catch_up_without_gaps(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    _, _, sub = await monthly(client, mailbox, fleet)
    move_to(clock, datetime(2026, 6, 20, tzinfo=UTC))  # the job did not run for three periods
    assert (await services.plans.renew_due()).renewed == 3
    rows = await periods(services)
    assert [r["period"] for r in rows] == [1, 2, 3, 4] and rows[0]["id"] == sub["id"]
    assert all(a["ends_at"] == b["starts_at"] and b["renewal_of"] == a["id"] for a, b in pairwise(rows))
    assert rows[-1]["ends_at"] == datetime(2026, 7, 15, 9, 0, tzinfo=UTC)
    assert len(await ledger(services)) == 4


async def test_declined_renewal_ends_the_plan_at_its_period_end(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, device, sub = await monthly(client, mailbox, fleet)
    provider = DecliningProvider()
    services.plans = PlanService(services.engine, services.settings.catalogue(), provider, clock)
    move_to(clock, PERIOD_END - timedelta(hours=1))
    assert await services.plans.renew_due() == RenewalReport(declined=1)
    assert await services.plans.renew_due() == RenewalReport()  # asked once, not every hour
    assert provider.attempts == 1
    (row,) = await periods(services)
    assert (row["status"], row["auto_renew"]) == ("ended", False)
    assert await ledger(services) == [(sub["id"], "charge", 399, "USD")]
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["current"]["status"] == "cancelled"  # still paid for, not renewing
    move_to(clock, PERIOD_END)
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["plan_id"] == "free"
    async with services.engine.connect() as conn:
        entry = (
            await conn.execute(select(audit_log).where(audit_log.c.action == "plan.renewal_stopped"))
        ).one()
    assert entry.detail["reason"] == "payment_declined" and entry.target_id == sub["id"]


async def test_renewal_stops_when_the_device_left_the_account(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, device, sub = await monthly(client, mailbox, fleet)
    assert (await client.delete(f"/v1/devices/{device}", headers=auth(token))).status == 204
    move_to(clock, PERIOD_END + timedelta(minutes=1))
    assert await services.plans.renew_due() == RenewalReport(stopped=1)
    (row,) = await periods(services)
    assert (row["status"], row["auto_renew"]) == ("ended", False)
    assert await ledger(services) == [(sub["id"], "charge", 399, "USD")]
