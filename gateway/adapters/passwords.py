"""argon2id password hashing in a bounded thread pool (the hash takes ~50 ms of CPU by design).

The pool's queue is bounded too: past ``workers + queue`` hashes in flight a request is refused at once
with 503 ``busy`` instead of waiting behind a flood (anonymous sign-ups must not starve log-ins forever).
"""

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher as Argon2
from argon2.exceptions import InvalidHashError, VerificationError
from prometheus_client import Counter

from gateway.errors import Unavailable

T = TypeVar("T")

HASHES = Counter(
    "camgate_password_hashes_total",
    "argon2 operations by kind (hash, verify) and outcome (done, busy: refused, the queue was full)",
    ["kind", "outcome"],
)


class Argon2Hasher:
    """argon2id with the configured cost, never on the event loop."""

    def __init__(
        self, *, time_cost: int, memory_kib: int, parallelism: int, workers: int, queue: int = 32
    ) -> None:
        self._argon = Argon2(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._capacity = workers + queue
        self._in_flight = 0
        self._lock = threading.Lock()  # released from the worker threads

    async def hash(self, password: str) -> str:
        """Hashes a password; Unavailable('busy') when the queue is full."""
        return await self._run("hash", self._argon.hash, password)

    async def verify(self, stored_hash: str, password: str) -> bool:
        """Checks a password; False for a wrong one or an unreadable hash; Unavailable('busy') when the
        queue is full."""

        def check() -> bool:
            try:
                return self._argon.verify(stored_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        return await self._run("verify", check)

    async def _run(self, kind: str, fn: Callable[..., T], *args: str) -> T:
        with self._lock:
            if self._in_flight >= self._capacity:
                HASHES.labels(kind, "busy").inc()
                raise Unavailable("busy", "the server is busy; try again in a moment", retry_after=1)
            self._in_flight += 1
        future = self._pool.submit(fn, *args)
        # Released when the work ends (or is cancelled before it starts), not when the caller stops
        # waiting: a client that hangs up does not free a thread that is still hashing.
        future.add_done_callback(self._release)
        HASHES.labels(kind, "done").inc()
        return await asyncio.wrap_future(future)

    def _release(self, _: "Future[Any]") -> None:
        with self._lock:
            self._in_flight -= 1

    def close(self) -> None:
        """Stops the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
