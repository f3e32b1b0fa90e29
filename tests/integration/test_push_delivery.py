"""The push outbox dispatcher on real databases, delivering to a real local HTTP receiver.

Outbox rows are inserted the way the ingest service writes them (event and outbox row together). The
dispatchers get a jitter that always takes the longest wait, so retry times are exact; time moves only
when a test advances the clock.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.adapters.db.engine import create_engine
from gateway.adapters.db.tables import (
    accounts,
    audit_log,
    devices,
    events,
    push_deliveries,
    push_outbox,
    push_targets,
)
from gateway.adapters.push import push_providers
from gateway.adapters.push.webhook import verify_signature
from gateway.bootstrap import Services, build
from gateway.config import Settings
from gateway.services.push import PushService
from storage.keys import MediaKey, MediaKind
from tests.integration.conftest import test_settings
from tests.support.api import auth, new_user
from tests.support.clock import ManualClock
from tests.support.s3server import S3Bucket

BASE_S = 10.0  # backoff_base_s: the first retry comes 10 s after a failure, the second 20 s …


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Receivers listen on 127.0.0.1, so private addresses are allowed here."""
    return test_settings(database_url, tmp_path, push=push_overrides())


def push_overrides(**extra: Any) -> dict[str, Any]:
    """The push settings of these tests."""
    return {
        "allow_private_addresses": True,
        "max_attempts": 3,
        "backoff_base_s": BASE_S,
        "backoff_max_s": 100.0,
        "timeout_s": 2.0,
        "poll_s": 0.05,
        **extra,
    }


@dataclass
class Hit:
    name: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver: records every request; answers each path from a script (the last answer
    repeats; 200 when there is none)."""

    server: TestServer | None = None
    hits: list[Hit] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    delay_s: float = 0.0

    def answer(self, name: str, *responses: tuple[int, dict[str, str]]) -> None:
        self.script[name] = list(responses)

    def url(self, name: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/hook/{name}"))

    def of(self, name: str) -> list[Hit]:
        return [h for h in self.hits if h.name == name]

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits.append(Hit(name, dict(request.headers), await request.read()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        script = self.script.get(name) or [(200, {})]
        status, headers = script.pop(0) if len(script) > 1 else script[0]
        return web.Response(status=status, headers=headers)


@pytest.fixture
async def receiver(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]) -> Receiver:
    """A real HTTP server on 127.0.0.1 taking POST /hook/<name>."""
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{name}", receiver.handle)
    receiver.server = await aiohttp_server(app)
    return receiver


@dataclass(frozen=True)
class Seeded:
    account_id: str
    device_id: str
    event_id: str
    outbox_id: int


async def seed_account(engine: AsyncEngine, now: datetime) -> str:
    account_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(
            insert(accounts).values(
                id=account_id,
                email=f"{account_id}@example.com",
                password_hash="-",
                birth_date=date(1990, 1, 1),
                region="sg",
                status="active",
                created_at=now,
            )
        )
    return account_id


async def seed_event(
    engine: AsyncEngine, now: datetime, account_id: str, device_id: str | None = None
) -> Seeded:
    """An event and its outbox row, written in one transaction as the ingest service does."""
    event_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        if device_id is None:
            device_id = str(uuid.uuid4())
            await conn.execute(
                insert(devices).values(
                    id=device_id,
                    serial=uuid.uuid4().hex[:12].upper(),
                    model="CG-1",
                    code_hash="-",
                    broker_secret_hash="-",
                    owner_account_id=account_id,
                    name="Porch",
                    bound_at=now,
                    imported_at=now,
                )
            )
        keys = {
            kind: str(MediaKey(account_id, device_id, kind, now.date(), event_id, "jpg"))
            for kind in (MediaKind.SNAPSHOT, MediaKind.THUMBNAIL)
        }
        await conn.execute(
            insert(events).values(
                id=event_id,
                account_id=account_id,
                device_id=device_id,
                camera_event_id=uuid.uuid4().hex,
                kind="motion",
                captured_at=now - timedelta(seconds=2),
                received_at=now,
                region="sg",
                snapshot_key=keys[MediaKind.SNAPSHOT],
                thumbnail_key=keys[MediaKind.THUMBNAIL],
                snapshot_bytes=1000,
                width=640,
                height=480,
                retain_until=now + timedelta(days=3),
            )
        )
        outbox_id = (
            await conn.execute(
                insert(push_outbox)
                .values(event_id=event_id, account_id=account_id, created_at=now, next_attempt_at=now)
                .returning(push_outbox.c.id)
            )
        ).scalar_one()
    return Seeded(account_id, device_id, event_id, outbox_id)


_DISPATCHERS: list[PushService] = []


@pytest.fixture(autouse=True)
async def _close_dispatchers() -> AsyncIterator[None]:
    """Each dispatcher's providers hold an HTTP session: closed after the test."""
    yield
    while _DISPATCHERS:
        await _DISPATCHERS.pop().aclose()


