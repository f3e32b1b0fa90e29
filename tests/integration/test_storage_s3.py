"""S3 backend behaviour that only S3 has, against moto's server over real HTTP."""

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from botocore.exceptions import EndpointConnectionError

from storage import ObjectNotFound, StorageRejected, StorageUnavailable
from storage.keys import PROBE_PREFIX, account_prefix, clip_key, snapshot_key
from storage.s3 import S3Store
from storage.settings import MIB
from storage.tags import retention_tags
from tests.support.s3server import S3Bucket, S3Server, create_bucket

AT = datetime(2024, 3, 7, 12, 30, tzinfo=UTC)
JPEG = "image/jpeg"


@pytest.fixture
async def store(s3_bucket: S3Bucket) -> AsyncIterator[S3Store]:
    """A store on a fresh unversioned bucket."""
    opened = await S3Store.open(s3_bucket.settings())
    yield opened
    await opened.aclose()


@pytest.fixture
async def versioned_store(versioned_s3_bucket: S3Bucket) -> AsyncIterator[S3Store]:
    """A store on a fresh versioned bucket."""
    opened = await S3Store.open(versioned_s3_bucket.settings())
    yield opened
    await opened.aclose()


def all_versions(server: S3Server, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
    """Every (key, version id) of versions and delete markers, straight from the server."""
    client = server.admin()
    try:
        found = []
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            found += [
                (v["Key"], v["VersionId"])
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
        return found
    finally:
        client.close()


async def test_server_honours_if_none_match_and_the_probe_leaves_nothing(
    store: S3Store, s3_server: S3Server, versioned_store: S3Store
) -> None:
    probes = 0

    def count(params: dict[str, Any], **_: Any) -> None:
        nonlocal probes
        probes += params["Key"].startswith(PROBE_PREFIX)

    versioned_store._client.meta.events.register("before-parameter-build.s3.PutObject", count)
    # A burst of first writes waits for a single probe (two probe writes), then all go conditional.
    results = await asyncio.gather(
        *(
            versioned_store.put(snapshot_key("a", "d", f"e{i}", AT), b"x", content_type=JPEG)
            for i in range(20)
        )
    )
    assert all(r.created for r in results)
    assert probes == 2
    assert await versioned_store.supports_conditional_put()
    assert all_versions(s3_server, versioned_store.bucket, PROBE_PREFIX) == []
    assert await store.supports_conditional_put()


async def test_head_then_put_fallback_when_told_the_server_ignores_if_none_match(s3_bucket: S3Bucket) -> None:
    store = await S3Store.open(s3_bucket.settings(conditional_put="never"))
    try:
        k = snapshot_key("a", "d", "e", AT)
        assert (await store.put(k, b"first", content_type=JPEG)).created
        assert not (await store.put(k, b"second", content_type=JPEG)).created
        assert await store.get(k) == b"first"
        assert not await store.supports_conditional_put()
    finally:
        await store.aclose()


async def test_tags_and_metadata_reach_the_server(store: S3Store, s3_server: S3Server) -> None:
    k = snapshot_key("a", "d", "e", AT)
    tags = retention_tags(30) | {"note": "a b/c=d"}  # needs URL-encoding in the Tagging header
    await store.put(k, b"x", content_type=JPEG, tags=tags, metadata={"event-id": "e"})
    client = s3_server.admin()
    try:
        tag_set = client.get_object_tagging(Bucket=store.bucket, Key=k)["TagSet"]
        head = client.head_object(Bucket=store.bucket, Key=k)
    finally:
        client.close()
    assert {t["Key"]: t["Value"] for t in tag_set} == tags
    assert head["Metadata"] == {"event-id": "e"} and head["ContentType"] == JPEG


async def test_presigned_url_serves_the_bytes_over_http(store: S3Store) -> None:
    k = snapshot_key("a", "d", "e", AT)
    await store.put(k, b"\xff\xd8 thumbnail", content_type=JPEG)
    url = await store.presigned_get_url(k, 300)
    assert url is not None
    missing = await store.presigned_get_url(snapshot_key("a", "d", "missing", AT), 300)
    assert missing is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"] == JPEG
            assert await answer.read() == b"\xff\xd8 thumbnail"
        async with http.get(missing) as answer:
            assert answer.status == 404


async def test_presigned_url_expiry(store: S3Store) -> None:
    # moto 5.2.5 does not enforce X-Amz-Expires (nothing in its S3 code reads it), so the expiry is
    # checked in the signed query string; AWS, MinIO and Ceph answer 403 once it has passed.
    url = await store.presigned_get_url(snapshot_key("a", "d", "e", AT), 90)
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["90"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 60
    for bad in (0, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError, match="expires_s"):
            await store.presigned_get_url(snapshot_key("a", "d", "e", AT), bad)


async def test_delete_many_removes_every_version_and_delete_marker(
    versioned_store: S3Store, s3_server: S3Server
) -> None:
    folder = "acct/a/dev/d/snap/2024/03/07/"
    k1, k2, longer, other = f"{folder}e1.jpg", f"{folder}e2.jpg", f"{folder}e1.jpg.bak", f"{folder}e3.jpg"
    for i in range(3):
        await versioned_store.put(k1, b"v%d" % i, content_type=JPEG, if_absent=False)
    await versioned_store.put(k2, b"x", content_type=JPEG)
    await versioned_store.put(longer, b"x", content_type=JPEG)
    await versioned_store.put(other, b"x", content_type=JPEG)
    client = s3_server.admin()
    try:
        client.delete_object(Bucket=versioned_store.bucket, Key=k2)  # a plain delete: leaves a marker
    finally:
        client.close()
    assert len(all_versions(s3_server, versioned_store.bucket, k1)) == 4  # 3 + the .bak sharing the prefix

    report = await versioned_store.delete_many([k1, k2])

    assert report.ok and report.deleted == 5  # 3 versions of k1, k2's version and its delete marker
    left = {key for key, _ in all_versions(s3_server, versioned_store.bucket)}
    assert left == {longer, other}


async def test_delete_prefix_removes_over_1000_versions(
    versioned_store: S3Store, s3_server: S3Server
) -> None:
    keys = [snapshot_key("gone", "d", f"e{i:04d}", AT) for i in range(520)]
    for generation in (b"1", b"2"):
        await asyncio.gather(
            *(versioned_store.put(k, generation, content_type=JPEG, if_absent=False) for k in keys)
        )
    await versioned_store.put(snapshot_key("kept", "d", "e", AT), b"x", content_type=JPEG)

    report = await versioned_store.delete_prefix(account_prefix("gone"))

    assert report.ok and report.deleted == 1040
    assert all_versions(s3_server, versioned_store.bucket, account_prefix("gone")) == []
    assert len(all_versions(s3_server, versioned_store.bucket)) == 1


async def test_multipart_round_trip(s3_bucket: S3Bucket, s3_server: S3Server) -> None:
    settings = s3_bucket.settings(multipart_threshold_bytes=5 * MIB, multipart_part_bytes=5 * MIB)
    store = await S3Store.open(settings)
    try:
        k = clip_key("a", "d", "c1", AT)
        data = os.urandom(12 * MIB + 123)
        put = await store.put(k, data, content_type="video/webm", tags=retention_tags(7))
        assert put.created
        assert await store.get(k) == data
        info = await store.head(k)
        assert info is not None and info.size == len(data)
        assert info.etag.endswith("-3")  # S3's ETag of a 3-part upload
        assert not (await store.put(k, b"other", content_type="video/webm")).created
        client = s3_server.admin()
        try:
            tags = client.get_object_tagging(Bucket=store.bucket, Key=k)["TagSet"]
        finally:
            client.close()
        assert tags == [{"Key": "retention-days", "Value": "7"}]
    finally:
        await store.aclose()


async def test_failed_multipart_upload_is_aborted(s3_bucket: S3Bucket, s3_server: S3Server) -> None:
    store = await S3Store.open(
        s3_bucket.settings(multipart_threshold_bytes=5 * MIB, multipart_part_bytes=5 * MIB, max_attempts=1)
    )
    parts = 0

    def fail_second_part(**_: Any) -> None:
        nonlocal parts
        parts += 1
        if parts == 2:
            raise EndpointConnectionError(endpoint_url=s3_bucket.endpoint_url)

    store._client.meta.events.register("before-send.s3.UploadPart", fail_second_part)
    k = clip_key("a", "d", "c1", AT)
    try:
        with pytest.raises(StorageUnavailable):
            await store.put(k, os.urandom(11 * MIB), content_type="video/webm")
    finally:
        await store.aclose()
    client = s3_server.admin()
    try:
        assert "Uploads" not in client.list_multipart_uploads(Bucket=s3_bucket.name)
    finally:
        client.close()
    assert parts == 2


async def test_outage_raises_unavailable_promptly_then_recovers(private_s3_server: S3Server) -> None:
    bucket = create_bucket(private_s3_server, versioned=False)
    store = await S3Store.open(bucket.settings(max_attempts=2, connect_timeout_s=1, read_timeout_s=2))
    k = snapshot_key("a", "d", "e", AT)
    try:
        await store.put(k, b"before", content_type=JPEG)
        private_s3_server.stop()

        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await store.put(snapshot_key("a", "d", "e2", AT), b"x", content_type=JPEG)
        with pytest.raises(StorageUnavailable):
            await store.get(k)
        with pytest.raises(StorageUnavailable):
            await store.ping()
        assert time.monotonic() - started < 6  # 3 calls x 2 attempts, at most ~1 s of backoff each

        private_s3_server.start()
        create_bucket_named(private_s3_server, bucket.name)  # moto forgot everything
        await store.ping()
        assert (await store.put(k, b"after", content_type=JPEG)).created
        assert await store.get(k) == b"after"
    finally:
        await store.aclose()


def create_bucket_named(server: S3Server, name: str) -> None:
    client = server.admin()
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()


async def test_missing_bucket_is_a_configuration_error(s3_server: S3Server) -> None:
    bucket = S3Bucket("camgate-no-such-bucket", s3_server.endpoint_url, versioned=False)
    store = await S3Store.open(bucket.settings())
    try:
        with pytest.raises(StorageRejected) as caught:
            await store.ping()
        assert caught.value.code == "NoSuchBucket"
        with pytest.raises(StorageRejected) as caught:
            await store.get(snapshot_key("a", "d", "e", AT))
        assert caught.value.code == "NoSuchBucket"
    finally:
        await store.aclose()


async def test_get_of_a_missing_key(store: S3Store) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        await store.get(snapshot_key("a", "d", "missing", AT))
    assert caught.value.key.endswith("missing.jpg")
