"""The ingest loop: takes messages from the broker, processes several at once, retries transient
failures with backoff while the message stays unacknowledged, and settles each message exactly when it
is done (stored, duplicate, dropped or dead-lettered)."""

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Protocol

from sqlalchemy.exc import DBAPIError, OperationalError

from gateway import metrics
from gateway.config import IngestSettings
from gateway.services.ingest import IngestService
from storage import StorageUnavailable

log = logging.getLogger(__name__)

TRANSIENT = (StorageUnavailable, OperationalError, DBAPIError, OSError, TimeoutError)


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
            except TRANSIENT as exc:
                metrics.INGEST_RETRIES.labels(type(exc).__name__).inc()
                log.warning("transient failure, will retry (message stays unacknowledged): %s", exc)
            except Exception as exc:
                errors += 1
                log.exception("unexpected error processing a message on %s (%d)", message.topic, errors)
                if errors >= self._settings.attempts_on_error and await self._give_up(message, exc):
                    return
            else:
                message.settle()
                return
            attempt += 1
            # Full jitter keeps a fleet of retrying gateways from hammering a recovering store in step.
            await asyncio.sleep(random.uniform(0, min(self._settings.retry_max_s, 0.1 * 2**attempt)))

    async def _give_up(self, message: Message, exc: Exception) -> bool:
        try:
            await self._ingest.dead_letter(
                message.topic, "", "processing_error", repr(exc)[:500], message.payload
            )
        except TRANSIENT:
            return False
        message.settle()
        return True
