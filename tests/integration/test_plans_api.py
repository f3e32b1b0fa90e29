"""The plans API on both databases: the catalogue, buying, queueing, quotes, cancelling with the ledger,
refused trials and transfers, declined payments, racing trials and the storage usage endpoint.
Renewals are in test_plans_renewals.py. The clock starts at the worked example's purchase time
(docs/plans.md: an annual standard-30 bought on 2026-03-15 09:00 UTC)."""

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from device_sim.registry import SimDevice
from gateway.adapters.db.tables import audit_log, events, payments, subscriptions, trial_claims
from gateway.adapters.payments import LedgerProvider, PaymentDeclined
from gateway.bootstrap import Services
from gateway.config import Settings
from gateway.domain.plans import Money
from gateway.ports import Receipt
from gateway.services.plans import PlanService
from tests.integration.conftest import test_settings
from tests.support.api import auth, new_user
from tests.support.clock import ManualClock
from tests.support.media import alert
from tests.support.seed import seed_clip

T0 = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """The app's clock, at the worked example's purchase time."""
    return ManualClock(T0)


def long_session_settings(database_url: str, tmp_path: Path) -> Settings:
    """Default test settings with sessions that outlive the year these tests move through."""
    security = {
        "secret_key": "k" * 40,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8192,
        "token_ttl_days": 800,
    }
    return test_settings(database_url, tmp_path, security=security)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Sessions that outlive the clock's moves."""
    return long_session_settings(database_url, tmp_path)


class DecliningProvider:
    """Stands in for an external payment network that refuses every card."""

    def __init__(self) -> None:
        self.attempts = 0

    async def charge(self, account_id: str, amount: Money, reference: str, description: str) -> Receipt:
        self.attempts += 1
        raise PaymentDeclined("card declined (test provider)")

    async def refund(self, account_id: str, amount: Money, reference: str, original_ref: str) -> Receipt:
        self.attempts += 1
        raise PaymentDeclined("refund refused (test provider)")


class LostReplyProvider:
    """Stands in for a provider whose first refund goes through but whose reply is lost (a timeout): the
    cancel's transaction rolls back after the money went out, and the client retries."""

    def __init__(self) -> None:
        self.inner = LedgerProvider()
        self.refunds: list[Receipt] = []

    async def charge(self, account_id: str, amount: Money, reference: str, description: str) -> Receipt:
        return await self.inner.charge(account_id, amount, reference, description)

    async def refund(self, account_id: str, amount: Money, reference: str, original_ref: str) -> Receipt:
        receipt = await self.inner.refund(account_id, amount, reference, original_ref)
        self.refunds.append(receipt)
        if len(self.refunds) == 1:
            raise TimeoutError("no reply from the payment provider (test provider)")
        return receipt


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def bind(client: TestClient, token: str, cam: SimDevice) -> str:
    """Binds ``cam`` to the token's account; returns the device id."""
    resp = await client.post(
        "/v1/devices", json={"serial": cam.serial, "code": cam.code}, headers=auth(token)
    )
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["device"]["id"])


async def buy(
    client: TestClient,
    token: str,
    device_id: str,
    plan_id: str,
    billing: str,
    status: int = 201,
    key: str | None = None,
) -> dict[str, Any]:
    headers = auth(token) | ({"Idempotency-Key": key} if key is not None else {})
    resp = await client.post(
        f"/v1/devices/{device_id}/plans", json={"plan_id": plan_id, "billing": billing}, headers=headers
    )
    body: dict[str, Any] = await resp.json(content_type=None)
    assert resp.status == status, body
    return body


async def refused(resp: Any, status: int, code: str) -> None:
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = await resp.json(content_type=None)
    assert (resp.status, body["code"]) == (status, code), body


