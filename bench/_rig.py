"""The ingest bench's rig: every server it needs, started by itself in a temp folder.

- ``MotoServer``: moto's S3 server in a subprocess (the S3 API over real HTTP).
- ``GatewayProcess``: ``python -m gateway serve`` as a separate process, configured with ``CAMGATE_*``
  variables only, so its CPU time can be read from /proc and it shares no GIL with the load generator.
- ``prepare``: the gateway's own services, in this process, import a simulated factory run, bind it to
  one account, register the webhook receiver as its push target and render the broker's accounts
  (as ``camgate demo`` does).
- ``WebhookReceiver``: an aiohttp server recording when each push (by ``Idempotency-Key``) arrived.
- ``cpu_s``/``loop_thread_cpu_s``: CPU seconds of a process (all threads) or of its main thread.
"""

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from aiohttp import web

from device_sim.registry import SimDevice, new_fleet
from gateway.bootstrap import Services
from gateway.config import Settings, load_settings
from gateway.devbroker import free_port
from gateway.services.accounts import SignUp
from gateway.services.broker_sync import sync_broker
from gateway.services.registry import import_registry

REGION = "sg"
S3_KEY = "bench"  # moto accepts any credentials
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, every thread included (from /proc)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def loop_thread_cpu_s(pid: int) -> float:
    """CPU seconds of a process's main thread: for the gateway, its event loop."""
    return _stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat"))


def _stat_cpu(path: Path) -> float:
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def to_env(config: Mapping[str, Any]) -> dict[str, str]:
    """``CAMGATE_*`` variables for a settings tree: sections become ``SECTION__KEY``; mappings below
    that level (and the regions) travel as JSON, which pydantic-settings parses."""
    env: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and key != "regions":
            for sub, item in value.items():
                env[f"CAMGATE_{key.upper()}__{sub.upper()}"] = _env_value(item)
        else:
            env[f"CAMGATE_{key.upper()}"] = _env_value(value)
    return env


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | Path):
        return str(value)
    return json.dumps(value, default=str)


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The settings the gateway process will load from ``env``: set-up here sees exactly what it sees."""
    with _environment(env):
        return load_settings()


class MotoServer:
    """moto's S3 server on a free loopback port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._process is not None
        return self._process.pid

    def command(self) -> list[str]:
        """The server's command line."""
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def start(self, timeout_s: float = 20.0) -> None:
        """Starts the server and returns once it answers HTTP."""
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=log)  # noqa: S603 - our own
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited at start; see {self._log_path}")
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                connection.request("GET", "/moto-api/")
                connection.getresponse().read()
                return
            except (ConnectionError, TimeoutError, http.client.HTTPException):
                time.sleep(0.05)
            finally:
                connection.close()
        raise RuntimeError(f"moto server did not answer within {timeout_s} s")

    def store_settings(self, bucket: str) -> dict[str, Any]:
        """A region's store settings for ``bucket`` on this server (the gateway's defaults otherwise)."""
        return {
            "kind": "s3",
            "bucket": bucket,
            "endpoint_url": self.endpoint_url,
            "access_key_id": S3_KEY,
            "secret_access_key": S3_KEY,
            "path_style": True,
        }

    def stop(self) -> None:
        """Stops the server (moto forgets everything)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


class GatewayProcess:
    """``python -m gateway serve`` with this process's environment plus ``env`` (``CAMGATE_*``, ``MALLOC_*``)."""

    def __init__(self, env: Mapping[str, str], http_port: int, log_path: Path) -> None:
        self._env = {**os.environ, **env}
        self._port = http_port
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The gateway's process id."""
        assert self._process is not None
        return self._process.pid

    def start(self, timeout_s: float = 60.0) -> None:
        """Starts it and waits until /readyz answers 200 (database, broker session and stores up)."""
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"], env=self._env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self._process.returncode}: {self.tail()}")
            try:
                url = f"http://127.0.0.1:{self._port}/readyz"
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the gateway was not ready within {timeout_s} s: {self.tail()}")

    def tail(self) -> str:
        """The end of its log."""
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (a clean stop: messages in progress finish) and wait."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


class WebhookReceiver:
    """The account's push target: answers 200 at once and records each push's arrival time."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}  # Idempotency-Key (the gateway's event id) → time.time()
        self.posts = 0
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Where the gateway posts."""
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        at = time.time()
        await request.read()
        self.posts += 1
        self.arrived.setdefault(request.headers.get("Idempotency-Key", ""), at)
        return web.Response(status=204)

    async def start(self) -> None:
        """Listens on 127.0.0.1."""
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stops listening."""
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` made: the cameras and the account they are bound to."""

    devices: list[SimDevice]
    account_id: str


async def prepare(services: Services, cameras: int, webhook_url: str) -> Prepared:
    """Imports ``cameras`` simulated cameras, binds them all to a new account, registers the webhook
    and renders the broker's accounts (reloading the broker when it runs)."""
    devices = new_fleet(cameras)
    rows = (
        (
            line,
            {
                "serial": d.serial,
                "verification_code": d.code,
                "model": d.model,
                "broker_secret": d.broker_secret,
            },
        )
        for line, d in enumerate(devices, start=2)
    )
    report = await import_registry(services.engine, services.pepper, services.clock, rows)
    if report.rejected:
        raise RuntimeError(f"registry import rejected {len(report.rejected)} rows: {report.rejected[:3]}")
    account = await services.accounts.create_confirmed(
        SignUp(
            f"bench-{os.getpid()}-{time.time_ns()}@camgate.local",
            "camgate bench password",
            birth_date=date(1990, 1, 1),
            region=REGION,
        ),
        actor="ops:bench",
    )
    for device in devices:
        await services.devices.bind(
            account.id, device.serial, device.code, name=f"Bench {device.serial[-4:]}", address="bench"
        )
    await services.push.add_target(account.id, "webhook", webhook_url)
    await sync_broker(services.engine, services.settings.broker)
    return Prepared(devices, account.id)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float = 0.2
) -> bool:
    """Polls the async ``condition`` until it is true; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await condition():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every_s)
