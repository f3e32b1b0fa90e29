"""The sweep as a background job of the running service."""

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from gateway.adapters.db.tables import clips, events
from gateway.bootstrap import Services
from gateway.config import Settings
from tests.integration.conftest import test_settings
from tests.support.expired import count_rows, expired_at, later, new_account, seed_clip, seed_event


@pytest.fixture
def sweep_enabled() -> bool:
    """sweep.enabled (a test parametrizes it to switch the job off)."""
    return True


@pytest.fixture
def settings(database_url: str, tmp_path: Path, sweep_enabled: bool) -> Settings:
    """A sweep every 50 ms."""
    return test_settings(database_url, tmp_path, sweep={"interval_s": 0.05, "enabled": sweep_enabled})


async def wait_for_rows(services: Services, expected: int, seconds: float = 15.0) -> int:
    deadline = time.monotonic() + seconds
    while True:
        found = await count_rows(services, events) + await count_rows(services, clips)
        if found == expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_the_service_sweeps_periodically(services: Services, client: TestClient) -> None:
    account, camera = await new_account(services)
    await seed_event(services, account, camera, expired_at(services))
    await seed_clip(services, account, camera, expired_at(services))
    await seed_event(services, account, camera, later(services, days=2))
    assert await wait_for_rows(services, 1) == 1, "what expired went without anyone asking"
    services.clock.advance(days=2)
    assert await wait_for_rows(services, 0) == 0, "and what expires later goes when it does"


@pytest.mark.parametrize("sweep_enabled", [False])
async def test_a_disabled_sweep_does_not_run(services: Services, client: TestClient) -> None:
    account, camera = await new_account(services)
    await seed_event(services, account, camera, expired_at(services))
    await asyncio.sleep(0.5)  # ten intervals of real time: the job would have run by now
    assert await count_rows(services, events) == 1
