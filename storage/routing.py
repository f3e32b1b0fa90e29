"""Region routing: each account's media goes to its home region's store, and nowhere else."""

import asyncio
from collections.abc import Mapping

from storage.errors import StorageError, StorageUnavailable, UnknownRegion
from storage.local import LocalStore
from storage.ports import ObjectStore
from storage.s3 import S3Store
from storage.settings import S3StoreSettings, StorageSettings, StoreSettings


async def open_store(settings: StoreSettings) -> ObjectStore:
    """Builds the store one region's settings describe."""
    if isinstance(settings, S3StoreSettings):
        return await S3Store.open(settings)
    return await LocalStore.open(settings)


class StoreRouter:
    """Region name → its ``ObjectStore``; an unknown region fails loudly instead of picking a default."""

    def __init__(self, stores: Mapping[str, ObjectStore]) -> None:
        self._stores = dict(stores)

    @classmethod
    async def open(cls, settings: StorageSettings) -> "StoreRouter":
        """Opens every region's store (closing those already opened if one fails)."""
        stores: dict[str, ObjectStore] = {}
        try:
            for region, store_settings in settings.regions.items():
                stores[region] = await open_store(store_settings)
        except BaseException:
            await asyncio.gather(*(s.aclose() for s in stores.values()))
            raise
        return cls(stores)

    @property
    def regions(self) -> frozenset[str]:
        """The configured region names."""
        return frozenset(self._stores)

    def for_region(self, region: str) -> ObjectStore:
        """The store of ``region`` (an account's home region), or ``UnknownRegion``."""
        try:
            return self._stores[region]
        except KeyError:
            raise UnknownRegion(region) from None

    async def ping(self) -> None:
        """Readiness of every region; ``StorageUnavailable`` naming the regions that failed."""
        results = await asyncio.gather(*(s.ping() for s in self._stores.values()), return_exceptions=True)
        failed = {r: e for r, e in zip(self._stores, results, strict=True) if isinstance(e, BaseException)}
        for error in failed.values():
            if not isinstance(error, StorageError):
                raise error
        if failed:
            detail = "; ".join(f"{r}: {e}" for r, e in sorted(failed.items()))
            raise StorageUnavailable(f"object stores not ready: {detail}")

    async def aclose(self) -> None:
        """Closes every store."""
        await asyncio.gather(*(s.aclose() for s in self._stores.values()))
