"""Reconciliation both ways (objects without records, records without objects) and stale temporary data,
on both databases, a versioned bucket on the S3 server and the local store."""

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.adapters.db.tables import clips, events, job_leases
from gateway.bootstrap import Services
from gateway.config import Settings
from gateway.services import reconcile
from gateway.services.reconcile import acquire_lease
from tests.integration.conftest import test_settings
from tests.support.clock import ManualClock
from tests.support.expired import (
    REGION,
    count_rows,
    later,
    new_account,
    real_now,
    region_settings,
    seed_clip,
    seed_event,
    stored_entries,
)
from tests.support.s3server import S3Bucket, S3Server

GRACE_S = 3600


@pytest.fixture(params=["s3", "local"])
def bucket(request: pytest.FixtureRequest) -> S3Bucket | None:
    """The region's store: a versioned bucket on the S3 server, or (None) the local folder."""
    if request.param == "local":
        return None
    return request.getfixturevalue("versioned_s3_bucket")  # type: ignore[no-any-return]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, bucket: S3Bucket | None) -> Settings:
    """Region sg on the store under test; the default orphan grace of an hour."""
    sweep = {"orphan_grace_s": GRACE_S, "lease_s": 120}
    return test_settings(database_url, tmp_path, sweep=sweep, **region_settings(bucket))


@pytest.fixture
def clock() -> ManualClock:
    """Starts at the wall clock: stores stamp objects with real time, and the grace is measured on it."""
    return ManualClock(real_now())


async def test_objects_without_records_go_after_the_grace(
    services: Services, bucket: S3Bucket | None, s3_server: S3Server
) -> None:
    account, camera = await new_account(services)
    kept = [
        await seed_event(services, account, camera, later(services)),
        await seed_clip(services, account, camera, later(services)),
    ]
    orphan = await seed_event(services, account, camera, later(services))  # its record is then lost
    async with services.engine.begin() as conn:
        await conn.execute(events.delete().where(events.c.id == orphan.id))
    store = services.stores.for_region(REGION)
    stray = f"acct/{account}/notes/readme.txt"  # under acct/ but outside the media layout
    await store.put(stray, b"left by hand", content_type="text/plain")
    if bucket is not None:  # a history of versions that must go with it
        await store.put(orphan.keys[0], b"v2", content_type="image/jpeg", if_absent=False)

    services.clock.advance(seconds=GRACE_S / 2)
    early = await services.sweeper.reconcile(REGION)
    assert early.ok and (early.orphans, early.recent, early.unparseable) == (0, 2, 1)
    assert early.listed == 6 and early.missing == 0

    services.clock.advance(seconds=GRACE_S)
    preview = await services.sweeper.reconcile(REGION, dry_run=True)
    assert preview.dry_run and (preview.orphans, preview.recent) == (2, 0)
    assert set(orphan.keys) <= stored_entries(services, bucket, s3_server), "a dry run deletes nothing"

    report = await services.sweeper.reconcile(REGION)
    assert report.ok and report.changed
    assert (report.orphans, report.recent, report.unparseable, report.missing) == (2, 0, 1, 0)
    assert report.orphan_bytes == (2 if bucket is not None else orphan.bytes) + 50
    assert report.samples["unparseable"] == [stray]
    left = stored_entries(services, bucket, s3_server)
    assert not left & set(orphan.keys), "every version of the orphans is gone"
    assert left >= {k for s in kept for k in s.keys} | {stray}

    again = await services.sweeper.reconcile(REGION)
    assert again.ok and not again.changed and again.listed == 4


async def test_records_without_objects_are_removed(
    services: Services, bucket: S3Bucket | None, s3_server: S3Server
) -> None:
    account, camera = await new_account(services)
    whole = await seed_event(services, account, camera, later(services))
    no_snapshot = await seed_event(services, account, camera, later(services))
    no_thumbnail = await seed_event(services, account, camera, later(services))
    no_clip = await seed_clip(services, account, camera, later(services))
    store = services.stores.for_region(REGION)
    await store.delete_many([no_snapshot.keys[0], no_thumbnail.keys[1], no_clip.keys[0]])

    preview = await services.sweeper.reconcile(REGION, dry_run=True)
    assert preview.missing == 3 and await count_rows(services, events) == 3

    report = await services.sweeper.reconcile(REGION)
    assert report.ok and report.missing == 3 and report.orphans == 0
    assert sorted(report.samples["missing"]) == sorted(
        [no_snapshot.keys[0], no_thumbnail.keys[1], no_clip.keys[0]]
    )
    async with services.engine.connect() as conn:
        assert set((await conn.execute(select(events.c.id))).scalars()) == {whole.id}
    assert stored_entries(services, bucket, s3_server) == set(whole.keys), (
        "what the removed records still named went with them"
    )