async def ledger(services: Services) -> list[tuple[str, str, int, str]]:
    """Every payments row: (subscription id, kind, amount, currency), oldest first."""
    async with services.engine.connect() as conn:
        rows = await conn.execute(
            select(
                payments.c.subscription_id, payments.c.kind, payments.c.amount, payments.c.currency
            ).order_by(payments.c.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def count(services: Services, table: Any) -> int:
    async with services.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def owner(
    client: TestClient, mailbox: Path, cams: list[SimDevice], who: str = "p@example.com"
) -> tuple[str, list[str]]:
    token = await new_user(client, mailbox, who)
    return token, [await bind(client, token, cam) for cam in cams]


async def test_catalogue_lists_every_plan_with_prices(client: TestClient) -> None:
    resp = await client.get("/v1/plans")  # public: what is for sale is no secret
    assert resp.status == 200
    body = await resp.json()
    plans = {p["id"]: p for p in body["items"]}
    assert body["currency"] == "USD" and list(plans) == [
        "free",
        "trial",
        "basic-7",
        "standard-30",
        "premium-60",
    ]
    basic = plans["basic-7"]
    assert basic["monthly_price"] == {"amount": 399, "currency": "USD", "display": "3.99 USD"}
    assert basic["annual_price"]["amount"] == 3900 and basic["billings"] == ["monthly", "annual"]
    assert (basic["video"], basic["video_retention_days"], basic["snapshot_retention_days"]) == (True, 7, 7)
    assert basic["storage_quota_bytes"] == 8192 * 1024 * 1024
    trial = plans["trial"]
    assert (trial["term_days"], trial["billings"], trial["monthly_price"]) == (14, ["trial"], None)
    assert (plans["free"]["video"], plans["free"]["billings"]) == (False, [])


async def test_trial_is_active_for_fourteen_days_and_once_per_account(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, (first, second) = await owner(client, mailbox, fleet[:2])
    sub = await buy(client, token, first, "trial", "trial")
    assert (sub["status"], sub["billing"], sub["device_id"]) == ("active", "trial", first)
    assert when(sub["starts_at"]) == T0 and when(sub["ends_at"]) == T0 + timedelta(days=14)
    assert sub["charged"]["amount"] == 0 and sub["auto_renew"] is False
    plans = await (await client.get(f"/v1/devices/{first}/plans", headers=auth(token))).json()
    assert plans["plan_id"] == "trial" and plans["current"]["id"] == sub["id"] and plans["queued"] == []

    resp = await client.post(
        f"/v1/devices/{first}/plans", json={"plan_id": "trial", "billing": "trial"}, headers=auth(token)
    )
    await refused(resp, 409, "trial_already_used")
    resp = await client.post(
        f"/v1/devices/{second}/plans", json={"plan_id": "trial", "billing": "trial"}, headers=auth(token)
    )
    await refused(resp, 409, "trial_not_for_this_device")
    # even after it has ended, on the same device
    clock.advance(days=20)
    resp = await client.post(
        f"/v1/devices/{first}/plans", json={"plan_id": "trial", "billing": "trial"}, headers=auth(token)
    )
    await refused(resp, 409, "trial_already_used")
    assert await count(services, trial_claims) == 1 and await ledger(services) == []  # a trial costs nothing


async def test_trial_cannot_be_cancelled(client: TestClient, mailbox: Path, fleet: list[SimDevice]) -> None:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    sub = await buy(client, token, device, "trial", "trial")
    for action in ("refund-quote", "cancel"):
        method = "GET" if action == "refund-quote" else "POST"
        resp = await client.request(method, f"/v1/subscriptions/{sub['id']}/{action}", headers=auth(token))
        await refused(resp, 409, "trial_not_cancellable")


async def test_plan_bought_on_top_is_queued_and_refunded_in_full_before_it_starts(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    trial = await buy(client, token, device, "trial", "trial")
    clock.advance(days=3)
    queued = await buy(client, token, device, "premium-60", "annual")
    assert queued["status"] == "queued" and queued["starts_at"] == trial["ends_at"]
    assert when(queued["ends_at"]) == datetime(2027, 3, 29, 9, 0, tzinfo=UTC)  # 12 months from its start
    assert queued["charged"] == {"amount": 14900, "currency": "USD", "display": "149.00 USD"}
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["current"]["id"] == trial["id"] and [q["id"] for q in plans["queued"]] == [queued["id"]]
    assert [i["id"] for i in plans["items"]] == [queued["id"], trial["id"]]

    quote = await (
        await client.get(f"/v1/subscriptions/{queued['id']}/refund-quote", headers=auth(token))
    ).json()
    assert (quote["refund"]["amount"], quote["status"]) == (14900, "refunded")
    resp = await client.post(f"/v1/subscriptions/{queued['id']}/cancel", headers=auth(token))
    assert resp.status == 200
    body = await resp.json()
    assert body["refund"]["amount"] == 14900 and body["subscription"]["status"] == "refunded"
    assert await ledger(services) == [
        (queued["id"], "charge", 14900, "USD"),
        (queued["id"], "refund", 14900, "USD"),
    ]
    resp = await client.post(f"/v1/subscriptions/{queued['id']}/cancel", headers=auth(token))
    await refused(resp, 409, "already_cancelled")
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["queued"] == [] and plans["current"]["id"] == trial["id"]
    async with services.engine.connect() as conn:
        actions = (await conn.execute(select(audit_log.c.action).order_by(audit_log.c.id))).scalars().all()
    assert actions[-3:] == ["plan.purchased", "plan.purchased", "plan.cancelled"]


async def test_monthly_cancel_refunds_nothing_and_keeps_access_to_the_period_end(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    sub = await buy(client, token, device, "standard-30", "monthly")
    assert sub["auto_renew"] is True and when(sub["ends_at"]) == datetime(2026, 4, 15, 9, 0, tzinfo=UTC)
    resp = await client.post(
        f"/v1/devices/{device}/plans", json={"plan_id": "basic-7", "billing": "annual"}, headers=auth(token)
    )
    await refused(resp, 409, "cancel_renewal_first")
    clock.advance(days=1)
    body = await (await client.post(f"/v1/subscriptions/{sub['id']}/cancel", headers=auth(token))).json()
    assert body["refund"]["amount"] == 0
    assert (body["subscription"]["status"], body["subscription"]["auto_renew"]) == ("cancelled", False)
    assert body["subscription"]["ends_at"] == sub["ends_at"]
    assert await ledger(services) == [(sub["id"], "charge", 999, "USD")]  # no refund row for nothing
    clock.advance(days=28)  # still inside the month paid for
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["plan_id"] == "standard-30" and plans["current"]["status"] == "cancelled"
    # a new plan now queues at the end of the cancelled one
    nxt = await buy(client, token, device, "basic-7", "annual")
    assert nxt["status"] == "queued" and nxt["starts_at"] == sub["ends_at"]
    clock.advance(days=2)
    assert (await services.plans.renew_due()).renewed == 0
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["plan_id"] == "basic-7" and plans["current"]["id"] == nxt["id"]


@pytest.mark.parametrize(
    ("cancelled_at", "refund", "access_until"),
    [
        (datetime(2026, 4, 16, 9, 0, tzinfo=UTC), 7902, datetime(2026, 5, 15, 9, 0, tzinfo=UTC)),  # B
        (datetime(2026, 11, 16, 9, 0, tzinfo=UTC), 909, datetime(2026, 12, 15, 9, 0, tzinfo=UTC)),  # D
        (datetime(2026, 12, 16, 9, 0, tzinfo=UTC), 0, datetime(2027, 3, 15, 9, 0, tzinfo=UTC)),  # E
    ],
)
async def test_annual_cancel_mid_way_refunds_per_the_worked_examples(
    client: TestClient,
    mailbox: Path,
    fleet: list[SimDevice],
    services: Services,
    clock: ManualClock,
    cancelled_at: datetime,
    refund: int,
    access_until: datetime,
) -> None:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    sub = await buy(client, token, device, "standard-30", "annual")
    assert sub["charged"]["amount"] == 9900 and when(sub["ends_at"]) == datetime(
        2027, 3, 15, 9, 0, tzinfo=UTC
    )
    clock.advance(seconds=(cancelled_at - T0).total_seconds())
    quote = await (
        await client.get(f"/v1/subscriptions/{sub['id']}/refund-quote", headers=auth(token))
    ).json()
    assert (quote["refund"]["amount"], when(quote["ends_at"]), quote["status"]) == (
        refund,
        access_until,
        "cancelled",
    )
    body = await (await client.post(f"/v1/subscriptions/{sub['id']}/cancel", headers=auth(token))).json()
    assert body["refund"] == quote["refund"] and when(body["subscription"]["ends_at"]) == access_until
    expected = [(sub["id"], "charge", 9900, "USD")] + (
        [(sub["id"], "refund", refund, "USD")] if refund else []
    )
    assert await ledger(services) == expected
    async with services.engine.connect() as conn:
        refs = (await conn.execute(select(payments.c.provider, payments.c.provider_ref))).all()
    assert all(p == "ledger" and ref.startswith("ledger-") for p, ref in refs) and len(
        {r for _, r in refs}
    ) == len(refs)
    clock.advance(seconds=(access_until - clock.now()).total_seconds() - 1)
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["plan_id"] == "standard-30"  # access to the end of the paid period …
    clock.advance(seconds=1)
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["plan_id"] == "free" and plans["current"] is None  # … and not a second longer


async def test_transfer_is_refused(client: TestClient, mailbox: Path, fleet: list[SimDevice]) -> None:
    token, (first, second) = await owner(client, mailbox, fleet[:2])
    for plan_id, billing in (("trial", "trial"), ("basic-7", "annual")):
        device = first if plan_id == "trial" else second
        sub = await buy(client, token, device, plan_id, billing)
        other = second if device == first else first
        resp = await client.post(
            f"/v1/subscriptions/{sub['id']}/transfer", json={"device_id": other}, headers=auth(token)
        )
        await refused(resp, 409, "plan_not_transferable")


async def test_unbuyable_plans_are_refused_with_their_code(
    client: TestClient, mailbox: Path, fleet: list[SimDevice]
) -> None:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    cases = [
        ({"plan_id": "gold-99", "billing": "monthly"}, 422, "unknown_plan"),
        ({"plan_id": "free", "billing": "monthly"}, 409, "free_plan_not_purchasable"),
        ({"plan_id": "trial", "billing": "annual"}, 409, "plan_not_sold_with_billing"),
        ({"plan_id": "basic-7", "billing": "trial"}, 409, "plan_not_sold_with_billing"),
        ({"plan_id": "basic-7", "billing": "weekly"}, 422, "validation_failed"),
        ({"plan_id": "basic-7"}, 422, "validation_failed"),
    ]
    for body, status, code in cases:
        resp = await client.post(f"/v1/devices/{device}/plans", json=body, headers=auth(token))
        await refused(resp, status, code)
    resp = await client.post(
        f"/v1/devices/{device}/plans", data=b"{", headers={**auth(token), "Content-Type": "application/json"}
    )
    await refused(resp, 400, "malformed_json")


async def test_declined_payment_answers_402_and_records_nothing(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    provider = DecliningProvider()
    services.plans = PlanService(services.engine, services.settings.catalogue(), provider, services.clock)
    resp = await client.post(
        f"/v1/devices/{device}/plans", json={"plan_id": "basic-7", "billing": "monthly"}, headers=auth(token)
    )
    await refused(resp, 402, "payment_declined")
    assert provider.attempts == 1
    assert await count(services, subscriptions) == 0 and await ledger(services) == []
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["plan_id"] == "free" and plans["items"] == []
    # the trial needs no payment, so the declining provider is never asked
    assert (await buy(client, token, device, "trial", "trial"))["status"] == "active"
    assert provider.attempts == 1


async def test_concurrent_trials_of_one_account_exactly_one_wins(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    token, devices = await owner(client, mailbox, fleet[:3])
    attempts = [d for d in devices for _ in range(2)]  # two at once on each of three devices

    async def attempt(device_id: str) -> tuple[int, str]:
        resp = await client.post(
            f"/v1/devices/{device_id}/plans",
            json={"plan_id": "trial", "billing": "trial"},
            headers=auth(token),
        )
        body = await resp.json(content_type=None)
        return resp.status, body.get("code", body.get("status"))

    results = await asyncio.gather(*(attempt(d) for d in attempts))
    assert sorted(s for s, _ in results) == [201, 409, 409, 409, 409, 409], results
    assert {c for s, c in results if s == 409} <= {"trial_already_used", "trial_not_for_this_device"}
    assert await count(services, trial_claims) == 1 and await count(services, subscriptions) == 1


async def test_concurrent_purchases_for_one_device_queue_one_behind_the_other(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    bought = await asyncio.gather(*(buy(client, token, device, "basic-7", "annual") for _ in range(3)))
    chain = sorted(bought, key=lambda b: b["starts_at"])
    assert [b["status"] for b in chain] == ["active", "queued", "queued"]
    assert when(chain[0]["starts_at"]) == T0
    assert all(a["ends_at"] == b["starts_at"] for a, b in pairwise(chain))  # no overlap, no gap
    assert [k for _, k, _, _ in await ledger(services)] == ["charge"] * 3


async def test_usage_counts_snapshots_and_clips_against_the_quota(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    token, (first, _second) = await owner(client, mailbox, fleet[:2])
    me = await (await client.get("/v1/me", headers=auth(token))).json()
    mb = 1024 * 1024
    usage = await (await client.get("/v1/storage/usage", headers=auth(token))).json()
    empty = {"count": 0, "bytes": 0}
    assert usage == {"used_bytes": 0, "quota_bytes": 2 * 512 * mb, "snapshots": empty, "clips": empty}

    await buy(client, token, first, "trial", "trial")
    await services.ingest.handle(f"cam/{fleet[0].serial}/alert", alert("u-1", at=services.clock.now()))
    (event,) = (await (await client.get("/v1/events", headers=auth(token))).json())["items"]
    await seed_clip(services, me["id"], first, data=b"x" * 12345)
    usage = await (await client.get("/v1/storage/usage", headers=auth(token))).json()
    async with services.engine.connect() as conn:
        thumbnail = (await conn.execute(select(events.c.thumbnail_bytes))).scalar_one()
    assert 0 < thumbnail < event["snapshot_bytes"]
    # The snapshot and its thumbnail are both stored, and both count.
    assert usage["snapshots"] == {"count": 1, "bytes": event["snapshot_bytes"] + thumbnail}
    assert usage["clips"] == {"count": 1, "bytes": 12345}
    assert usage["used_bytes"] == event["snapshot_bytes"] + thumbnail + 12345
    assert usage["quota_bytes"] == (4096 + 512) * mb  # the trial device's quota plus the free one's
    other = await new_user(client, mailbox, "other@example.com")
    theirs = await (await client.get("/v1/storage/usage", headers=auth(other))).json()
    assert theirs["used_bytes"] == 0 and theirs["quota_bytes"] == 0  # no devices, nothing of the first


async def test_another_accounts_ids_answer_404(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    alice, (device,) = await owner(client, mailbox, fleet[:1], "alice@example.com")
    sub = await buy(client, alice, device, "basic-7", "annual")
    mallory, (own_device,) = await owner(client, mailbox, fleet[1:2], "mallory@example.com")
    own = await buy(client, mallory, own_device, "basic-7", "annual")
    calls = [
        ("GET", f"/v1/devices/{device}/plans", None, "device_not_found"),
        ("POST", f"/v1/devices/{device}/plans", {"plan_id": "trial", "billing": "trial"}, "device_not_found"),
        ("GET", f"/v1/subscriptions/{sub['id']}/refund-quote", None, "subscription_not_found"),
        ("POST", f"/v1/subscriptions/{sub['id']}/cancel", None, "subscription_not_found"),
        (
            "POST",
            f"/v1/subscriptions/{sub['id']}/transfer",
            {"device_id": own_device},
            "subscription_not_found",
        ),
        # her own subscription to someone else's device: the device is not found before the rule applies
        ("POST", f"/v1/subscriptions/{own['id']}/transfer", {"device_id": device}, "device_not_found"),
        ("GET", "/v1/subscriptions/no-such-id/refund-quote", None, "subscription_not_found"),
    ]
    for method, url, body, code in calls:
        resp = await client.request(method, url, json=body, headers=auth(mallory))
        await refused(resp, 404, code)
    after = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(alice))).json()
    assert after["current"]["id"] == sub["id"] and after["current"]["status"] == "active"
    assert await count(services, trial_claims) == 0


async def test_an_annual_cancelled_with_a_refund_moves_the_queued_plans_up(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    first = await buy(client, token, device, "standard-30", "annual")
    second = await buy(client, token, device, "basic-7", "annual")
    third = await buy(client, token, device, "premium-60", "monthly")
    assert when(third["starts_at"]) == datetime(2028, 3, 15, 9, 0, tzinfo=UTC)
    clock.advance(seconds=(datetime(2026, 4, 16, 9, 0, tzinfo=UTC) - T0).total_seconds())  # example B
    body = await (await client.post(f"/v1/subscriptions/{first['id']}/cancel", headers=auth(token))).json()
    new_end = datetime(2026, 5, 15, 9, 0, tzinfo=UTC)
    assert body["refund"]["amount"] == 7902 and when(body["subscription"]["ends_at"]) == new_end
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    queued = {q["id"]: (when(q["starts_at"]), when(q["ends_at"]), q["status"]) for q in plans["queued"]}
    assert queued == {
        second["id"]: (new_end, datetime(2027, 5, 15, 9, 0, tzinfo=UTC), "queued"),
        third["id"]: (
            datetime(2027, 5, 15, 9, 0, tzinfo=UTC),
            datetime(2027, 6, 15, 9, 0, tzinfo=UTC),
            "queued",
        ),
    }
    async with services.engine.connect() as conn:
        anchors = dict((await conn.execute(select(subscriptions.c.id, subscriptions.c.anchor_at))).all())
        moved = (
            await conn.execute(select(audit_log.c.target_id).where(audit_log.c.action == "plan.rescheduled"))
        ).scalars()
        assert sorted(moved) == sorted([second["id"], third["id"]])
    assert (anchors[second["id"]], anchors[third["id"]]) == (new_end, datetime(2027, 5, 15, 9, 0, tzinfo=UTC))
    assert [k for _, k, _, _ in await ledger(services)] == ["charge"] * 3 + ["refund"]  # nothing else paid
    clock.advance(seconds=(new_end - clock.now()).total_seconds())
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert (plans["plan_id"], plans["current"]["id"]) == ("basic-7", second["id"])  # no uncovered gap


async def test_refunding_a_queued_plan_mid_chain_moves_the_later_ones_up(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    first, middle, last = [await buy(client, token, device, "basic-7", "annual") for _ in range(3)]
    assert when(last["starts_at"]) == datetime(2028, 3, 15, 9, 0, tzinfo=UTC)
    body = await (await client.post(f"/v1/subscriptions/{middle['id']}/cancel", headers=auth(token))).json()
    assert (body["refund"]["amount"], body["subscription"]["status"]) == (3900, "refunded")
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    (queued,) = plans["queued"]
    assert queued["id"] == last["id"] and queued["starts_at"] == first["ends_at"]
    assert when(queued["ends_at"]) == datetime(2028, 3, 15, 9, 0, tzinfo=UTC)
    # The next purchase queues at the end of the chain as it is now.
    assert (await buy(client, token, device, "basic-7", "annual"))["starts_at"] == queued["ends_at"]


async def test_a_repeated_idempotency_key_returns_the_first_purchase(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    token, (device, other_device) = await owner(client, mailbox, fleet[:2])
    first = await buy(client, token, device, "basic-7", "annual", key="order-1")
    again = await buy(client, token, device, "basic-7", "annual", key="order-1")
    assert again["id"] == first["id"] and again["status"] == "active"
    racing = await asyncio.gather(
        *(buy(client, token, device, "standard-30", "annual", key="order-2") for _ in range(3))
    )
    assert len({r["id"] for r in racing}) == 1 and racing[0]["status"] == "queued"
    assert [k for _, k, _, _ in await ledger(services)] == ["charge", "charge"]  # one per key
    assert await count(services, subscriptions) == 2
    resp = await client.post(  # another purchase under a used key
        f"/v1/devices/{device}/plans",
        json={"plan_id": "premium-60", "billing": "annual"},
        headers={**auth(token), "Idempotency-Key": "order-1"},
    )
    await refused(resp, 409, "idempotency_key_reused")
    resp = await client.post(
        f"/v1/devices/{other_device}/plans",
        json={"plan_id": "basic-7", "billing": "annual"},
        headers={**auth(token), "Idempotency-Key": "order-1"},
    )
    await refused(resp, 409, "idempotency_key_reused")
    resp = await client.post(
        f"/v1/devices/{device}/plans",
        json={"plan_id": "basic-7", "billing": "annual"},
        headers={**auth(token), "Idempotency-Key": "k" * 201},
    )
    await refused(resp, 422, "invalid_idempotency_key")
    # Keys are per account: another account's "order-1" is its own purchase.
    other, (theirs,) = await owner(client, mailbox, fleet[2:3], "other@example.com")
    mine = await buy(client, other, theirs, "basic-7", "annual", key="order-1")
    assert mine["id"] != first["id"] and mine["device_id"] == theirs
    assert await count(services, subscriptions) == 3


async def test_a_cancel_retried_after_the_refund_went_out_pays_out_once(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services, clock: ManualClock
) -> None:
    token, (device,) = await owner(client, mailbox, fleet[:1])
    provider = LostReplyProvider()
    services.plans = PlanService(services.engine, services.settings.catalogue(), provider, clock)
    sub = await buy(client, token, device, "standard-30", "annual")
    clock.advance(days=32)
    url = f"/v1/subscriptions/{sub['id']}/cancel"
    assert (await client.post(url, headers=auth(token))).status == 500  # money out, nothing committed
    plans = await (await client.get(f"/v1/devices/{device}/plans", headers=auth(token))).json()
    assert plans["current"]["status"] == "active" and await ledger(services) == [
        (sub["id"], "charge", 9900, "USD")
    ]
    body = await (await client.post(url, headers=auth(token))).json()
    assert body["refund"]["amount"] == 7902
    first, retried = provider.refunds
    assert first == retried  # the provider recognised the reference: one refund, not two
    async with services.engine.connect() as conn:
        refs = (await conn.execute(select(payments.c.provider_ref).where(payments.c.kind == "refund"))).all()
    assert refs == [(first.provider_ref,)]
