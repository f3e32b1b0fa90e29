"""``camgate sweep`` and ``camgate storage lifecycle`` as an operator runs them: real processes on both
databases, the local store and the S3 server. The commands run on the wall clock, so the media is dated
relative to it."""

import json
import os
import subprocess
import sys
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select

from gateway.adapters.db.tables import events
from gateway.bootstrap import Services, build
from tests.integration.conftest import test_settings
from tests.support.clock import ManualClock
from tests.support.expired import (
    count_rows,
    new_account,
    real_now,
    region_settings,
    seed_clip,
    seed_event,
    stored_entries,
)
from tests.support.s3server import S3Bucket, S3Server, create_bucket


def camgate(*args: str, tmp_path: Path, database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs the command with the same settings the test's services use."""
    environment = {
        **os.environ,
        "CAMGATE_DATABASE__URL": database_url,
        "CAMGATE_DATA_DIR": str(tmp_path),
        "CAMGATE_SECURITY__SECRET_KEY": "k" * 40,
        "CAMGATE_MQTT__ENABLED": "false",
        "CAMGATE_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def regions_env(bucket: S3Bucket) -> dict[str, str]:
    """Region sg on ``bucket``, vn on a local folder, as CAMGATE_REGIONS."""
    store = bucket.settings().model_dump(mode="json")
    store["access_key_id"] = store["secret_access_key"] = "testing"  # SecretStr dumps masked
    regions = {"sg": {"display_name": "Singapore", "store": store}, "vn": {"display_name": "Vietnam"}}
    return {"CAMGATE_REGIONS": json.dumps(regions)}


async def seeded(database_url: str, tmp_path: Path, bucket: S3Bucket | None, work: Any) -> Any:
    """Runs ``work(services)`` on services with the command's settings, then closes them."""
    settings = test_settings(database_url, tmp_path, **region_settings(bucket))
    async with AsyncExitStack() as stack:
        services: Services = await build(settings, stack, clock=ManualClock(real_now()))
        return await work(services)


async def test_sweep_reports_per_account_and_deletes(database_url: str, tmp_path: Path) -> None:
    async def seed(services: Services) -> tuple[str, str, list[str], list[str]]:
        past, future = real_now() - timedelta(days=1), real_now() + timedelta(days=30)
        alice, alice_cam = await new_account(services)
        bob, bob_cam = await new_account(services)
        gone = [
            await seed_event(services, alice, alice_cam, past, size=1500),
            await seed_event(services, alice, alice_cam, past, size=2500),
            await seed_clip(services, alice, alice_cam, past, size=3 * 1024 * 1024),
        ]
        kept = [await seed_event(services, bob, bob_cam, future)]
        return alice, bob, [k for s in gone for k in s.keys], [k for s in kept for k in s.keys]

    alice, bob, gone, kept = await seeded(database_url, tmp_path, None, seed)
    run = {"tmp_path": tmp_path, "database_url": database_url}

    preview = camgate("sweep", "--dry-run", **run)
    assert preview.returncode == 0, preview.stderr
    assert "would delete 5 objects (3.0 MiB) and 3 records of 1 accounts" in preview.stderr
    assert alice in preview.stderr and bob not in preview.stderr

    result = camgate("sweep", "--json", "--batch-size", "2", **run)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["sweep"]
    assert report["accounts"] == {alice: {"objects": 5, "bytes": 4000 + 3 * 1024 * 1024, "records": 3}}
    assert (report["objects"], report["failed_records"], report["dry_run"]) == (5, 0, False)
    assert "sweeping" in result.stderr, "a progress bar while it runs"

    async def left(services: Services) -> set[str]:
        return stored_entries(services, None, None)

    remaining = await seeded(database_url, tmp_path, None, left)
    assert remaining == set(kept) and not remaining & set(gone)

    table = camgate("sweep", "--reconcile", "--region", "sg", **run)
    assert table.returncode == 0, table.stderr
    assert "deleted 0 objects" in table.stderr and "reconcile sg: 2 objects listed" in table.stderr

    wrong = camgate("sweep", "--region", "mars", **run)
    assert wrong.returncode == 1 and "no region 'mars'" in wrong.stderr
    assert camgate("sweep", "--batch-size", "0", **run).returncode == 1
    assert camgate("sweep", "--help", **run).returncode == 0


async def test_sweep_exits_1_and_keeps_records_when_deletes_fail(
    database_url: str, tmp_path: Path, versioned_s3_bucket: S3Bucket, s3_server: S3Server
) -> None:
    async def seed(services: Services) -> list[str]:
        account, camera = await new_account(services)
        past = real_now() - timedelta(days=1)
        return [(await seed_event(services, account, camera, past)).id for _ in range(3)]

    ids = await seeded(database_url, tmp_path, versioned_s3_bucket, seed)
    missing = S3Bucket(f"camgate-gone-{uuid.uuid4().hex[:8]}", versioned_s3_bucket.endpoint_url, True)
    result = camgate("sweep", tmp_path=tmp_path, database_url=database_url, **regions_env(missing))
    assert result.returncode == 1, result.stderr
    assert "NoSuchBucket" in result.stderr and "3 records kept for a retry" in result.stderr

    async def rows(services: Services) -> set[str]:
        async with services.engine.connect() as conn:
            return set((await conn.execute(select(events.c.id))).scalars())

    assert await seeded(database_url, tmp_path, versioned_s3_bucket, rows) == set(ids)
    fixed = camgate("sweep", tmp_path=tmp_path, database_url=database_url, **regions_env(versioned_s3_bucket))
    assert fixed.returncode == 0 and "deleted 6 objects" in fixed.stderr

    async def count(services: Services) -> int:
        return await count_rows(services, events)

    assert await seeded(database_url, tmp_path, versioned_s3_bucket, count) == 0


def test_storage_lifecycle_installs_rules_on_s3_regions(
    database_url: str, tmp_path: Path, s3_server: S3Server
) -> None:
    bucket = create_bucket(s3_server, versioned=True)
    env = regions_env(bucket)
    admin = s3_server.admin()

    dry = camgate("storage", "lifecycle", "--dry-run", tmp_path=tmp_path, database_url=database_url, **env)
    assert dry.returncode == 0, dry.stderr
    rules = json.loads(dry.stdout)["Rules"]
    assert [r["ID"] for r in rules] == [
        "camgate-retention-3d",
        "camgate-retention-7d",
        "camgate-retention-30d",
        "camgate-retention-60d",
        "camgate-housekeeping",
    ]
    assert f"region sg: would install 5 rules on bucket {bucket.name}" in dry.stderr
    assert "region vn: local store, no lifecycle rules; swept by camgate only" in dry.stderr
    with pytest.raises(ClientError, match="NoSuchLifecycleConfiguration"):
        admin.get_bucket_lifecycle_configuration(Bucket=bucket.name)  # a dry run installs nothing

    done = camgate("storage", "lifecycle", tmp_path=tmp_path, database_url=database_url, **env)
    assert done.returncode == 0, done.stderr
    installed = admin.get_bucket_lifecycle_configuration(Bucket=bucket.name)["Rules"]
    assert [r["ID"] for r in installed] == [r["ID"] for r in rules]
    assert installed[1]["Expiration"] == {"Days": 9}
    assert f"region sg: bucket {bucket.name} has 5 lifecycle rules, 5 of them camgate's" in done.stderr
    admin.close()
