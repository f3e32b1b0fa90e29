"""Local-folder backend: atomic writes, create-once under concurrency, crash leftovers, tidy deletes."""

import asyncio
import os
import stat
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage import ObjectNotFound, StorageUnavailable
from storage.keys import account_prefix, clip_key, snapshot_key
from storage.local import LocalStore
from storage.settings import LocalStoreSettings

AT = datetime(2024, 3, 7, 12, 30, tzinfo=UTC)
JPEG = "image/jpeg"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
async def store(root: Path) -> AsyncIterator[LocalStore]:
    opened = await LocalStore.open(LocalStoreSettings(kind="local", root=root))
    yield opened
    await opened.aclose()


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


async def test_same_key_layout_as_s3_on_disk(store: LocalStore, root: Path) -> None:
    k = snapshot_key("a", "d", "e", AT)
    await store.put(k, b"x", content_type=JPEG, tags={"retention-days": "30"})
    assert (root / "acct/a/dev/d/snap/2024/03/07/e.jpg").read_bytes() == b"x"
    info = await store.head(k)
    assert info is not None and info.tags == {"retention-days": "30"} and info.content_type == JPEG


async def test_nothing_is_visible_until_the_write_is_complete(
    store: LocalStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_fsync, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        if not in_fsync.is_set():  # hold the first fsync: the data file is fully written but not linked
            in_fsync.set()
            assert release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    k = clip_key("a", "d", "c", AT)
    data = os.urandom(4 << 20)
    writing = asyncio.create_task(store.put(k, data, content_type="video/webm"))
    assert await asyncio.to_thread(in_fsync.wait, 10)
    try:
        assert await store.head(k) is None
        with pytest.raises(ObjectNotFound):
            await store.get(k)
        assert [o async for o in store.list()] == []
        assert any(name.startswith(".tmp-") for name in os.listdir(root / "acct/a/dev/d/clip/2024/03/07"))
    finally:
        release.set()
    assert (await writing).created
    assert await store.get(k) == data
    assert await asyncio.to_thread(lambda: list(root.rglob(".tmp-*"))) == []


async def test_failed_write_leaves_no_file(
    store: LocalStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    k = snapshot_key("a", "d", "e", AT)
    with pytest.raises(StorageUnavailable, match="Input/output error"):
        await store.put(k, b"x", content_type=JPEG)
    monkeypatch.undo()
    assert files_under(root) == []
    assert (await store.put(k, b"x", content_type=JPEG)).created  # and the retry goes through


async def test_concurrent_create_once_has_exactly_one_winner(store: LocalStore) -> None:
    k = snapshot_key("a", "d", "e", AT)
    results = await asyncio.gather(*(store.put(k, b"writer %d" % i, content_type=JPEG) for i in range(20)))
    winners = [i for i, r in enumerate(results) if r.created]
    assert len(winners) == 1
    assert await store.get(k) == b"writer %d" % winners[0]


async def test_crash_leftovers_are_invisible_and_purged(store: LocalStore, root: Path) -> None:
    k = snapshot_key("a", "d", "e", AT)
    await store.put(k, b"x", content_type=JPEG)
    (root / "acct/a/dev/d/snap/2024/03/07/.tmp-deadbeef").write_bytes(b"half a jpe")
    assert [o.key async for o in store.list()] == [k]
    report = await store.delete_prefix(account_prefix("a"))
    assert report.deleted == 1
    assert not (root / "acct").exists()


async def test_missing_sidecar_is_repaired_by_the_retried_put(store: LocalStore, root: Path) -> None:
    k = snapshot_key("a", "d", "e", AT)
    (root / "acct/a/dev/d/snap/2024/03/07").mkdir(parents=True)
    (root / k).write_bytes(b"x")  # a crash after linking the bytes, before the sidecar
    info = await store.head(k)
    assert info is not None and info.content_type is None and info.size == 1
    assert not (await store.put(k, b"x", content_type=JPEG, metadata={"event-id": "e"})).created
    info = await store.head(k)
    assert info is not None and info.content_type == JPEG and info.metadata == {"event-id": "e"}


async def test_deletes_leave_no_folder_named_after_the_account(store: LocalStore, root: Path) -> None:
    mine = [snapshot_key("a", "d", f"e{i}", AT) for i in range(3)]
    theirs = snapshot_key("b", "d", "e", AT)
    for k in [*mine, theirs]:
        await store.put(k, b"x", content_type=JPEG)
    report = await store.delete_many(mine)
    assert report.ok and report.deleted == 3
    assert sorted(os.listdir(root / "acct")) == ["b"]
    assert sorted(os.listdir(root / ".meta/acct")) == ["b"]
    assert (await store.delete_many(mine)).deleted == 0  # already gone: nothing removed, no failure


async def test_media_is_private_to_the_service_user(store: LocalStore, root: Path) -> None:
    k = snapshot_key("a", "d", "e", AT)
    await store.put(k, b"x", content_type=JPEG)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(root / k).st_mode) == 0o600


async def test_ping_fails_when_the_folder_is_gone(store: LocalStore, root: Path) -> None:
    await store.ping()
    await asyncio.to_thread(root.rmdir)
    with pytest.raises(StorageUnavailable):
        await store.ping()
