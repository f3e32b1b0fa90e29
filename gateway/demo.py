"""``camgate demo``: the whole system on embedded defaults, for a first look.

A private Mosquitto with the project's policy, the gateway (SQLite, media in a local folder), a
simulated factory whose cameras are bound to a demo account, and a simulated fleet publishing alerts
and the clips that follow them. One camera is on the trial plan, so its clips are stored; the others
are on the free plan, so theirs are dropped (counted). Plan days are short in the demo (``day_seconds``,
30 s by default), so the trial's clips visibly expire and the in-service sweep removes them within
minutes. Everything lives in ``data_dir`` (./var): delete it to start over.
"""

import asyncio
import csv
import logging
import secrets
from contextlib import AsyncExitStack
from datetime import date, timedelta
from pathlib import Path

from prometheus_client import REGISTRY
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy import func, select

from gateway.adapters.broker_auth import hash_gateway_password
from gateway.adapters.db.tables import clips, dead_letters, events
from gateway.bootstrap import Services, build
from gateway.config import BrokerSettings, GatewayAccount, Settings
from gateway.devbroker import DevBroker, free_port
from gateway.domain.plans import Billing
from gateway.errors import Conflict
from gateway.services.accounts import SignUp
from gateway.services.broker_sync import sync_broker
from gateway.services.registry import import_registry

log = logging.getLogger(__name__)
DEMO_ACCOUNT = "demo@camgate.local"
FREE_CAMERAS = 2  # left unbound, for the README's walk-through
DEMO_PASSWORD = "camgate demo password"  # noqa: S105 - a local demo account, printed and documented
STORED_CLIPS = "camgate_clip_parts_total"
DROPPED_CLIPS = "camgate_clips_dropped_total"
SWEPT = "camgate_swept_objects_total"
DEMO_DAY_S = 30  # a plan "day" in the demo: the 14-day trial lasts 7 minutes, its clips 3.5 minutes


def demo_settings(
    settings: Settings, broker: DevBroker, gateway_password: str, day_seconds: int = DEMO_DAY_S
) -> Settings:
    """The settings with the private broker wired in, plan days ``day_seconds`` long and a sweep that
    runs often enough to be seen."""
    mqtt = settings.mqtt.model_copy(
        update={
            "enabled": True,
            "host": "127.0.0.1",
            "port": broker.port,
            "password": SecretStr(gateway_password),
        }
    )
    accounts = BrokerSettings(
        password_file=broker.password_file,
        acl_file=broker.acl_file,
        pid_file=broker.pid_file,
        gateways=[
            GatewayAccount(username=mqtt.username, password_hash=hash_gateway_password(gateway_password))
        ],
    )
    plans = {**settings.plans, "day_seconds": day_seconds}
    sweep = settings.sweep.model_copy(update={"interval_s": min(settings.sweep.interval_s, day_seconds / 2)})
    return settings.model_copy(update={"mqtt": mqtt, "broker": accounts, "plans": plans, "sweep": sweep})


async def prepare(
    services: Services, fleet_dir: Path, cameras: int, console: Console
) -> list[dict[str, str]]:
    """A simulated factory run (first time only), imported and bound to the demo account."""
    from device_sim.registry import new_fleet, write_labels, write_registry

    registry = fleet_dir / "registry.csv"
    if not registry.exists():
        fleet = new_fleet(max(cameras, FREE_CAMERAS + 1))
        write_registry(fleet, registry)
        write_labels(fleet, fleet_dir / "labels.html")
    with registry.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    report = await import_registry(services.engine, services.pepper, services.clock, enumerate(rows, start=2))
    if report.imported:
        console.print(f"simulated factory: {report.imported} cameras imported from {registry}")
    try:
        account = await services.accounts.create_confirmed(
            SignUp(
                DEMO_ACCOUNT,
                DEMO_PASSWORD,
                birth_date=date(1990, 1, 1),
                region=next(iter(services.settings.regions)),
            ),
            actor="ops:demo",
        )
        bound = [
            (
                await services.devices.bind(
                    account.id,
                    row["serial"],
                    row["verification_code"],
                    name=f"Camera {row['serial'][-4:]}",
                    address="demo",
                )
            )[1]
            for row in rows[:-FREE_CAMERAS]
        ]
        console.print(f"demo account {DEMO_ACCOUNT} created; {len(bound)} cameras are bound to it")
        trial = await services.plans.purchase(account.id, bound[0].id, "trial", Billing.TRIAL)
        retention = services.plans.catalogue().trial.video_retention_days * services.plans.catalogue().day
        console.print(
            f"{bound[0].name} is on the trial plan until {trial.subscription.ends_at:%H:%M:%S} UTC;"
            f" its clips are kept {_span(retention)} after capture, then swept"
            " (the other cameras are on the free plan: their clips are dropped)"
        )
    except Conflict:
        pass  # an earlier run made it
    return rows


