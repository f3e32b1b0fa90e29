"""The local-folder backend (embedded default): the S3 key layout as files under one root folder.

``<root>/<key>`` holds the bytes; ``<root>/.meta/<key>.json`` the content type, metadata and tags.
Every write goes to a ``.tmp-*`` file in the target's own folder, is fsynced, then linked (create-once)
or renamed (overwrite) into place, so a reader sees the whole object or none of it. Names starting with
a dot are never valid keys, so temporary and sidecar files can never be listed, read or overwritten
through the port. There are no versions: a delete removes the file.
"""

import contextlib
import functools
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

from storage.errors import ObjectNotFound, StorageRefused, StorageUnavailable
from storage.keys import validate_folder_prefix, validate_key, validate_prefix
from storage.pool import BlockingPool
from storage.ports import DeleteFailure, DeleteReport, ObjectInfo, PutResult
from storage.settings import LocalStoreSettings
from storage.tags import validate_content_type, validate_metadata, validate_tags

T = TypeVar("T")
META_DIR = ".meta"
_PAGE = 1000  # files stat-ed per thread hop while listing


class LocalStore:
    """An ``ObjectStore`` on a local folder; file I/O runs on a bounded thread pool."""

    def __init__(self, root: Path, pool: BlockingPool) -> None:
        self.root = root
        self._meta_root = root / META_DIR
        self._pool = pool

    @classmethod
    async def open(cls, settings: LocalStoreSettings) -> "LocalStore":
        """Creates the root folder if needed (owner-only: it holds people's media)."""
        pool = BlockingPool(settings.pool_size, "local-store")
        store = cls(settings.root, pool)
        await store._run("root folder", functools.partial(os.makedirs, settings.root, 0o700, exist_ok=True))
        return store

    async def aclose(self) -> None:
        """Waits for running file operations and stops the threads."""
        await self._pool.close()

    async def _run(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await self._pool.run(fn)
        except PermissionError as exc:
            raise StorageRefused("AccessDenied", f"{what}: {exc.strerror}") from exc
        except OSError as exc:  # disk full, I/O error, file system gone: retry later
            raise StorageUnavailable(f"local store failed for {what}: {exc.strerror}") from exc

    def _path(self, key: str) -> Path:
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        return self._meta_root / f"{key}.json"

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        tags: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = True,
    ) -> PutResult:
        """Writes atomically; with ``if_absent`` an existing file is left as it is (create-once link)."""
        sidecar = {
            "content_type": validate_content_type(content_type),
            "metadata": validate_metadata(metadata),
            "tags": validate_tags(tags),
        }
        blob = json.dumps(sidecar, sort_keys=True).encode()
        put = functools.partial(self._put, validate_key(key), data, blob, if_absent)
        return PutResult(key, created=await self._run(key, put))

    def _put(self, key: str, data: bytes, sidecar: bytes, if_absent: bool) -> bool:
        created = _write_atomic(self._path(key), data, exclusive=if_absent)
        meta = self._meta_path(key)
        # Bytes first, then the sidecar: a crash in between leaves an object without attributes, which
        # the retried put (reporting "already there") repairs here.
        if created or not meta.exists():
            _write_atomic(meta, sidecar, exclusive=False)
        return created

    async def get(self, key: str) -> bytes:
        """The file's bytes, or ``ObjectNotFound``."""
        data = await self._run(key, functools.partial(self._read, validate_key(key)))
        if data is None:
            raise ObjectNotFound(key)
        return data

    def _read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    async def head(self, key: str) -> ObjectInfo | None:
        """Size, etag (from size and mtime), content type, metadata and tags; None when absent."""
        return await self._run(key, functools.partial(self._info, validate_key(key)))

    def _info(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(self._path(key)):
            return None
        try:
            sidecar = json.loads(self._meta_path(key).read_bytes())
        except FileNotFoundError:
            sidecar = {"content_type": None, "metadata": {}, "tags": {}}
        return ObjectInfo(
            key=key,
            size=st.st_size,
            # Opaque like S3's: changes whenever the bytes are replaced (new inode or mtime).
            etag=f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}",
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
            content_type=sidecar["content_type"],
            metadata=sidecar["metadata"],
            tags=sidecar["tags"],
        )

    async def delete_many(self, keys: Sequence[str]) -> DeleteReport:
        """Removes the files and their sidecars, and folders left empty."""
        unique = list(dict.fromkeys(validate_key(k) for k in keys))
        deleted, failed = 0, list[DeleteFailure]()
        for start in range(0, len(unique), _PAGE):
            batch = unique[start : start + _PAGE]
            report = await self._run(batch[0], functools.partial(self._delete_batch, batch))
            deleted += report.deleted
            failed += report.failed
        return DeleteReport(deleted=deleted, failed=tuple(failed))

    def _delete_batch(self, keys: list[str]) -> DeleteReport:
        deleted, failed = 0, list[DeleteFailure]()
        for key in keys:
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._meta_path(key))
                    _prune_empty(self._meta_path(key).parent, self._meta_root)
                try:
                    os.unlink(self._path(key))
                    deleted += 1
                except FileNotFoundError:
                    pass  # idempotent: already gone
                _prune_empty(self._path(key).parent, self.root)
            except OSError as exc:
                failed.append(DeleteFailure(key, None, type(exc).__name__, exc.strerror or str(exc)))
        return DeleteReport(deleted=deleted, failed=tuple(failed))

    async def delete_prefix(self, prefix: str) -> DeleteReport:
        """Removes the whole folder (files, sidecars, leftovers of crashed writes)."""
        validate_folder_prefix(prefix)
        return await self._run(prefix, functools.partial(self._delete_tree, prefix))

    def _delete_tree(self, prefix: str) -> DeleteReport:
        deleted = 0
        for top, tree, is_data in (
            (self.root, self.root / prefix, True),
            (self._meta_root, self._meta_root / prefix, False),
        ):
            for folder, dirs, files in os.walk(tree, topdown=False):
                for name in files:
                    os.unlink(os.path.join(folder, name))
                    if is_data and not name.startswith("."):  # temp files of crashed writes are not objects
                        deleted += 1
                for name in dirs:
                    os.rmdir(os.path.join(folder, name))
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(tree)
            _prune_empty(tree.parent, top)
        return DeleteReport(deleted=deleted)

    def _keys_under(self, prefix: str) -> list[str]:
        top = self.root / prefix.rpartition("/")[0]
        keys = []
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # .meta and nothing else hidden
            base = Path(folder).relative_to(self.root).as_posix()
            for name in files:
                key = name if base == "." else f"{base}/{name}"
                if not name.startswith(".") and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def _infos(self, keys: list[str]) -> list[ObjectInfo]:
        # A file deleted since the walk is simply skipped, as S3 would no longer list it.
        return [info for key in keys if (info := self._info(key)) is not None]

    async def clean_incomplete(self, older_than: datetime, *, dry_run: bool = False) -> int:
        """Removes ``.tmp-*`` files (writes cut short by a crash) last modified before ``older_than``."""
        cutoff = older_than.timestamp()
        return await self._run("temporary files", functools.partial(self._clean_tmp, cutoff, dry_run))

    def _clean_tmp(self, cutoff: float, dry_run: bool) -> int:
        removed = 0
        for folder, _dirs, files in os.walk(self.root):  # .meta too: sidecars are written the same way
            here = Path(folder)
            taken = 0
            for name in files:
                if not name.startswith(".tmp-"):
                    continue
                try:
                    # A write in progress keeps its file young: only old leftovers are taken.
                    if (here / name).stat().st_mtime >= cutoff:
                        continue
                    if not dry_run:
                        (here / name).unlink()
                except FileNotFoundError:  # that write finished meanwhile
                    continue
                taken += 1
            if taken and not dry_run and here != self.root:
                _prune_empty(here, self._meta_root if here.is_relative_to(self._meta_root) else self.root)
            removed += taken
        return removed

    async def presigned_get_url(self, key: str, expires_s: int) -> str | None:
        """None: a folder has no URLs; the app streams ``get`` instead."""
        validate_key(key)
        return None

    async def ping(self) -> None:
        """Checks that the root folder exists and is writable."""
        ok = await self._pool.run(os.access, self.root, os.W_OK | os.X_OK)
        if not ok:
            raise StorageUnavailable(f"local store root {self.root} is missing or not writable")

    # Last in the class on purpose: below this method, ``list`` in an annotation would name it.
    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Files under ``prefix`` in key order; attributes are read a page of 1,000 at a time."""
        keys = await self._run(prefix, functools.partial(self._keys_under, validate_prefix(prefix)))
        for start in range(0, len(keys), _PAGE):
            page = await self._run(prefix, functools.partial(self._infos, keys[start : start + _PAGE]))
            for info in page:
                yield info


def _write_atomic(path: Path, data: bytes, *, exclusive: bool) -> bool:
    """Temp file in the target's folder, fsync, then link (``exclusive``: False if taken) or rename."""
    for _ in range(3):
        os.makedirs(path.parent, 0o700, exist_ok=True)
        tmp = path.parent / f".tmp-{uuid4().hex}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            break
        except FileNotFoundError:  # a delete pruned the folder between makedirs and open
            continue
    else:
        raise FileNotFoundError(f"folder {path.parent} keeps vanishing")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)  # atomic and fails if the name exists: create-once
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)  # the new name itself must survive a power cut
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune_empty(folder: Path, stop: Path) -> None:
    """Removes empty folders upwards (an account's purge leaves no folder named after it)."""
    while folder != stop and folder.is_relative_to(stop):
        try:
            os.rmdir(folder)
        except OSError:  # not empty (or already gone): the folders above are in use too
            return
        folder = folder.parent
