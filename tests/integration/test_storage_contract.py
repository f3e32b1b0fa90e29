"""The ObjectStore contract, run against the local folder and a real S3 HTTP server (plain and versioned)."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage import InvalidKey, ObjectNotFound, ObjectStore
from storage.keys import account_prefix, snapshot_key
from storage.local import LocalStore
from storage.s3 import S3Store
from storage.settings import LocalStoreSettings
from tests.support.s3server import S3Bucket

AT = datetime(2024, 3, 7, 12, 30, tzinfo=UTC)
JPEG = "image/jpeg"


@pytest.fixture(params=["local", "s3", "s3-versioned"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """The same behaviour is expected of every backend."""
    opened: ObjectStore
    if request.param == "local":
        opened = await LocalStore.open(LocalStoreSettings(kind="local", root=tmp_path / "media"))
    else:
        fixture = "s3_bucket" if request.param == "s3" else "versioned_s3_bucket"
        bucket: S3Bucket = request.getfixturevalue(fixture)
        opened = await S3Store.open(bucket.settings())
    yield opened
    await opened.aclose()


def key(event: str, account: str = "acct1") -> str:
    return snapshot_key(account, "CAM-1", event, AT)


async def test_put_get_head(store: ObjectStore) -> None:
    k = key("e1")
    result = await store.put(k, b"\xff\xd8jpeg", content_type=JPEG, metadata={"event-id": "e1"})
    assert result.created and result.key == k
    assert await store.get(k) == b"\xff\xd8jpeg"
    info = await store.head(k)
    assert info is not None
    assert (info.key, info.size, info.content_type) == (k, 6, JPEG)
    assert info.metadata == {"event-id": "e1"}
    assert info.etag
    assert abs((datetime.now(UTC) - info.last_modified).total_seconds()) < 60


async def test_missing_object(store: ObjectStore) -> None:
    assert await store.head(key("nope")) is None
    with pytest.raises(ObjectNotFound):
        await store.get(key("nope"))


async def test_create_once_keeps_the_first_bytes(store: ObjectStore) -> None:
    k = key("e2")
    first = await store.put(k, b"first", content_type=JPEG)
    second = await store.put(k, b"second attempt", content_type=JPEG)
    assert first.created and not second.created
    assert await store.get(k) == b"first"


async def test_overwrite_when_asked(store: ObjectStore) -> None:
    k = key("e3")
    await store.put(k, b"old", content_type=JPEG)
    assert (await store.put(k, b"new", content_type=JPEG, if_absent=False)).created
    assert await store.get(k) == b"new"


async def test_invalid_keys_are_refused_before_any_io(store: ObjectStore) -> None:
    for bad in ["../escape.jpg", "acct/../../etc/passwd", ".meta/x.json", "a//b", ""]:
        with pytest.raises(InvalidKey):
            await store.put(bad, b"x", content_type=JPEG)
        with pytest.raises(InvalidKey):
            await store.get(bad)
    with pytest.raises(InvalidKey):
        await store.put(key("e4"), b"x", content_type=JPEG, tags={"k": "a&b"})
    assert [o async for o in store.list()] == []


async def test_list_paginates_and_batch_delete_over_1000(store: ObjectStore) -> None:
    keys = sorted(key(f"ev{i:05d}", "big") for i in range(1050))
    await asyncio.gather(*(store.put(k, k.encode(), content_type=JPEG) for k in keys))
    await store.put(key("other", "big2"), b"x", content_type=JPEG)  # shares the text prefix "acct/big"

    listed = [o async for o in store.list(account_prefix("big"))]
    assert [o.key for o in listed] == keys  # all 1,050 (two S3 pages), in key order
    assert all(o.size == len(o.key) for o in listed)
    assert len([o async for o in store.list("acct/big")]) == 1051

    report = await store.delete_many(keys)
    assert report.ok and report.deleted == 1050
    assert [o async for o in store.list(account_prefix("big"))] == []
    assert await store.get(key("other", "big2")) == b"x"


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    k = key("e5")
    await store.put(k, b"x", content_type=JPEG)
    assert (await store.delete_many([k, k])).ok
    again = await store.delete_many([k, key("never-existed")])
    assert again.ok and again.failed_keys == frozenset()
    assert await store.head(k) is None
    assert (await store.delete_many([])).deleted == 0


async def test_delete_prefix_takes_one_account_only(store: ObjectStore) -> None:
    mine = [key(f"m{i}", "a") for i in range(5)]
    neighbour = key("n0", "ab")  # "acct/ab/..." starts with the text "acct/a"
    for k in [*mine, neighbour]:
        await store.put(k, b"x", content_type=JPEG)
    report = await store.delete_prefix(account_prefix("a"))
    assert report.ok and report.deleted == 5
    assert [o.key async for o in store.list("acct/")] == [neighbour]
    with pytest.raises(InvalidKey):
        await store.delete_prefix("acct/a")


async def test_ping(store: ObjectStore) -> None:
    await store.ping()


async def test_presigned_url_only_where_the_backend_has_urls(store: ObjectStore) -> None:
    k = key("e6")
    await store.put(k, b"x", content_type=JPEG)
    url = await store.presigned_get_url(k, 60)
    assert (url is None) == isinstance(store, LocalStore)