def dispatcher(
    services: Services, *, engine: AsyncEngine | None = None, instance: str = "gw-1", **push: Any
) -> PushService:
    """Another dispatcher on the same database, as a second gateway instance (or a restarted one) has."""
    settings = services.settings
    if push:
        settings = settings.model_copy(update={"push": settings.push.model_copy(update=push)})
    providers = push_providers(settings, services.pepper, services.clock)
    made = PushService(
        engine or services.engine,
        settings,
        services.clock,
        providers,
        services.stores,
        instance=instance,
        jitter=lambda ceiling: ceiling,
    )
    _DISPATCHERS.append(made)
    return made


async def outbox_row(services: Services, outbox_id: int) -> Any:
    async with services.engine.connect() as conn:
        return (await conn.execute(select(push_outbox).where(push_outbox.c.id == outbox_id))).mappings().one()


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_one_signed_post_per_target(services: Services, receiver: Receiver, clock: ManualClock) -> None:
    account = await seed_account(services.engine, clock.now())
    a, secret_a = await services.push.add_target(account, "webhook", receiver.url("a"))
    b, secret_b = await services.push.add_target(account, "webhook", receiver.url("b"))
    seeded = await seed_event(services.engine, clock.now(), account)
    delivered_before = counter("camgate_push_deliveries_total", provider="webhook", outcome="delivered")
    push = dispatcher(services)

    assert await push.run_once() == 1
    assert await push.run_once() == 0

    for name, secret in (("a", secret_a), ("b", secret_b)):
        [hit] = receiver.of(name)
        assert secret is not None
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["Idempotency-Key"] == seeded.event_id
        assert hit.headers["X-Camgate-Delivery"] == str(seeded.outbox_id)
        signature = hit.headers["X-Camgate-Signature"]
        assert signature.startswith(f"t={int(clock.now().timestamp())},v1=")
        assert verify_signature(secret, signature, hit.body, now=clock.now().timestamp())
        assert not verify_signature(secret_b if name == "a" else secret_a, signature, hit.body, now=0)
        assert json.loads(hit.body) == {
            "type": "alert",
            "event": {
                "id": seeded.event_id,
                "device_id": seeded.device_id,
                "device_name": "Porch",
                "kind": "motion",
                "captured_at": (clock.now() - timedelta(seconds=2)).isoformat().replace("+00:00", "Z"),
            },
            # The local store signs no links: the API serves the thumbnail to its owner.
            "thumbnail_url": f"/v1/events/{seeded.event_id}/thumbnail",
        }
    row = await outbox_row(services, seeded.outbox_id)
    assert row["done_at"] == clock.now()
    assert (row["attempts"], row["last_error"], row["claimed_by"]) == (1, None, None)
    async with services.engine.connect() as conn:
        recorded = (await conn.execute(select(push_deliveries.c.target_id, push_deliveries.c.status))).all()
    assert sorted(recorded) == sorted([(a.id, 200), (b.id, 200)])
    after = counter("camgate_push_deliveries_total", provider="webhook", outcome="delivered")
    assert after - delivered_before == 2


async def test_no_targets_means_done(services: Services, clock: ManualClock) -> None:
    account = await seed_account(services.engine, clock.now())
    seeded = await seed_event(services.engine, clock.now(), account)
    assert await dispatcher(services).run_once() == 1
    assert (await outbox_row(services, seeded.outbox_id))["done_at"] == clock.now()


