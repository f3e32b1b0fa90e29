"""Object storage for camgate: one ``ObjectStore`` port, an S3 backend and a local-folder backend.

Both backends use the key layout of ``storage.keys`` and are chosen per region by ``StoreRouter``.
Every blocking call (boto3, file I/O) runs on the store's own bounded thread pool.

Exceptions (all from ``storage.errors``)::

    StorageError            root; anything else unexpected from a backend
    ├── InvalidKey          (also ValueError) a key, id, prefix, tag or metadata breaks the rules;
    │                       raised before anything is sent
    ├── ObjectNotFound      (also LookupError) ``get`` of a missing key (``head`` returns None instead)
    ├── StorageUnavailable  transient and already retried: connection refused/reset, timeouts, 5xx,
    │                       throttling, disk full. Retry later; leave the MQTT message unacknowledged
    ├── StorageRejected     permanent for this request: a bad request (``.code``)
    │   └── StorageRefused  the backend refuses us (access denied, no such bucket, bad or expired
    │                       credentials, wrong region): configuration; wait like an outage, alert ops
    └── UnknownRegion       (also LookupError) no store configured for an account's region

Idempotent creation: ``put(..., if_absent=True)`` returns ``PutResult(created=False)`` when the object is
already there, which a retried ingest treats as success.
"""

from storage.errors import (
    InvalidKey,
    ObjectNotFound,
    StorageError,
    StorageRefused,
    StorageRejected,
    StorageUnavailable,
    UnknownRegion,
)
from storage.local import LocalStore
from storage.ports import DeleteFailure, DeleteReport, ObjectInfo, ObjectStore, PutResult
from storage.routing import StoreRouter, open_store
from storage.s3 import S3Store
from storage.settings import LocalStoreSettings, S3StoreSettings, StorageSettings, StoreSettings

__all__ = [
    "DeleteFailure",
    "DeleteReport",
    "InvalidKey",
    "LocalStore",
    "LocalStoreSettings",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PutResult",
    "S3Store",
    "S3StoreSettings",
    "StorageError",
    "StorageRefused",
    "StorageRejected",
    "StorageSettings",
    "StorageUnavailable",
    "StoreRouter",
    "StoreSettings",
    "UnknownRegion",
    "open_store",
]
