"""The S3 backend: boto3 on a bounded thread pool, its errors translated into ``storage.errors`` here.

Exactly-once creation uses ``If-None-Match: *`` (a 412 answer means the object is already there). Whether
the server honours it is probed once with a throw-away object under ``_camgate/probe/``; a server that
ignores the header gets HEAD-then-PUT instead, where two racing writers may both write (harmless for
camgate, whose writers of one key carry the same bytes).
"""

import asyncio
import base64
import contextlib
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)

from storage.errors import (
    ObjectNotFound,
    StorageError,
    StorageRefused,
    StorageRejected,
    StorageUnavailable,
)
from storage.keys import PROBE_PREFIX, validate_folder_prefix, validate_key, validate_prefix
from storage.pool import BlockingPool
from storage.ports import DeleteFailure, DeleteReport, ObjectInfo, PutResult
from storage.settings import S3StoreSettings
from storage.tags import validate_content_type, validate_metadata, validate_tags

if TYPE_CHECKING:  # the stubs are a dev dependency
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

T = TypeVar("T")
log = logging.getLogger(__name__)

DELETE_BATCH = 1000  # DeleteObjects' limit per request
VERSIONING_RECHECK_S = 10.0  # how long an "unversioned" answer is believed
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4's limit
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable", "InternalError"}
)
# Answers about who we are or where we point, not about the request: fixed by configuration, not by retrying
# at once nor by giving the work up.
_REFUSAL_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "AuthorizationHeaderMalformed",  # credentials scoped to another region
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "InvalidToken",
        "NoSuchBucket",
        "PermanentRedirect",  # the bucket lives in another region than the endpoint
        "RequestTimeTooSkewed",  # our clock
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "403",
        "301",
    }
)


