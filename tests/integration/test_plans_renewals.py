"""Monthly renewals on the manual clock, both databases: one charge per period however often the job runs
and however many instances run it, renewal ahead of the end so coverage never lapses (and cancelling a
period renewed ahead), a missed renewal resuming from now without charging for the gap, and the renewal
ending (without a charge) when the payment is declined or the device has left the account."""

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
    move_to(clock, PERIOD_END)  # exactly at the end: on time, the next period follows on
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


async def test_a_missed_renewal_resumes_now_and_never_charges_for_the_gap(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, device, sub = await monthly(client, mailbox, fleet)
    late = datetime(2026, 6, 20, tzinfo=UTC)  # the job did not run for three periods: the device was free
    move_to(clock, late)
    assert await services.plans.renew_due() == RenewalReport(renewed=1)
    assert await services.plans.renew_due() == RenewalReport()
    old, new = await periods(services)
    assert (old["id"], old["status"], old["auto_renew"]) == (sub["id"], "ended", False)
    assert (new["renewal_of"], new["starts_at"], new["anchor_at"]) == (sub["id"], late, late)
    assert new["ends_at"] == datetime(2026, 7, 20, tzinfo=UTC)  # calendar months from the new anchor
    assert await ledger(services) == [(sub["id"], "charge", 399, "USD"), (new["id"], "charge", 399, "USD")]
    async with services.engine.connect() as conn:
        entry = (
            await conn.execute(select(audit_log).where(audit_log.c.action == "plan.renewal_resumed"))
        ).one()
    assert (entry.target_id, entry.detail["gap_from"], entry.detail["reason"]) == (
        new["id"],
        PERIOD_END.isoformat(),
        "renewal_missed",
    )
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert (plans["plan_id"], plans["current"]["id"]) == ("basic-7", new["id"])
    # Back on schedule: the next renewal follows on from the new anchor, ahead of the end.
    move_to(clock, datetime(2026, 7, 20, tzinfo=UTC) - timedelta(hours=1))
    assert await services.plans.renew_due() == RenewalReport(renewed=1)
    rows = await periods(services)
    assert (rows[-1]["starts_at"], rows[-1]["ends_at"]) == (
        datetime(2026, 7, 20, tzinfo=UTC),
        datetime(2026, 8, 20, tzinfo=UTC),
    )
    assert all(a["ends_at"] <= b["starts_at"] for a, b in pairwise(rows))
    assert len(await ledger(services)) == 3


async def test_cancelling_a_period_renewed_ahead_refunds_its_renewal_and_keeps_the_period(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, device, sub = await monthly(client, mailbox, fleet)
    move_to(clock, PERIOD_END - timedelta(hours=1))
    assert (await services.plans.renew_due()).renewed == 1
    _, new = await periods(services)
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert (plans["current"]["id"], plans["current"]["status"]) == (sub["id"], "active")
    url = f"/v1/subscriptions/{sub['id']}"
    quote = await (await client.get(f"{url}/refund-quote", headers=auth(token))).json()
    assert (quote["refund"]["amount"], quote["status"], when(quote["ends_at"])) == (
        399,
        "cancelled",
        PERIOD_END,
    )
    resp = await client.post(f"{url}/cancel", headers=auth(token))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["refund"]["amount"] == 399
    shown = body["subscription"]
    assert (shown["status"], shown["auto_renew"], when(shown["ends_at"])) == ("cancelled", False, PERIOD_END)
    assert await ledger(services) == [
        (sub["id"], "charge", 399, "USD"),
        (new["id"], "charge", 399, "USD"),
        (new["id"], "refund", 399, "USD"),
    ]
    old, renewed = await periods(services)
    assert (old["status"], old["auto_renew"], renewed["status"]) == ("cancelled", False, "refunded")
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["plan_id"] == "basic-7" and plans["queued"] == []
    resp = await client.post(f"{url}/cancel", headers=auth(token))
    assert resp.status == 409 and (await resp.json())["code"] == "already_cancelled"
    move_to(clock, PERIOD_END)
    assert await services.plans.renew_due() == RenewalReport()
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["plan_id"] == "free" and plans["current"] is None


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
    assert (row["status"], row["auto_renew"]) == ("cancelled", False)  # still paid for, not renewing
    assert await ledger(services) == [(sub["id"], "charge", 399, "USD")]
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["current"]["status"] == "cancelled"
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
