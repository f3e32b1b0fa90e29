"""Background jobs of the service, tied to the app's lifecycle (started with it, cancelled with it)."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from aiohttp import web

from gateway.bootstrap import Services
from gateway.services import throttle
from gateway.services.consumer import Consumer

log = logging.getLogger(__name__)


async def run_periodically(name: str, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
    """Runs ``job`` every ``interval_s`` seconds, the first time one interval after start (start-up stays
    quick); a failure is logged and retried next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except Exception:
            log.exception("background job %s failed; retrying in %.0f s", name, interval_s)


def housekeeping(services: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running the periodic housekeeping jobs."""
    windows = services.settings.throttle
    longest = max(
        w[1]
        for w in (
            windows.login_per_identifier,
            windows.login_per_address,
            windows.bind_per_serial,
            windows.bind_per_account,
            windows.code_sends_per_identifier,
        )
    )

    async def prune_throttle() -> None:
        async with services.engine.begin() as conn:
            removed = await throttle.prune(conn, services.clock.now() - timedelta(seconds=longest))
        if removed:
            log.info("pruned %d expired throttle entries", removed)

    async def context(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_periodically("prune_throttle", 600, prune_throttle))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return context


def ingest(services: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running the MQTT session and the ingest consumer."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        mqtt = services.mqtt
        if mqtt is None:
            yield
            return
        consumer = Consumer(mqtt, services.ingest, services.settings.ingest)
        await mqtt.start()
        task = asyncio.create_task(consumer.run())
        yield
        task.cancel()  # no new messages; those in progress get a moment to finish and be acknowledged
        await asyncio.gather(task, return_exceptions=True)
        await consumer.drain(timeout_s=10)
        await mqtt.stop()

    return context


def push_dispatcher(services: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running this instance's push outbox dispatcher."""
    # Long enough for the deliveries in flight to finish, so a clean stop leaves no lease behind.
    grace_s = 2 * services.settings.push.timeout_s + 1

    async def context(_app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(services.push.run_forever(stop))
        yield
        stop.set()
        _done, pending = await asyncio.wait([task], timeout=grace_s)
        if pending:
            log.warning("push dispatcher did not stop within %.0f s; cancelling it", grace_s)
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return context
