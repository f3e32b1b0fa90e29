"""argon2id password hashing in a bounded thread pool (the hash takes ~50 ms of CPU by design)."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as Argon2
from argon2.exceptions import InvalidHashError, VerificationError


class Argon2Hasher:
    """argon2id with the configured cost, never on the event loop."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int, workers: int) -> None:
        self._argon = Argon2(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")

    async def hash(self, password: str) -> str:
        """Hashes a password."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._argon.hash, password)

    async def verify(self, stored_hash: str, password: str) -> bool:
        """Checks a password; False for a wrong one or an unreadable hash."""

        def check() -> bool:
            try:
                return self._argon.verify(stored_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        return await asyncio.get_running_loop().run_in_executor(self._pool, check)

    def close(self) -> None:
        """Stops the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
