"""What the sweep needs from the stores beyond the contract: cleaning leftovers of unfinished writes
(local ``.tmp-*`` files, S3 multipart uploads) and bucket lifecycle rules on the S3 server."""

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.domain.plans import DEFAULT_CONFIG, Catalogue
from gateway.services.sweep import retention_classes
from storage.lifecycle import lifecycle_rules, merge_rules
from storage.local import LocalStore
from storage.s3 import S3Store
from storage.settings import LocalStoreSettings
from tests.support.s3server import S3Bucket, S3Server


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalStore]:
    """A local store in a temp folder."""
    opened = await LocalStore.open(LocalStoreSettings(kind="local", root=tmp_path / "media"))
    yield opened
    await opened.aclose()


@pytest.fixture
async def s3(versioned_s3_bucket: S3Bucket) -> AsyncIterator[S3Store]:
    """A store on a fresh versioned bucket."""
    opened = await S3Store.open(versioned_s3_bucket.settings())
    yield opened
    await opened.aclose()


def _age(path: Path, seconds: float) -> None:
    then = datetime.now(UTC).timestamp() - seconds
    os.utime(path, (then, then))


async def test_local_store_removes_old_tmp_files_only(local: LocalStore) -> None:
    key = "acct/a1/dev/d1/snap/2026/11/22/e1.jpg"
    await local.put(key, b"a real object", content_type="image/jpeg")
    crashed = local.root / "acct/a1/dev/d2/clip/2026/11/22"
    crashed.mkdir(parents=True)
    old = [crashed / ".tmp-1", local.root / ".meta" / "acct" / ".tmp-2", local.root / ".tmp-3"]
    for path in old:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
        _age(path, 7200)
    fresh = local.root / "acct/a1/dev/d1/snap/2026/11/22/.tmp-in-progress"
    fresh.write_bytes(b"being written")
    cutoff = datetime.now(UTC) - timedelta(hours=1)

    assert await local.clean_incomplete(cutoff, dry_run=True) == 3
    assert all(p.exists() for p in old)
    assert await local.clean_incomplete(cutoff) == 3
    assert not any(p.exists() for p in old) and fresh.exists()
    assert not (local.root / "acct/a1/dev/d2").exists(), "folders left empty are pruned"
    assert await local.get(key) == b"a real object"
    assert await local.clean_incomplete(cutoff) == 0


async def test_s3_store_aborts_incomplete_multipart_uploads(
    s3: S3Store, versioned_s3_bucket: S3Bucket, s3_server: S3Server
) -> None:
    admin = s3_server.admin()
    name = versioned_s3_bucket.name
    for i in range(3):
        upload = admin.create_multipart_upload(Bucket=name, Key=f"acct/a/dev/d/clip/2026/11/22/c{i}.webm")
        admin.upload_part(
            Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"], PartNumber=1, Body=b"p"
        )
    initiated = min(u["Initiated"] for u in admin.list_multipart_uploads(Bucket=name)["Uploads"])

    assert await s3.clean_incomplete(initiated - timedelta(days=1)) == 0, "younger uploads are left"
    assert await s3.clean_incomplete(initiated + timedelta(days=1), dry_run=True) == 3
    assert len(admin.list_multipart_uploads(Bucket=name)["Uploads"]) == 3
    assert await s3.clean_incomplete(initiated + timedelta(days=1)) == 3
    assert not admin.list_multipart_uploads(Bucket=name).get("Uploads")
    admin.close()


async def test_lifecycle_rules_from_the_catalogue_are_installed(
    s3: S3Store, versioned_s3_bucket: S3Bucket, s3_server: S3Server
) -> None:
    classes = retention_classes(Catalogue.from_config(DEFAULT_CONFIG))
    assert classes == [3, 7, 30, 60]
    ours = lifecycle_rules(classes)
    assert await s3.get_lifecycle() == []

    operators = {
        "ID": "ops-logs",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 90},
    }
    await s3.put_lifecycle([operators])
    await s3.put_lifecycle(merge_rules(await s3.get_lifecycle(), ours))
    admin = s3_server.admin()
    installed = admin.get_bucket_lifecycle_configuration(Bucket=versioned_s3_bucket.name)["Rules"]
    admin.close()
    by_id = {r["ID"]: r for r in installed}
    assert set(by_id) == {"ops-logs", *(r["ID"] for r in ours)}
    assert by_id["camgate-retention-30d"]["Filter"] == {"Tag": {"Key": "retention-days", "Value": "30"}}
    assert by_id["camgate-retention-30d"]["Expiration"] == {"Days": 32}
    assert by_id["camgate-retention-30d"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    assert by_id["camgate-housekeeping"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert by_id["camgate-housekeeping"]["Expiration"] == {"ExpiredObjectDeleteMarker": True}

    shorter = lifecycle_rules([7])  # a catalogue that dropped classes: their rules go, the operator's stay
    await s3.put_lifecycle(merge_rules(await s3.get_lifecycle(), shorter))
    assert {r["ID"] for r in await s3.get_lifecycle()} == {
        "ops-logs",
        "camgate-retention-7d",
        "camgate-housekeeping",
    }
    await s3.put_lifecycle([])
    assert await s3.get_lifecycle() == []
