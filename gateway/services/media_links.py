"""Short-lived media links that are never dead on arrival.

Signing a URL is local arithmetic: it succeeds while the store is down or after the object is gone, and
the client then meets S3's error instead of ours. One HEAD first costs a request per view but turns those
into the API's own answers: 503 ``storage_unavailable`` (the middleware maps ``StorageUnavailable``) and
404 ``media_not_found`` (``ObjectNotFound``)."""

from storage import ObjectNotFound, ObjectStore


async def ensure_present(store: ObjectStore, key: str) -> None:
    """Returns when ``key`` exists; ``ObjectNotFound`` when it does not, storage errors when the store
    cannot say."""
    if await store.head(key) is None:
        raise ObjectNotFound(key)


async def present_link(store: ObjectStore, key: str, ttl_s: int) -> str | None:
    """A presigned GET URL of ``key`` once a HEAD found it; None when the store has no URLs (stream
    ``get`` instead, which answers ``ObjectNotFound`` itself)."""
    url = await store.presigned_get_url(key, ttl_s)
    if url is not None:
        await ensure_present(store, key)
    return url