async def report_progress(services: Services, console: Console, every_s: float = 10.0) -> None:
    """Prints what is stored, dropped and swept, so the demo shows alerts and clips arriving and
    expiring."""
    last = ""
    while True:
        async with services.engine.connect() as conn:
            alerts, clip_count, dead = (
                await conn.execute(
                    select(
                        select(func.count()).select_from(events).scalar_subquery(),
                        select(func.count()).select_from(clips).scalar_subquery(),
                        select(func.count()).select_from(dead_letters).scalar_subquery(),
                    )
                )
            ).one()
        line = (
            f"kept: {alerts} alerts, {clip_count} clips | clips stored {_counted(STORED_CLIPS, outcome='stored')},"
            f" dropped {_counted(DROPPED_CLIPS, reason='no_video_plan')} (no video plan)"
            f" | swept {_counted(SWEPT, table='events')} snapshot objects, {_counted(SWEPT, table='clips')} clips"
            f" | dead letters {dead}"
        )
        if line != last:
            console.print(f"[dim]{services.clock.now():%H:%M:%S}[/dim] {line}", soft_wrap=True)
            last = line
        await asyncio.sleep(every_s)


def _counted(name: str, **labels: str) -> int:
    """A counter's value in this process (0 before its first increment)."""
    return int(REGISTRY.get_sample_value(name, labels) or 0)


def _span(delta: timedelta) -> str:
    minutes, seconds = divmod(int(delta.total_seconds()), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


async def run_fleet(services: Services, registry: Path, port: int, console: Console) -> None:
    """The simulated cameras, started once the gateway's session is up (so it misses nothing)."""
    from device_sim import Fleet, FleetOptions, SceneOptions, read_registry

    assert services.mqtt is not None
    await services.mqtt.connected.wait()
    devices = read_registry(registry)
    for device in devices:  # each camera's retained config: unbound ones are told not to send
        await services.alert_settings.publish_for(device.serial)
    options = FleetOptions(scene=SceneOptions(mean_gap_s=20.0))  # livelier than a real street
    async with Fleet(devices, "127.0.0.1", port, options) as fleet:
        console.print(f"simulated fleet: {fleet.online} cameras online, watching their scenes for motion")
        await asyncio.Event().wait()  # until cancelled


async def _cancel(task: "asyncio.Task[None]") -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def run(settings: Settings, cameras: int, console: Console, day_seconds: int = DEMO_DAY_S) -> int:
    """Runs until Ctrl-C."""
    from gateway.cli import serve_until_stopped

    broker = DevBroker(settings.data_dir / "broker", free_port())
    settings = demo_settings(settings, broker, secrets.token_urlsafe(24), day_seconds)
    fleet_dir = settings.data_dir / "fleet"
    async with AsyncExitStack() as stack:
        services = await build(settings, stack)
        rows = await prepare(services, fleet_dir, cameras, console)
        broker.directory.mkdir(parents=True, exist_ok=True)
        await sync_broker(services.engine, settings.broker)
        await asyncio.to_thread(broker.start)
        stack.callback(broker.stop)
        progress = asyncio.create_task(report_progress(services, console))
        stack.push_async_callback(_cancel, progress)
        fleet = asyncio.create_task(run_fleet(services, fleet_dir / "registry.csv", broker.port, console))
        stack.push_async_callback(_cancel, fleet)

        def banner(url: str) -> None:
            console.print(
                _banner(url, broker.port, fleet_dir, settings.notify.mailbox_dir, len(rows)), soft_wrap=True
            )

        return await serve_until_stopped(services, banner)


def _banner(url: str, port: int, fleet_dir: Path, mailbox: Path, cameras: int) -> str:
    return f"""
[bold green]camgate is running at {url}[/bold green]  (Ctrl-C stops it; data lives in ./var)

  demo account      {DEMO_ACCOUNT} / {DEMO_PASSWORD}   ({cameras - FREE_CAMERAS} simulated cameras bound to it)
  MQTT broker       127.0.0.1:{port}  (Mosquitto with deploy/mosquitto policy)
  API description   {url}/v1/openapi.json
  camera labels     {fleet_dir / "labels.html"}  (the last {FREE_CAMERAS} are left for you to bind)
  your inbox        {mailbox}/<your e-mail or phone>/   (one-time codes of new sign-ups land here)

Log in and list the alerts (README, 'Walk-through'):
  TOKEN=$(curl -s {url}/v1/sessions -H 'Content-Type: application/json' \\
    -d '{{"identifier":"{DEMO_ACCOUNT}","password":"{DEMO_PASSWORD}"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  curl -s {url}/v1/events -H "Authorization: Bearer $TOKEN"
"""