def build_client(settings: S3StoreSettings) -> "S3Client":
    """A boto3 S3 client with explicit retries, timeouts and a connection pool sized to the thread pool."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        max_pool_connections=settings.pool_size,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        signature_version="s3v4",
        s3={"addressing_style": "path" if settings.path_style else "auto"},
        # boto3 >= 1.36 adds CRC checksums to every upload, which several S3-compatible servers reject;
        # uploads carry Content-MD5 instead, which every S3 API verifies.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    key_id, secret = settings.access_key_id, settings.secret_access_key
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region_name,
        aws_access_key_id=key_id.get_secret_value() if key_id else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=config,
    )


class S3Store:
    """An ``ObjectStore`` on one S3 bucket."""

    def __init__(self, settings: S3StoreSettings, client: "S3Client", pool: BlockingPool) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client = client
        self._pool = pool
        self._conditional: bool | None = {"always": True, "never": False}.get(settings.conditional_put)
        self._probe_lock = asyncio.Lock()
        self._versioned: bool | None = None
        self._versioned_at = 0.0

    @classmethod
    async def open(cls, settings: S3StoreSettings) -> "S3Store":
        """Builds the pool and the client (off the loop: botocore reads its models from disk)."""
        pool = BlockingPool(settings.pool_size, f"s3-{settings.bucket}")
        client = await pool.run(build_client, settings)
        return cls(settings, client, pool)

    async def aclose(self) -> None:
        """Waits for running calls, then closes the pool and the client's connections."""
        await self._pool.close()
        self._client.close()

    async def _run(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await self._pool.run(fn)
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, what) from exc

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
        """Stores ``data``; above the multipart threshold in parts. With ``if_absent`` never overwrites."""
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": validate_key(key),
            "ContentType": validate_content_type(content_type),
            "Metadata": validate_metadata(metadata),
        }
        if tag_set := validate_tags(tags):
            args["Tagging"] = urlencode(tag_set)
        conditional = if_absent and await self.supports_conditional_put()
        if if_absent and not conditional and await self.head(key) is not None:
            return PutResult(key, created=False)
        write = self._put_parts if len(data) > self.settings.multipart_threshold_bytes else self._put_one
        created = await self._run(key, functools.partial(write, args, data, conditional))
        return PutResult(key, created=created)

    def _put_one(self, args: dict[str, Any], data: bytes, conditional: bool) -> bool:
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if conditional else {}
        try:
            self._client.put_object(**args, **extra, Body=data, ContentMD5=_md5_b64(data))
        except ClientError as exc:
            if conditional and _status(exc) == 412:
                return False
            raise
        return True

    def _put_parts(self, args: dict[str, Any], data: bytes, conditional: bool) -> bool:
        bucket, key = args["Bucket"], args["Key"]
        upload_id = self._client.create_multipart_upload(**args)["UploadId"]
        size = self.settings.multipart_part_bytes
        try:
            parts: list[CompletedPartTypeDef] = []
            for number, start in enumerate(range(0, len(data), size), start=1):
                chunk = data[start : start + size]
                answer = self._client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                    ContentMD5=_md5_b64(chunk),
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
            extra: dict[str, Any] = {"IfNoneMatch": "*"} if conditional else {}
            self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **extra
            )
        except BaseException as exc:
            # Parts of an unfinished upload are stored (and billed) until aborted. If the abort fails too
            # (server gone), a lifecycle rule for incomplete uploads is the backstop.
            with contextlib.suppress(BotoCoreError, ClientError):
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            if conditional and isinstance(exc, ClientError) and _status(exc) == 412:
                return False
            raise
        return True

    async def get(self, key: str) -> bytes:
        """The object's bytes, or ``ObjectNotFound``."""
        return await self._run(key, functools.partial(self._get, validate_key(key)))

    def _get(self, key: str) -> bytes:
        body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            return body.read()
        finally:
            body.close()

    async def head(self, key: str) -> ObjectInfo | None:
        """Size, etag, content type and metadata, or None. S3's HEAD carries no tags."""
        return await self._run(key, functools.partial(self._head, validate_key(key)))

    def _head(self, key: str) -> ObjectInfo | None:
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
        return ObjectInfo(
            key=key,
            size=answer["ContentLength"],
            etag=answer["ETag"].strip('"'),
            last_modified=answer["LastModified"],
            content_type=answer.get("ContentType"),
            metadata=answer.get("Metadata", {}),
        )

    async def delete_many(self, keys: Sequence[str]) -> DeleteReport:
        """Deletes the keys in batches of 1,000; in a versioned bucket every version and delete marker."""
        unique = list(dict.fromkeys(validate_key(k) for k in keys))
        if not unique:
            return DeleteReport(deleted=0)
        entries: list[tuple[str, str | None]] = [(key, None) for key in unique]
        if await self._run("versioning status", self._is_versioned):
            by_folder: dict[str, set[str]] = {}
            for key in unique:
                by_folder.setdefault(key[: key.rfind("/") + 1], set()).add(key)
            entries = []
            for folder, wanted in by_folder.items():  # one at a time: a sweep leaves threads for ingest
                entries += await self._run(folder, functools.partial(self._versions_in, folder, wanted))
        return await self._delete_entries(entries)

    async def delete_prefix(self, prefix: str) -> DeleteReport:
        """Deletes every object (every version) under a folder prefix, a page of 1,000 at a time."""
        validate_folder_prefix(prefix)
        versioned = await self._run("versioning status", self._is_versioned)
        deleted = 0
        failed: dict[tuple[str, str | None], DeleteFailure] = {}
        while True:
            # Always the first page: listing markers that name a deleted version are not portable
            # (moto then skips everything). Entries that fail to delete come back; stop without progress.
            entries = await self._run(prefix, functools.partial(self._first_page, prefix, versioned))
            report = await self._delete_entries(entries)
            deleted += report.deleted
            for entry in set(entries) - {(f.key, f.version_id) for f in report.failed}:
                failed.pop(entry, None)
            failed.update(((f.key, f.version_id), f) for f in report.failed)
            if not entries or report.deleted == 0:
                return DeleteReport(deleted=deleted, failed=tuple(failed.values()))

    def _first_page(self, prefix: str, versioned: bool) -> list[tuple[str, str | None]]:
        if not versioned:
            page = self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
            return [(o["Key"], None) for o in page.get("Contents", [])]
        answer = self._client.list_object_versions(Bucket=self.bucket, Prefix=prefix)
        listed = [*answer.get("Versions", []), *answer.get("DeleteMarkers", [])]
        return [(v["Key"], v["VersionId"]) for v in listed]

    def _is_versioned(self) -> bool:
        # A bucket once versioned stays so ("Suspended" still holds versions): that answer is kept. An
        # "unversioned" answer is kept only VERSIONING_RECHECK_S, so a sweep asks once every few batches
        # instead of once a batch; versioning switched on within that window would leave old versions
        # behind, which the lifecycle backstop (noncurrent versions expire after a day) removes.
        now = time.monotonic()
        if self._versioned is None or (
            not self._versioned and now - self._versioned_at > VERSIONING_RECHECK_S
        ):
            self._versioned = "Status" in self._client.get_bucket_versioning(Bucket=self.bucket)
            self._versioned_at = now
        return self._versioned

    def _versions_in(self, folder: str, wanted: set[str]) -> list[tuple[str, str | None]]:
        """Every version and delete marker of the ``wanted`` keys, all in ``folder``.

        One listing per folder rather than per key: a sweep deletes many keys of one device-day, and
        ListObjectVersions is slow (moto scans the whole bucket per call). Keys come back sorted, so the
        listing stops after the last wanted key.
        """
        found: list[tuple[str, str | None]] = []
        last = max(wanted)
        kwargs: dict[str, Any] = {}
        while True:
            answer = self._client.list_object_versions(Bucket=self.bucket, Prefix=folder, **kwargs)
            listed = [*answer.get("Versions", []), *answer.get("DeleteMarkers", [])]
            found += [(v["Key"], v["VersionId"]) for v in listed if v["Key"] in wanted]
            if not answer.get("IsTruncated", False) or answer["NextKeyMarker"] > last:
                return found
            kwargs = {"KeyMarker": answer["NextKeyMarker"], "VersionIdMarker": answer["NextVersionIdMarker"]}

    async def _delete_entries(self, entries: list[tuple[str, str | None]]) -> DeleteReport:
        report = DeleteReport(deleted=0)
        for start in range(0, len(entries), DELETE_BATCH):
            batch = entries[start : start + DELETE_BATCH]
            report = _merge(
                report, await self._run(batch[0][0], functools.partial(self._delete_batch, batch))
            )
        return report

    def _delete_batch(self, batch: list[tuple[str, str | None]]) -> DeleteReport:
        objects: list[ObjectIdentifierTypeDef] = [
            {"Key": key, "VersionId": version} if version else {"Key": key} for key, version in batch
        ]
        # Quiet mode: the answer lists only failures, which keeps 1,000-key answers small.
        answer = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
        failed = tuple(
            DeleteFailure(e.get("Key", ""), e.get("VersionId"), e.get("Code", ""), e.get("Message", ""))
            for e in answer.get("Errors", [])
        )
        return DeleteReport(deleted=len(batch) - len(failed), failed=failed)

    async def clean_incomplete(self, older_than: datetime, *, dry_run: bool = False) -> int:
        """Aborts the bucket's multipart uploads initiated before ``older_than``; returns how many."""
        return await self._run(
            "incomplete multipart uploads", functools.partial(self._abort_uploads, older_than, dry_run)
        )

    def _abort_uploads(self, older_than: datetime, dry_run: bool) -> int:
        aborted = 0
        kwargs: dict[str, Any] = {}
        while True:
            page = self._client.list_multipart_uploads(Bucket=self.bucket, **kwargs)
            for upload in page.get("Uploads", []):
                if upload["Initiated"] >= older_than:  # may still be uploading: leave it
                    continue
                if not dry_run:
                    try:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except ClientError as exc:
                        if _status(exc) != 404:  # NoSuchUpload: it completed or was aborted meanwhile
                            raise
                        continue
                aborted += 1
            if not page.get("IsTruncated", False):
                return aborted
            kwargs = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    async def put_lifecycle(self, rules: Sequence[Mapping[str, Any]]) -> None:
        """Replaces the bucket's lifecycle configuration with ``rules`` (``storage.lifecycle``)."""
        # Plain dicts in boto3's shape; the stubs' TypedDicts would only restate storage.lifecycle.
        config: Any = {"Rules": [dict(rule) for rule in rules]}
        if not config["Rules"]:  # S3 refuses an empty configuration: no rules means none at all
            await self._run(
                "lifecycle", functools.partial(self._client.delete_bucket_lifecycle, Bucket=self.bucket)
            )
            return
        await self._run(
            "lifecycle",
            functools.partial(
                self._client.put_bucket_lifecycle_configuration,
                Bucket=self.bucket,
                LifecycleConfiguration=config,
            ),
        )

    async def get_lifecycle(self) -> list[dict[str, Any]]:
        """The bucket's lifecycle rules, or an empty list when it has none."""
        return await self._run("lifecycle", self._get_lifecycle)

    def _get_lifecycle(self) -> list[dict[str, Any]]:
        try:
            answer = self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
                return []
            raise
        return [dict(rule) for rule in answer.get("Rules", [])]

    async def presigned_get_url(self, key: str, expires_s: int) -> str | None:
        """A SigV4 presigned GET URL valid for ``expires_s`` seconds (1 s to 7 days)."""
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ValueError(f"expires_s must be within 1..{MAX_PRESIGN_S}, not {expires_s}")
        params = {"Bucket": self.bucket, "Key": validate_key(key)}
        # Off the loop too: signing may first fetch credentials (instance metadata, SSO).
        return await self._run(
            key,
            functools.partial(
                self._client.generate_presigned_url, "get_object", Params=params, ExpiresIn=expires_s
            ),
        )

    async def ping(self) -> None:
        """HEAD on the bucket: ``StorageUnavailable`` if unreachable, ``StorageRefused`` if misconfigured."""
        try:
            await self._pool.run(self._client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) in (403, 404):  # HEAD answers carry no error code
                code = "NoSuchBucket" if _status(exc) == 404 else "AccessDenied"
                raise StorageRefused(code, f"bucket {self.bucket!r}") from exc
            raise _translate(exc, f"bucket {self.bucket!r}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"bucket {self.bucket!r}") from exc

    async def supports_conditional_put(self) -> bool:
        """Whether the server honours ``If-None-Match: *`` (set in the settings or probed once)."""
        async with self._probe_lock:  # a burst of first puts waits for one probe
            if self._conditional is None:
                self._conditional = await self._run("If-None-Match probe", self._probe_conditional_put)
                level = logging.INFO if self._conditional else logging.WARNING
                log.log(level, "bucket %s: If-None-Match honoured: %s", self.bucket, self._conditional)
        return self._conditional

    def _probe_conditional_put(self) -> bool:
        key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            for _ in range(2):
                self._client.put_object(Bucket=self.bucket, Key=key, Body=b"", IfNoneMatch="*")
        except ClientError as exc:
            if _status(exc) == 412:
                return True
            if _status(exc) in (400, 501):  # servers that refuse the header outright
                return False
            raise
        finally:
            with contextlib.suppress(BotoCoreError, ClientError):
                versions = self._versions_in(PROBE_PREFIX, {key})
                if versions:
                    self._delete_batch(versions)
        return False  # the second write went through: the header was ignored

    # Last in the class on purpose: below this method, ``list`` in an annotation would name it.
    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Current objects under ``prefix`` in key order, one ListObjectsV2 page (1,000) at a time."""
        validate_prefix(prefix)
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"ContinuationToken": token} if token else {}
            page = await self._run(
                prefix,
                functools.partial(self._client.list_objects_v2, Bucket=self.bucket, Prefix=prefix, **kwargs),
            )
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"],
                    size=item["Size"],
                    etag=item["ETag"].strip('"'),
                    last_modified=item["LastModified"],
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated", False) or not token:
                return


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _merge(a: DeleteReport, b: DeleteReport) -> DeleteReport:
    return DeleteReport(deleted=a.deleted + b.deleted, failed=a.failed + b.failed)


def _translate(exc: BotoCoreError | ClientError, what: str) -> StorageError:
    """Maps a boto3 error (after botocore's own retries) onto the storage hierarchy."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "")) or str(_status(exc))
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFound(what)
        if _status(exc) >= 500 or code in _TRANSIENT_CODES:
            return StorageUnavailable(f"S3 answered {code} for {what}")
        if code in _REFUSAL_CODES:
            return StorageRefused(code, f"S3 refused us for {what}")
        return StorageRejected(code, f"S3 refused the request for {what}")
    if isinstance(exc, ConnectionError | HTTPClientError | IncompleteReadError | CredentialRetrievalError):
        return StorageUnavailable(f"S3 unreachable for {what}: {exc}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StorageRefused("NoCredentials", f"no S3 credentials for {what}: {exc}")
    return StorageError(f"S3 call failed for {what}: {exc}")
