"""The ingest loop: takes messages from the broker, processes several at once, retries transient
failures with backoff while the message stays unacknowledged, and settles each message exactly when it
is done (stored, duplicate, dropped or dead-lettered).

Acknowledgements leave in arrival order, so one message that never settles holds back every one behind
it: each message settles in bounded time unless one of our own dependencies is down
(``gateway.services.failures`` says which is which). Giving up always ends in a settlement: a dead letter,
a minimal dead letter when the full one is refused, or, if even that is refused, only a log line.
"""

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Protocol

from gateway import metrics
from gateway.config import IngestSettings
from gateway.services.failures import Failure, classify
from gateway.services.ingest import IngestService
from storage import StorageRefused, UnknownRegion

log = logging.getLogger(__name__)


class Message(Protocol):
    topic: str
    payload: bytes

    @property
    def stale(self) -> bool:
        """True when redelivery has taken over (the connection it came on is gone)."""
        ...

    def settle(self) -> None:
        """Done: may be acknowledged."""
        ...


class Source(Protocol):
    def messages(self) -> AsyncIterator[Message]:
        """Messages in arrival order."""
        ...


class Consumer:
    """Runs ``IngestService.handle`` over a message source with bounded concurrency."""

    def __init__(self, source: Source, ingest: IngestService, settings: IngestSettings) -> None:
        self._source = source
        self._ingest = ingest
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Consumes until cancelled."""
        async for message in self._source.messages():
            await self._slots.acquire()
            task = asyncio.create_task(self._process(message))
            self._tasks.add(task)
            metrics.INFLIGHT.inc()
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        metrics.INFLIGHT.dec()

    async def drain(self, timeout_s: float) -> None:
        """Waits for messages in progress (at shutdown); what does not finish stays unacknowledged."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _process(self, message: Message) -> None:
        attempt = 0
        errors = 0
        while not message.stale:
            try:
                await self._ingest.handle(message.topic, message.payload)
            except Exception as exc:
                # ``handle`` itself dead-letters what the database refuses; what reaches here is a
                # dependency being down (retried for as long as it takes) or a bug (retried a few times).
                if classify(exc) is Failure.HOLD:
                    metrics.INGEST_RETRIES.labels(type(exc).__name__).inc()
                    metrics.INGEST_HELD.labels(_held_reason(exc)).inc()
                    log.warning("dependency unavailable, will retry (message stays unacknowledged): %s", exc)
                else:
                    errors += 1
                    log.exception(
                        "unexpected error processing a message on %s (%d)", message.topic[:300], errors
                    )
                    if errors >= self._settings.attempts_on_error and await self._give_up(message, exc):
                        return
            else:
                message.settle()
                return
            attempt += 1
            # Full jitter keeps a fleet of retrying gateways from hammering a recovering store in step.
            await asyncio.sleep(random.uniform(0, min(self._settings.retry_max_s, 0.1 * 2**attempt)))

    async def _give_up(self, message: Message, exc: Exception) -> bool:
        """Dead-letters ``message`` and settles it; False (retry later) only while the database is down."""
        try:
            await self._ingest.give_up(message.topic, "processing_error", repr(exc), message.payload)
        except Exception as failure:
            if classify(failure) is Failure.HOLD:
                return False
            # Not raised: an unsettled message would hold back every acknowledgement behind it.
            log.exception("could not dead-letter a message on %s; settling it anyway", message.topic[:300])
        message.settle()
        return True


def _held_reason(exc: Exception) -> str:
    # A bounded label set: the metric is for alerting, the log line has the details.
    if isinstance(exc, StorageRefused):
        return "storage_refused"
    if isinstance(exc, UnknownRegion):
        return "unknown_region"
    if type(exc).__module__.startswith("storage"):
        return "storage_unavailable"
    if type(exc).__module__.startswith("sqlalchemy"):
        return "database_unavailable"
    return "io"
