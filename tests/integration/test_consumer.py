"""The consumer over a fake message source (the broker-side behaviour is in test_ingest_e2e.py): messages
settle only when stored, transient failures are retried while the message stays unsettled, and a
message that keeps failing unexpectedly ends as a dead letter instead of blocking the queue."""

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from device_sim.registry import SimDevice
from gateway.adapters.db.tables import dead_letters, events
from gateway.bootstrap import Services
from gateway.services.consumer import Consumer
from gateway.services.ingest import IngestService, Outcome
from storage import StorageUnavailable
from tests.support.api import auth, new_user
from tests.support.media import alert


class FakeMessage:
    def __init__(self, topic: str, payload: bytes, log: list[str]) -> None:
        self.topic, self.payload, self._log = topic, payload, log
        self.stale = False

    def settle(self) -> None:
        self._log.append(self.topic + " " + self.payload[-8:].hex())


class FakeSource:
    def __init__(self, messages: list[FakeMessage]) -> None:
        self._messages = messages

    async def messages(self) -> AsyncIterator[FakeMessage]:
        for message in self._messages:
            yield message
        await asyncio.Event().wait()  # a broker connection stays open


class FlakyIngest(IngestService):
    """The real service, with the first N calls failing the way a down store or a bug would."""

    def __init__(self, real: IngestService, failures: list[Exception], only: bytes | None = None) -> None:
        self.__dict__.update(real.__dict__)
        self.failures = failures
        self.only = only
        self.calls = 0

    async def handle(self, topic: str, payload: bytes) -> Outcome:
        self.calls += 1
        if self.failures and self.only in (None, payload):
            raise self.failures.pop(0)
        return await super().handle(topic, payload)


async def run_until(consumer: Consumer, done: Callable[[], bool]) -> None:
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(10):
            while not done():  # noqa: ASYNC110 - polling a plain condition of the test
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def bound_camera(client: TestClient, mailbox: Path, cam: SimDevice) -> None:
    token = await new_user(client, mailbox, "c@example.com")
    assert (
        await client.post("/v1/devices", json={"serial": cam.serial, "code": cam.code}, headers=auth(token))
    ).status == 201


async def test_transient_failures_are_retried_before_settling(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    await bound_camera(client, mailbox, fleet[0])
    settled: list[str] = []
    message = FakeMessage(f"cam/{fleet[0].serial}/alert", alert("t-1"), settled)
    flaky = FlakyIngest(
        services.ingest, [StorageUnavailable("store down"), OSError("reset"), StorageUnavailable("x")]
    )
    consumer = Consumer(FakeSource([message]), flaky, services.settings.ingest)
    await run_until(consumer, lambda: settled)
    assert flaky.calls == 4 and len(settled) == 1
    async with services.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(events))).scalar() == 1


async def test_a_poison_message_is_dead_lettered_not_retried_forever(
    client: TestClient, mailbox: Path, fleet: list[SimDevice], services: Services
) -> None:
    await bound_camera(client, mailbox, fleet[1])
    settled: list[str] = []
    messages = [FakeMessage(f"cam/{fleet[1].serial}/alert", alert(f"p-{i}"), settled) for i in range(2)]
    attempts = services.settings.ingest.attempts_on_error
    flaky = FlakyIngest(services.ingest, [RuntimeError("bug")] * attempts, only=messages[0].payload)
    consumer = Consumer(FakeSource(messages), flaky, services.settings.ingest)
    await run_until(consumer, lambda: len(settled) == 2)
    async with services.engine.connect() as conn:
        reasons = [r.reason for r in await conn.execute(select(dead_letters))]
        stored = (await conn.execute(select(func.count()).select_from(events))).scalar()
    assert reasons == ["processing_error"] and stored == 1


async def test_stale_messages_are_left_to_redelivery(services: Services, fleet: list[SimDevice]) -> None:
    settled: list[str] = []
    message = FakeMessage(f"cam/{fleet[2].serial}/alert", alert("s-1"), settled)
    flaky = FlakyIngest(services.ingest, [StorageUnavailable("down")] * 1000)
    consumer = Consumer(FakeSource([message]), flaky, services.settings.ingest)
    task = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.2)
    message.stale = True  # the connection dropped; the broker will send it again
    await asyncio.sleep(0.5)
    calls = flaky.calls
    await asyncio.sleep(0.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await consumer.drain(1)
    assert flaky.calls == calls and settled == []
