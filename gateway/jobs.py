"""Background jobs of the service, tied to the app's lifecycle (started with it, cancelled with it)."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from aiohttp import web

from gateway.bootstrap import Services
from gateway.services import signups, throttle
from gateway.services.consumer import Consumer

log = logging.getLogger(__name__)


CleanupContext = Callable[[web.Application], AsyncIterator[None]]


async def run_periodically(name: str, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
    """Runs ``job`` every ``interval_s`` seconds, the first time one interval after start (start-up stays
    quick); a failure is logged and retried next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except Exception:
            log.exception("background job %s failed; retrying in %.0f s", name, interval_s)


def periodic(name: str, interval_s: float, job: Callable[[], Awaitable[None]]) -> CleanupContext:
    """A cleanup context running ``job`` every ``interval_s`` seconds while the app runs; cancelled with
    it (what the jobs below do is idempotent or leased, so a cancelled run is finished by a later one)."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_periodically(name, interval_s, job))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return context


def housekeeping(services: Services) -> CleanupContext:
    """A cleanup context pruning expired throttle entries every ten minutes."""
    windows = services.settings.throttle
    longest = max(
        w[1]
        for w in (
            windows.login_per_identifier,
            windows.login_per_address,
            windows.bind_per_serial,
            windows.bind_per_account,
            windows.code_sends_per_identifier,
            windows.code_sends_per_address,
            windows.code_sends_overall,
        )
    )

    async def prune_throttle() -> None:
        async with services.engine.begin() as conn:
            removed = await throttle.prune(conn, services.clock.now() - timedelta(seconds=longest))
            removed += await signups.prune(conn, services.clock.now() - timedelta(seconds=longest))
        if removed:
            log.info("pruned %d expired throttle entries and sign-ups", removed)

    return periodic("prune_throttle", 600, prune_throttle)


def ingest(services: Services) -> CleanupContext:
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


def push_dispatcher(services: Services) -> CleanupContext:
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


RENEWALS_INTERVAL_S = 3600  # hourly; periods are renewed RENEW_AHEAD (2 h) before they end


def renewals(services: Services) -> CleanupContext:
    """A cleanup context renewing due monthly plans every hour (several instances may run it: each
    renewal is claimed by a conditional update, so it is charged once)."""

    async def renew() -> None:
        await services.plans.renew_due()

    return periodic("renewals", RENEWALS_INTERVAL_S, renew)


def clip_cleanup(services: Services) -> CleanupContext:
    """A cleanup context abandoning clip uploads that stayed incomplete past ``clips.upload_timeout_s``
    (and forgetting dropped ones), checked a few times per timeout so none lingers much longer."""
    interval_s = min(60.0, max(1.0, services.settings.clips.upload_timeout_s / 4))

    async def abandon() -> None:
        removed = await services.clip_ingest.abandon_stale()
        if removed:
            log.info("removed %d stale clip uploads", removed)

    return periodic("clip_cleanup", interval_s, abandon)


RECONCILE_EVERY = 12  # sweeps between reconciliations: a full listing of every store is the costly part


def sweeper(services: Services) -> CleanupContext:
    """A cleanup context running the retention sweep every ``sweep.interval_s`` (when ``sweep.enabled``),
    and every ``RECONCILE_EVERY`` sweeps a reconciliation of each region (stale uploads included).
    Several instances may run it: sweepers claim records, and one instance at a time reconciles a region."""
    settings = services.settings.sweep
    runs = 0

    async def sweep() -> None:
        nonlocal runs
        runs += 1
        report = await services.sweeper.run()
        if report.objects or report.records or not report.ok:
            log.log(logging.INFO if report.ok else logging.WARNING, "%s", report.summary())
        if runs % RECONCILE_EVERY == 0:
            for region in sorted(services.stores.regions):
                reconciled = await services.sweeper.reconcile(region)
                if reconciled.changed or not reconciled.ok:
                    log.info("%s", reconciled.summary())

    async def idle(_app: web.Application) -> AsyncIterator[None]:
        yield

    # A cancelled sweep's claims run out after sweep.lease_s and are taken again next time.
    return periodic("retention_sweep", settings.interval_s, sweep) if settings.enabled else idle
