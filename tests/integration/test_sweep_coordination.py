"""Sweepers that crash, race each other, or meet a store that refuses some deletes."""

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.adapters.db.tables import clips, events
from gateway.bootstrap import Services
from gateway.config import Settings
from gateway.services.sweep import LANES, Sweeper
from storage import DeleteFailure, DeleteReport, ObjectStore, StorageUnavailable, StoreRouter
from tests.integration.conftest import test_settings
from tests.support.expired import (
    REGION,
    count_rows,
    expired_at,
    new_account,
    region_settings,
    seed_event,
    seed_many,
    stored_entries,
)
from tests.support.s3server import S3Bucket, S3Server


@pytest.fixture(params=["s3", "local"])
def bucket(request: pytest.FixtureRequest) -> S3Bucket | None:
    """The region's store: a versioned bucket on the S3 server, or (None) the local folder."""
    if request.param == "local":
        return None
    return request.getfixturevalue("versioned_s3_bucket")  # type: ignore[no-any-return]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, bucket: S3Bucket | None) -> Settings:
    """Test settings with region sg on the store under test, and a short lease."""
    return test_settings(database_url, tmp_path, sweep={"lease_s": 60}, **region_settings(bucket))


class StoreOutage:
    """Test double of the external store: passes every call through except ``delete_many``, which can
    hang forever (a process that dies mid-request), fail for some keys, or fail outright."""

    def __init__(
        self,
        inner: ObjectStore,
        *,
        hang: bool = False,
        delete_first: bool = False,
        refuse: frozenset[str] = frozenset(),
        down: bool = False,
    ) -> None:
        self.inner = inner
        self.hang, self.delete_first, self.refuse, self.down = hang, delete_first, refuse, down
        self.entered = asyncio.Event()
        self.asked: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def delete_many(self, keys: Sequence[str]) -> DeleteReport:
        self.asked += keys
        self.entered.set()
        if self.down:
            raise StorageUnavailable("S3 answered ServiceUnavailable")
        if self.hang:
            if self.delete_first:
                await self.inner.delete_many(keys)
            await asyncio.Event().wait()
        report = await self.inner.delete_many([k for k in keys if k not in self.refuse])
        failed = tuple(
            DeleteFailure(k, None, "AccessDenied", "Access Denied") for k in keys if k in self.refuse
        )
        return DeleteReport(report.deleted, report.failed + failed)


def sweeper(services: Services, name: str, store: Any = None) -> Sweeper:
    """A sweeper of its own (another gateway instance), optionally on a stand-in store."""
    stores: Mapping[str, Any] = {REGION: store} if store is not None else {}
    router = StoreRouter(stores) if stores else services.stores
    return Sweeper(services.engine, router, services.settings.sweep, services.clock, name)


@pytest.mark.parametrize("delete_first", [False, True], ids=["before-delete", "after-delete"])
async def test_a_crashed_sweep_is_finished_after_its_lease(
    services: Services, bucket: S3Bucket | None, s3_server: S3Server, delete_first: bool
) -> None:
    seeded = await seed_many(services, 30, services.clock.now())
    services.clock.advance(seconds=1)
    outage = StoreOutage(services.stores.for_region(REGION), hang=True, delete_first=delete_first)
    crashing = asyncio.create_task(sweeper(services, "crashes", outage).run(batch_size=10))
    await asyncio.wait_for(outage.entered.wait(), 10)
    await asyncio.sleep(0.2)  # the other lanes claim their batches meanwhile
    crashing.cancel()  # the process dies: no clean-up runs
    with pytest.raises(asyncio.CancelledError):
        await crashing

    async with services.engine.connect() as conn:
        held = [
            *(await conn.execute(select(events.c.claimed_by))).scalars(),
            *(await conn.execute(select(clips.c.claimed_by))).scalars(),
        ]
    claimed = [h for h in held if h is not None]
    assert (
        len(held) == 30
        and 10 <= len(claimed) <= 10 * LANES
        and all(h.startswith("crashes/") for h in claimed)
    )

    rescuer = sweeper(services, "rescues")
    first = await rescuer.run(batch_size=10)
    assert first.ok and first.records == 30 - len(claimed), "the crashed batches are still leased"
    services.clock.advance(seconds=61)
    second = await rescuer.run(batch_size=10)
    assert second.ok and second.records == len(claimed)
    assert first.objects + second.objects == sum(len(s.keys) for s in seeded)
    assert await count_rows(services, events) == 0 and await count_rows(services, clips) == 0
    assert not stored_entries(services, bucket, s3_server)