async def test_a_target_added_after_the_event_does_not_get_it(
    services: Services, receiver: Receiver, clock: ManualClock
) -> None:
    account = await seed_account(services.engine, clock.now())
    await seed_event(services.engine, clock.now(), account)
    clock.advance(seconds=1)
    await services.push.add_target(account, "webhook", receiver.url("late"))
    assert await dispatcher(services).run_once() == 1
    assert receiver.hits == []


async def test_retried_after_the_backoff_and_not_before(
    services: Services, receiver: Receiver, clock: ManualClock
) -> None:
    account = await seed_account(services.engine, clock.now())
    await services.push.add_target(account, "webhook", receiver.url("flaky"))
    receiver.answer("flaky", (500, {}), (200, {}))
    seeded = await seed_event(services.engine, clock.now(), account)
    push = dispatcher(services)

    assert await push.run_once() == 1
    row = await outbox_row(services, seeded.outbox_id)
    assert row["done_at"] is None
    assert (row["attempts"], row["claimed_by"]) == (1, None)
    assert "HTTP 500" in row["last_error"]
    assert row["next_attempt_at"] == clock.now() + timedelta(seconds=BASE_S)

    assert await push.run_once() == 0
    clock.advance(seconds=BASE_S - 1)
    assert await push.run_once() == 0
    assert len(receiver.of("flaky")) == 1

    clock.advance(seconds=1)
    assert await push.run_once() == 1
    assert len(receiver.of("flaky")) == 2
    row = await outbox_row(services, seeded.outbox_id)
    assert (row["done_at"], row["attempts"], row["last_error"]) == (clock.now(), 2, None)
    # Both attempts carry the same idempotency key: the receiver can tell a retry from a new alert.
    assert {h.headers["Idempotency-Key"] for h in receiver.hits} == {seeded.event_id}


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_honoured(
    services: Services, receiver: Receiver, clock: ManualClock, status: int, form: str
) -> None:
    account = await seed_account(services.engine, clock.now())
    await services.push.add_target(account, "webhook", receiver.url("busy"))
    value = "120" if form == "seconds" else format_datetime(clock.now() + timedelta(seconds=120), usegmt=True)
    receiver.answer("busy", (status, {"Retry-After": value}), (200, {}))
    seeded = await seed_event(services.engine, clock.now(), account)
    push = dispatcher(services)

    assert await push.run_once() == 1
    assert (await outbox_row(services, seeded.outbox_id))["next_attempt_at"] == clock.now() + timedelta(
        seconds=120
    )
    clock.advance(seconds=BASE_S)  # past the backoff alone
    assert await push.run_once() == 0
    clock.advance(seconds=119 - BASE_S)
    assert await push.run_once() == 0
    assert len(receiver.of("busy")) == 1
    clock.advance(seconds=1)
    assert await push.run_once() == 1
    assert len(receiver.of("busy")) == 2
    assert (await outbox_row(services, seeded.outbox_id))["done_at"] == clock.now()


async def test_given_up_after_max_attempts(
    services: Services, receiver: Receiver, clock: ManualClock
) -> None:
    account = await seed_account(services.engine, clock.now())
    await services.push.add_target(account, "webhook", receiver.url("down"))
    receiver.answer("down", (500, {}))
    seeded = await seed_event(services.engine, clock.now(), account)
    push = dispatcher(services)
    given_up_before = counter("camgate_push_given_up_total")

    for _ in range(3):  # max_attempts
        assert await push.run_once() == 1
        clock.advance(seconds=100)  # the backoff cap
    row = await outbox_row(services, seeded.outbox_id)
    assert row["done_at"] is not None
    assert row["attempts"] == 3
    assert "HTTP 500" in row["last_error"]
    assert counter("camgate_push_given_up_total") - given_up_before == 1
    clock.advance(days=1)
    assert await push.run_once() == 0
    assert len(receiver.of("down")) == 3


async def test_a_restart_retries_only_the_failed_target(
    services: Services, receiver: Receiver, clock: ManualClock
) -> None:
    account = await seed_account(services.engine, clock.now())
    await services.push.add_target(account, "webhook", receiver.url("ok"))
    await services.push.add_target(account, "webhook", receiver.url("flaky"))
    receiver.answer("flaky", (502, {}), (200, {}))
    seeded = await seed_event(services.engine, clock.now(), account)

    assert await dispatcher(services, instance="before-restart").run_once() == 1
    assert (len(receiver.of("ok")), len(receiver.of("flaky"))) == (1, 1)

    clock.advance(seconds=BASE_S)
    assert await dispatcher(services, instance="after-restart").run_once() == 1
    assert (len(receiver.of("ok")), len(receiver.of("flaky"))) == (1, 2)
    assert (await outbox_row(services, seeded.outbox_id))["done_at"] == clock.now()


