"""The object-store port: what the gateway needs from S3 or a local folder, and the values it returns."""

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class PutResult:
    """Outcome of a put: ``created`` is False only when ``if_absent`` found the key already there."""

    key: str
    created: bool


@dataclass(frozen=True)
class ObjectInfo:
    """What a head or a listing tells about one object.

    ``content_type``, ``metadata`` and ``tags`` are None when the backend cannot give them without an
    extra request per object (S3 listings; S3 head has no tags).
    """

    key: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str | None = None
    metadata: Mapping[str, str] | None = None
    tags: Mapping[str, str] | None = None


@dataclass(frozen=True)
class DeleteFailure:
    """One entry a batch delete could not remove."""

    key: str
    version_id: str | None
    code: str
    message: str


@dataclass(frozen=True)
class DeleteReport:
    """Outcome of a batch delete.

    ``deleted`` counts what the backend confirmed removed: files for the local folder; keys in an
    unversioned bucket (S3 confirms keys that did not exist too); versions plus delete markers in a
    versioned one. Deleting is idempotent: a missing key is not a failure.
    """

    deleted: int
    failed: tuple[DeleteFailure, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed

    @property
    def failed_keys(self) -> frozenset[str]:
        """Keys with at least one entry left behind: keep their records and retry later."""
        return frozenset(f.key for f in self.failed)


class ObjectStore(Protocol):
    """An object store for one region. Every method may raise the errors in ``storage.errors``."""

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
        """Stores ``data`` at ``key``; with ``if_absent`` an existing object is left as it is."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes, or ``ObjectNotFound``."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size, etag and (where cheap) attributes, or None when it does not exist."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> DeleteReport:
        """Deletes the keys, and in a versioned bucket every version and delete marker of them."""
        ...

    async def delete_prefix(self, prefix: str) -> DeleteReport:
        """Deletes everything (every version) under a folder prefix ending in ``/``: account purges."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Current objects whose key starts with ``prefix``, in key order, fetched page by page."""
        ...

    async def presigned_get_url(self, key: str, expires_s: int) -> str | None:
        """A time-limited GET URL, or None when the backend has none (the app streams ``get``)."""
        ...

    async def clean_incomplete(self, older_than: datetime, *, dry_run: bool = False) -> int:
        """Removes what writes that never finished left behind, begun before ``older_than``.

        The local folder's ``.tmp-*`` files, S3's incomplete multipart uploads (whose parts are stored and
        billed until aborted). Returns how many were removed (with ``dry_run``: would be; nothing changes).
        """
        ...

    async def ping(self) -> None:
        """Readiness: returns when the store answers, raises ``StorageUnavailable`` otherwise."""
        ...

    async def aclose(self) -> None:
        """Releases the thread pool and connections."""
        ...