async def test_two_sweepers_never_do_the_same_work(
    services: Services, bucket: S3Bucket | None, s3_server: S3Server
) -> None:
    seeded = await seed_many(services, 90, services.clock.now(), accounts_count=4)
    services.clock.advance(seconds=1)
    stores = [StoreOutage(services.stores.for_region(REGION)) for _ in range(2)]
    one, two = await asyncio.gather(
        sweeper(services, "one", stores[0]).run(batch_size=4),
        sweeper(services, "two", stores[1]).run(batch_size=4),
    )
    assert one.ok and two.ok
    assert one.records + two.records == 90
    assert one.objects + two.objects == sum(len(s.keys) for s in seeded)
    for account in {s.account_id for s in seeded}:
        mine = [s for s in seeded if s.account_id == account]
        tallies = [r.accounts[account] for r in (one, two) if account in r.accounts]
        assert sum(t.objects for t in tallies) == sum(len(s.keys) for s in mine)
        assert sum(t.bytes for t in tallies) == sum(s.bytes for s in mine)
    assert not set(stores[0].asked) & set(stores[1].asked), "no key was deleted by both"
    assert await count_rows(services, events) == 0 and await count_rows(services, clips) == 0
    assert not stored_entries(services, bucket, s3_server)


async def test_keys_the_store_refuses_keep_their_records(
    services: Services, bucket: S3Bucket | None, s3_server: S3Server
) -> None:
    account, camera = await new_account(services)
    seeded = [await seed_event(services, account, camera, expired_at(services)) for _ in range(6)]
    refused = seeded[:2]
    outage = StoreOutage(
        services.stores.for_region(REGION), refuse=frozenset({refused[0].keys[1], refused[1].keys[0]})
    )
    report = await sweeper(services, "partial", outage).run(batch_size=2)
    assert not report.ok and report.failed_records == 2
    assert (report.records, report.objects) == (4, 8)
    assert sorted(report.failed_keys) == sorted([refused[0].keys[1], refused[1].keys[0]])
    async with services.engine.connect() as conn:
        rows = (await conn.execute(select(events.c.id, events.c.claimed_by))).all()
    assert {r.id for r in rows} == {s.id for s in refused}
    assert all(r.claimed_by is None for r in rows), "released for a later run"
    assert {refused[0].keys[1], refused[1].keys[0]} <= stored_entries(services, bucket, s3_server)

    retry = await sweeper(services, "healthy").run()
    assert retry.ok and (retry.records, retry.objects) == (2, 4)
    assert not stored_entries(services, bucket, s3_server)


async def test_a_store_that_is_down_is_left_alone_for_the_run(
    services: Services, bucket: S3Bucket | None, s3_server: S3Server
) -> None:
    await seed_many(services, 12, services.clock.now())
    services.clock.advance(seconds=1)
    before = stored_entries(services, bucket, s3_server)
    outage = StoreOutage(services.stores.for_region(REGION), down=True)
    report = await sweeper(services, "unlucky", outage).run(batch_size=3)
    assert not report.ok and report.records == 0
    assert 3 <= report.failed_records <= 3 * LANES, "the region sits out the run after its first failure"
    assert report.errors and "ServiceUnavailable" in report.errors[0]
    assert stored_entries(services, bucket, s3_server) == before
    async with services.engine.connect() as conn:
        held = (await conn.execute(select(events.c.claimed_by))).scalars().all()
    assert all(h is None for h in held), "failed claims are released, unstarted ones never made"
    assert (await sweeper(services, "later").run()).records == 12
