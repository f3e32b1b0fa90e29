"""A bounded thread pool for blocking calls: boto3 and file I/O never run on the event loop."""

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class BlockingPool:
    """Runs blocking callables on at most ``size`` threads; excess calls wait in the pool's queue.

    A cancelled caller stops waiting, but the thread finishes the call: boto3 cannot be interrupted.
    """

    def __init__(self, size: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)
        self.size = size

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Awaits ``fn(*args, **kwargs)`` run on one of the pool's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        """Waits (off the loop) for running calls to finish and stops the threads."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
