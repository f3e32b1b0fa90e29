"""The retention sweep on a controllable clock: both databases, an S3 server with a versioned bucket, and
the local store."""

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.adapters.db.tables import clips, events, push_outbox
from gateway.bootstrap import Services
from gateway.config import Settings
from tests.integration.conftest import test_settings
from tests.support.expired import (
    REGION,
    count_rows,
    new_account,
    region_settings,
    seed_clip,
    seed_event,
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
    """Test settings with region sg on the store under test."""
    return test_settings(database_url, tmp_path, **region_settings(bucket))


async def test_sweep_deletes_what_expired_and_only_that(
    services: Services, bucket: S3Bucket | None, s3_server: S3Server
) -> None:
    clock = services.clock
    alice, alice_cam = await new_account(services)
    bob, bob_cam = await new_account(services)
    day = clock.now()
    short = day + timedelta(days=3)
    long = day + timedelta(days=30)
    gone = [
        await seed_event(services, alice, alice_cam, short, size=1000),
        await seed_event(services, alice, alice_cam, short, size=2000),
        await seed_clip(services, alice, alice_cam, short, size=50_000),
        await seed_event(services, bob, bob_cam, short, size=4000),
    ]
    kept = [
        await seed_event(services, alice, alice_cam, long, size=8000),
        await seed_clip(services, bob, bob_cam, long, size=9000),
    ]
    store = services.stores.for_region(REGION)
    if bucket is not None:
        # History a plain overwrite and a plain DELETE leave in a versioned bucket: all of it must go.
        await store.put(gone[0].keys[0], b"second version", content_type="image/jpeg", if_absent=False)
        admin = s3_server.admin()
        admin.delete_object(Bucket=bucket.name, Key=gone[2].keys[0])  # a delete marker on top
        admin.put_object(Bucket=bucket.name, Key=gone[2].keys[0], Body=b"and a version above it")
        admin.close()

    early = await services.sweeper.run()
    assert early.objects == 0 and early.records == 0, "nothing has expired yet"

    clock.advance(days=3)
    preview = await services.sweeper.run(dry_run=True)
    assert stored_entries(services, bucket, s3_server) >= {k for s in gone + kept for k in s.keys}
    assert await count_rows(services, events) == 4 and await count_rows(services, clips) == 2
    assert preview.dry_run and preview.objects == 7 and preview.records == 4

    report = await services.sweeper.run()
    assert report.ok and not report.dry_run
    assert {a: (t.objects, t.bytes, t.records) for a, t in report.accounts.items()} == {
        alice: (5, 53_000, 3),
        bob: (2, 4000, 1),
    }
    assert (report.objects, report.bytes, report.records) == (7, 57_000, 4)
    assert {a: (t.objects, t.bytes) for a, t in preview.accounts.items()} == {
        a: (t.objects, t.bytes) for a, t in report.accounts.items()
    }, "the dry run reported what the sweep then deleted"

    left = stored_entries(services, bucket, s3_server)
    assert not left & {k for s in gone for k in s.keys}, "every version and delete marker is gone"
    assert left >= {k for s in kept for k in s.keys}
    async with services.engine.connect() as conn:
        assert set((await conn.execute(select(events.c.id))).scalars()) == {kept[0].id}
        assert set((await conn.execute(select(clips.c.id))).scalars()) == {kept[1].id}
        outbox = set((await conn.execute(select(push_outbox.c.event_id))).scalars())
    assert outbox == {kept[0].id}, "the swept events' outbox rows went with them"

    again = await services.sweeper.run()
    assert again.ok and again.objects == 0 and again.records == 0, "idempotent: nothing left to do"

    clock.advance(days=30)
    last = await services.sweeper.run(batch_size=1)
    assert (last.objects, last.records) == (3, 2)
    assert not stored_entries(services, bucket, s3_server) & {k for s in kept for k in s.keys}


async def test_dry_run_changes_nothing(
    services: Services, bucket: S3Bucket | None, s3_server: S3Server
) -> None:
    account, camera = await new_account(services)
    seeded = [await seed_event(services, account, camera, services.clock.now()) for _ in range(3)]
    services.clock.advance(seconds=1)
    before = stored_entries(services, bucket, s3_server)
    progress: list[int] = []
    report = await services.sweeper.run(dry_run=True, progress=progress.append)
    assert report.dry_run and (report.objects, report.records) == (6, 3) and progress == [6]
    assert stored_entries(services, bucket, s3_server) == before
    async with services.engine.connect() as conn:
        claimed = (await conn.execute(select(events.c.claimed_by))).scalars().all()
    assert claimed == [None, None, None], "a dry run claims nothing"
    real = await services.sweeper.run(region=REGION)
    assert (real.objects, real.records) == (6, 3)
    assert not stored_entries(services, bucket, s3_server) & {k for s in seeded for k in s.keys}