async def test_a_crashed_instances_row_waits_for_its_lease_then_skips_what_was_delivered(
    services: Services, receiver: Receiver, clock: ManualClock
) -> None:
    account = await seed_account(services.engine, clock.now())
    got_it, _ = await services.push.add_target(account, "webhook", receiver.url("got-it"))
    await services.push.add_target(account, "webhook", receiver.url("waiting"))
    seeded = await seed_event(services.engine, clock.now(), account)
    # An instance claimed the row, delivered to one target, and died before finishing.
    async with services.engine.begin() as conn:
        await conn.execute(
            push_outbox.update()
            .where(push_outbox.c.id == seeded.outbox_id)
            .values(claimed_by="dead-instance/1", claimed_until=clock.now() + timedelta(seconds=60))
        )
        await conn.execute(
            insert(push_deliveries).values(
                outbox_id=seeded.outbox_id, target_id=got_it.id, delivered_at=clock.now(), status=200
            )
        )
    push = dispatcher(services)
    assert await push.run_once() == 0  # its lease still holds
    clock.advance(seconds=61)
    assert await push.run_once() == 1
    assert (len(receiver.of("got-it")), len(receiver.of("waiting"))) == (0, 1)
    assert (await outbox_row(services, seeded.outbox_id))["done_at"] == clock.now()


@pytest.mark.parametrize("status", [404, 410])
async def test_a_gone_target_is_removed(
    services: Services, receiver: Receiver, clock: ManualClock, status: int
) -> None:
    account = await seed_account(services.engine, clock.now())
    gone, _ = await services.push.add_target(account, "webhook", receiver.url("gone"))
    await services.push.add_target(account, "webhook", receiver.url("fine"))
    receiver.answer("gone", (status, {}))
    seeded = await seed_event(services.engine, clock.now(), account)

    assert await dispatcher(services).run_once() == 1
    assert [t.address for t in await services.push.list_targets(account)] == [receiver.url("fine")]
    assert (await outbox_row(services, seeded.outbox_id))["done_at"] == clock.now()
    async with services.engine.connect() as conn:
        entry = (
            (await conn.execute(select(audit_log).where(audit_log.c.action == "push_target.removed")))
            .mappings()
            .one()
        )
    assert (entry["account_id"], entry["actor"], entry["target_id"]) == (account, "system", gone.id)
    assert entry["detail"] == {"reason": "gone", "status": status}

    await seed_event(services.engine, clock.now(), account)
    assert await dispatcher(services).run_once() == 1
    assert len(receiver.of("gone")) == 1


async def test_a_slow_receiver_times_out_and_is_retried(
    services: Services, receiver: Receiver, clock: ManualClock
) -> None:
    account = await seed_account(services.engine, clock.now())
    await services.push.add_target(account, "webhook", receiver.url("slow"))
    seeded = await seed_event(services.engine, clock.now(), account)
    receiver.delay_s = 0.5
    assert await dispatcher(services, timeout_s=0.1).run_once() == 1
    row = await outbox_row(services, seeded.outbox_id)
    assert row["done_at"] is None
    assert "timeout" in row["last_error"]


async def test_redirects_are_not_followed(services: Services, receiver: Receiver, clock: ManualClock) -> None:
    account = await seed_account(services.engine, clock.now())
    await services.push.add_target(account, "webhook", receiver.url("moved"))
    receiver.answer("moved", (307, {"Location": receiver.url("elsewhere")}))
    seeded = await seed_event(services.engine, clock.now(), account)
    assert await dispatcher(services).run_once() == 1
    assert receiver.of("elsewhere") == []
    assert "HTTP 307" in (await outbox_row(services, seeded.outbox_id))["last_error"]


