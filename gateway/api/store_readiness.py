"""Readiness of each region's object store, cheap enough to be asked by anyone.

/readyz is unauthenticated, so its store check must not become a way to hammer S3 or to fill the
store's threads: each region's answer is remembered for ``ttl_s``, at most one check per region is in
flight (callers share it), and a caller waits at most ``timeout_s`` for it. A check still running after
the timeout keeps its thread (boto3 cannot be interrupted) until the store's own timeouts end it.
"""

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

from storage import StoreRouter

TIMEOUT_S = 2.0
TTL_S = 5.0


class StoreReadiness:
    """Answers ``{"store:<region>": "ok" | "timeout" | <error class name>}`` for every region."""

    def __init__(
        self,
        stores: StoreRouter,
        *,
        timeout_s: float = TIMEOUT_S,
        ttl_s: float = TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stores = stores
        self._timeout_s = timeout_s
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._answers: dict[str, tuple[float, str]] = {}
        self._checks: dict[str, asyncio.Task[str]] = {}

    async def check(self) -> dict[str, str]:
        """Every region's state, from the last few seconds or checked now."""
        regions = sorted(self._stores.regions)
        answers = await asyncio.gather(*(self._region(r) for r in regions))
        return {f"store:{r}": a for r, a in zip(regions, answers, strict=True)}

    async def _region(self, region: str) -> str:
        remembered = self._answers.get(region)
        if remembered is not None and self._monotonic() - remembered[0] < self._ttl_s:
            return remembered[1]
        task = self._checks.get(region)
        if task is None:
            task = asyncio.create_task(self._ping(region), name=f"store readiness {region}")
            self._checks[region] = task
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._timeout_s)
        except TimeoutError:
            self._answers[region] = (self._monotonic(), "timeout")
            return "timeout"

    async def _ping(self, region: str) -> str:
        try:
            await self._stores.for_region(region).ping()
            answer = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
            answer = type(exc).__name__
        finally:
            del self._checks[region]
        self._answers[region] = (self._monotonic(), answer)
        return answer

    async def aclose(self) -> None:
        """Stops waiting for checks still in flight (their threads end with the store's pool)."""
        tasks = list(self._checks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


STORE_READINESS = web.AppKey("store_readiness", StoreReadiness)
