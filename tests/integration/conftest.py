"""The app under test on a real database: every API test runs on SQLite and on PostgreSQL."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from device_sim.registry import SimDevice
from gateway.api.app import create_app
from gateway.bootstrap import Services, build
from gateway.config import Settings, load_settings
from tests.support.clock import ManualClock
from tests.support.seed import import_fleet


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/camgate.db"
    return str(request.getfixturevalue("pg_database_url"))


@pytest.fixture
def mailbox(tmp_path: Path) -> Path:
    """The development mailbox folder the app writes codes to."""
    return tmp_path / "mailbox"


def test_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for tests: cheap argon2, a fixed key, everything under tmp_path."""
    base: dict[str, Any] = {
        "environment": "test",
        "data_dir": tmp_path,
        "database": {"url": database_url},
        "security": {"secret_key": "k" * 40, "argon2_time_cost": 1, "argon2_memory_kib": 8192},
        "notify": {"mailbox_dir": tmp_path / "mailbox"},
        "mqtt": {"enabled": False},
    }
    base.update(overrides)
    return load_settings(**base)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Default test settings."""
    return test_settings(database_url, tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    """The app's clock, moved by the tests."""
    return ManualClock()


@pytest.fixture
async def services(settings: Settings, clock: ManualClock) -> AsyncIterator[Services]:
    """The real services on the test database."""
    async with AsyncExitStack() as stack:
        yield await build(settings, stack, clock=clock)


@pytest.fixture
async def client(services: Services, aiohttp_client: Callable[..., Awaitable[TestClient]]) -> TestClient:
    """An HTTP client of the real app. ``services`` comes first so that it is torn down last, after the
    app's background jobs have stopped."""
    return await aiohttp_client(create_app(services))


@pytest.fixture
async def fleet(services: Services) -> list[SimDevice]:
    """Ten simulated cameras imported through the registry service."""
    return await import_fleet(services, 10)