async def test_addresses_are_checked_again_at_delivery(
    services: Services, receiver: Receiver, clock: ManualClock
) -> None:
    account = await seed_account(services.engine, clock.now())
    await services.push.add_target(account, "webhook", receiver.url("inside"))
    seeded = await seed_event(services.engine, clock.now(), account)
    assert await dispatcher(services, allow_private_addresses=False).run_once() == 1
    assert receiver.hits == []
    assert "webhook_address_forbidden" in (await outbox_row(services, seeded.outbox_id))["last_error"]


async def test_two_instances_deliver_each_event_once_to_each_target(
    services: Services, receiver: Receiver, clock: ManualClock, settings: Settings
) -> None:
    account = await seed_account(services.engine, clock.now())
    names = ["x", "y", "z"]
    for name in names:
        await services.push.add_target(account, "webhook", receiver.url(name))
    first = await seed_event(services.engine, clock.now(), account)
    seeded = [first] + [
        await seed_event(services.engine, clock.now(), account, first.device_id) for _ in range(11)
    ]
    receiver.delay_s = 0.01  # keeps deliveries in flight while the other instance claims
    other_engine = create_engine(settings.database.url)
    try:
        one = dispatcher(services, instance="gw-1")
        two = dispatcher(services, engine=other_engine, instance="gw-2")
        rounds = 0
        while True:
            handled = await asyncio.gather(one.run_once(), two.run_once(), one.run_once(), two.run_once())
            rounds += 1
            assert max(handled) <= settings.push.workers  # a run claims one batch, no more
            if sum(handled) == 0:
                break
            assert rounds < 20
    finally:
        await other_engine.dispose()
    for name in names:
        keys = sorted(h.headers["Idempotency-Key"] for h in receiver.of(name))
        assert keys == sorted(s.event_id for s in seeded), name
    async with services.engine.connect() as conn:
        pending = (await conn.execute(select(push_outbox.c.id).where(push_outbox.c.done_at.is_(None)))).all()
    assert pending == []


async def test_the_app_runs_the_dispatcher(
    client: TestClient, mailbox: Path, services: Services, receiver: Receiver, clock: ManualClock
) -> None:
    token = await new_user(client, mailbox, "pat@example.com")
    account = (await (await client.get("/v1/me", headers=auth(token))).json())["id"]
    resp = await client.post(
        "/v1/push-targets", json={"kind": "webhook", "url": receiver.url("app")}, headers=auth(token)
    )
    created = await resp.json()
    assert resp.status == 201, created
    seeded = await seed_event(services.engine, clock.now(), account)
    for _ in range(200):
        if receiver.hits:
            break
        await asyncio.sleep(0.025)
    [hit] = receiver.of("app")
    assert verify_signature(
        created["secret"], hit.headers["X-Camgate-Signature"], hit.body, now=clock.now().timestamp()
    )
    assert json.loads(hit.body)["event"]["id"] == seeded.event_id
    async with services.engine.connect() as conn:
        targets = (await conn.execute(select(push_targets.c.id))).scalars().all()
    assert targets == [created["id"]]


async def test_thumbnail_link_is_presigned_on_s3(
    receiver: Receiver, clock: ManualClock, database_url: str, tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    settings = test_settings(
        database_url,
        tmp_path,
        push=push_overrides(thumbnail_link_ttl_s=600),
        regions={"sg": {"display_name": "Singapore", "store": s3_bucket.settings()}},
    )
    async with AsyncExitStack() as stack:
        services = await build(settings, stack, clock=clock)
        account = await seed_account(services.engine, clock.now())
        await services.push.add_target(account, "webhook", receiver.url("rich"))
        seeded = await seed_event(services.engine, clock.now(), account)
        assert await dispatcher(services).run_once() == 1
    link = json.loads(receiver.of("rich")[0].body)["thumbnail_url"]
    assert link.startswith(f"{s3_bucket.endpoint_url}/{s3_bucket.name}/")
    assert f"/thumb/{clock.now():%Y/%m/%d}/{seeded.event_id}.jpg" in link
    assert "X-Amz-Expires=600" in link


async def test_closing_the_service_stops_its_loops(services: Services) -> None:
    push = dispatcher(services)
    stop = asyncio.Event()
    loop = asyncio.create_task(push.run_forever(stop))
    await asyncio.sleep(0.1)  # a few idle polls
    await push.aclose()
    assert stop.is_set()
    assert loop.done() and loop.exception() is None