async def test_a_region_is_reconciled_by_one_instance_at_a_time(services: Services) -> None:
    account, camera = await new_account(services)
    await seed_event(services, account, camera, later(services))
    now = services.clock.now()
    taken = await acquire_lease(
        services.engine, f"reconcile:{REGION}", "elsewhere/abc", now, timedelta(seconds=120)
    )
    assert taken is None
    busy = await services.sweeper.reconcile(REGION)
    assert busy.busy == "elsewhere" and busy.listed == 0

    services.clock.advance(seconds=121)  # the other instance died: its lease runs out
    free = await services.sweeper.reconcile(REGION)
    assert free.busy is None and free.listed == 2
    async with services.engine.connect() as conn:
        assert (await conn.execute(select(job_leases))).all() == [], "released at the end"

    # Two instances taking the lease at once (a whole reconcile of two objects is too quick to overlap
    # reliably): one gets it, the other is told who holds it; so too when an expired lease is taken over.
    for _ in range(2):
        results = await asyncio.gather(
            *(acquire_lease(services.engine, "race", f"i{n}/x", now, timedelta(seconds=60)) for n in (1, 2))
        )
        assert sorted(r is None for r in results) == [False, True], "of two at once, one goes"
        now += timedelta(seconds=61)


async def test_stale_temporary_data_is_cleaned(
    services: Services, bucket: S3Bucket | None, s3_server: S3Server
) -> None:
    account, camera = await new_account(services)
    await seed_event(services, account, camera, later(services))
    if bucket is not None:
        admin = s3_server.admin()
        upload = admin.create_multipart_upload(
            Bucket=bucket.name, Key=f"acct/{account}/dev/{camera}/clip/x.webm"
        )
        admin.upload_part(
            Bucket=bucket.name, Key=upload["Key"], UploadId=upload["UploadId"], PartNumber=1, Body=b"p" * 1000
        )
    else:
        root = Path(services.settings.data_dir) / "media" / REGION
        folder = root / "acct" / account / "dev" / camera / "clip" / "2026" / "11" / "22"
        folder.mkdir(parents=True)
        (folder / ".tmp-crashed").write_bytes(b"half a clip")
        (root / ".meta" / ".tmp-sidecar").parent.mkdir(parents=True, exist_ok=True)
        (root / ".meta" / ".tmp-sidecar").write_bytes(b"{")

    if bucket is None:  # moto dates every multipart upload 2010-11-10 (Initiated is fixed): always old
        young = await services.sweeper.reconcile(REGION)
        assert young.ok and young.stale == 0, "a write may still be in progress"

    services.clock.advance(seconds=GRACE_S + 60)
    preview = await services.sweeper.reconcile(REGION, dry_run=True)
    assert preview.stale == (1 if bucket is not None else 2)
    report = await services.sweeper.reconcile(REGION)
    assert report.ok and report.stale == preview.stale
    if bucket is not None:
        assert not admin.list_multipart_uploads(Bucket=bucket.name).get("Uploads")
        admin.close()
    else:
        leftovers = list(root.rglob(".tmp-*"))
        assert leftovers == [] and not folder.exists(), "the folder it left empty went too"
    assert (await services.sweeper.reconcile(REGION)).stale == 0


async def test_big_stores_are_walked_a_batch_at_a_time(
    services: Services, bucket: S3Bucket | None, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "BATCH", 3)  # flushes and lease renewals mid-walk, as on a big store
    account, camera = await new_account(services)
    kept = [await seed_event(services, account, camera, later(services)) for _ in range(4)]
    orphans = [await seed_event(services, account, camera, later(services)) for _ in range(4)]
    lost = [await seed_clip(services, account, camera, later(services)) for _ in range(5)]
    async with services.engine.begin() as conn:
        await conn.execute(events.delete().where(events.c.id.in_([o.id for o in orphans])))
    await services.stores.for_region(REGION).delete_many([c.keys[0] for c in lost])
    services.clock.advance(seconds=GRACE_S + 60)
    listed: list[int] = []
    report = await services.sweeper.reconcile(REGION, progress=listed.append)
    assert report.ok and (report.orphans, report.missing, report.listed) == (8, 5, 16)
    assert sum(listed) == 16 and len(listed) > 3
    assert stored_entries(services, bucket, s3_server) == {k for s in kept for k in s.keys}
    assert await count_rows(services, clips) == 0 and await count_rows(services, events) == 4
