"""Region routing: an account's media lands in its own region's store and nowhere else."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage import StorageSettings, StorageUnavailable, StoreRouter, UnknownRegion
from storage.keys import snapshot_key
from storage.settings import LocalStoreSettings
from tests.support.s3server import S3Bucket

AT = datetime(2024, 3, 7, 12, 30, tzinfo=UTC)


async def test_each_region_writes_to_its_own_store(
    s3_bucket: S3Bucket, versioned_s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    settings = StorageSettings(
        regions={
            "sg": s3_bucket.settings(),
            "eu": versioned_s3_bucket.settings(),
            "vn": LocalStoreSettings(kind="local", root=tmp_path / "vn"),
        }
    )
    router = await StoreRouter.open(settings)
    try:
        assert router.regions == {"sg", "eu", "vn"}
        await router.ping()
        k = snapshot_key("a", "d", "e", AT)
        await router.for_region("sg").put(k, b"singapore", content_type="image/jpeg")

        assert await router.for_region("sg").get(k) == b"singapore"
        assert await router.for_region("eu").head(k) is None
        assert await router.for_region("vn").head(k) is None
        assert not (tmp_path / "vn" / k).exists()

        with pytest.raises(UnknownRegion, match="'us'"):
            router.for_region("us")

        (tmp_path / "vn").rmdir()
        with pytest.raises(StorageUnavailable, match="vn: "):
            await router.ping()
    finally:
        await router.aclose()


async def test_embedded_default_opens_local_folders(tmp_path: Path) -> None:
    router = await StoreRouter.open(StorageSettings.embedded(tmp_path, ["sg", "eu"]))
    try:
        await router.ping()
        assert (tmp_path / "sg").is_dir() and (tmp_path / "eu").is_dir()
        assert await router.for_region("eu").presigned_get_url(snapshot_key("a", "d", "e", AT), 60) is None
    finally:
        await router.aclose()
