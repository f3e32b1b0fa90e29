"""Storage's exception hierarchy; see the package docstring for when each is raised."""


class StorageError(Exception):
    """Root of every error the storage package raises."""


class InvalidKey(StorageError, ValueError):
    """A key, prefix, id, tag or metadata entry breaks the layout rules; nothing was sent."""


class ObjectNotFound(StorageError, LookupError):
    """The object does not exist (``get`` of a missing key)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object at {key!r}")
        self.key = key


class StorageUnavailable(StorageError):
    """A transient failure that outlived the retries: connection refused or reset, timeout, 5xx,
    throttling, a full disk. Retry later; an MQTT message that needed this write stays unacknowledged."""


class StorageRejected(StorageError):
    """The backend refused the request for a reason retrying will not fix (access denied, no such
    bucket, invalid request). ``code`` is the backend's error code, e.g. ``AccessDenied``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class StorageRefused(StorageRejected):
    """The backend refuses *us*, whatever we send: access denied, no such bucket, invalid or expired
    credentials, the wrong endpoint region. An operator must fix the configuration; until then the store
    is as good as down, so work that needs it waits (an MQTT message stays unacknowledged) instead of
    being given up."""


class UnknownRegion(StorageError, LookupError):
    """No store is configured for the region an account names."""

    def __init__(self, region: str) -> None:
        super().__init__(f"no object store configured for region {region!r}")
        self.region = region
