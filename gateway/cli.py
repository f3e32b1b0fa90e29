"""The ``camgate`` command: the service, and the ops tasks that go with it."""

import argparse
import asyncio
import csv
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TextIO

import uvloop
from aiohttp import web
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import or_, select

from gateway.adapters.broker_auth import hash_gateway_password
from gateway.adapters.db.tables import accounts, devices
from gateway.bootstrap import Services, build
from gateway.config import Settings, load_settings
from gateway.domain.registry import COLUMNS
from gateway.errors import CamgateError, ConfigError
from gateway.services.broker_sync import sync_broker
from gateway.services.registry import ImportReport, import_registry
from gateway.services.sweep import retention_classes
from gateway.services.sweep_report import ReconcileReport, SweepReport, format_bytes
from storage import S3Store, StorageError
from storage.lifecycle import lifecycle_rules, merge_rules

console = Console(stderr=True)
log = logging.getLogger("camgate")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``camgate`` console command."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        console.print(f"[red]camgate: {exc}[/red]")
        sys.exit(2)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(args.func(settings, args))
    except CamgateError as exc:
        console.print(f"[red]camgate: {exc}[/red]")
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camgate",
        description="camgate: cloud gateway for network cameras. Settings come from --config and CAMGATE_* "
        "environment variables (see README, 'Configuration').",
    )
    parser.add_argument("--config", type=Path, help="TOML settings file")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the gateway (HTTP API and background jobs)")
    p.set_defaults(func=serve)

    p = sub.add_parser(
        "demo", help="run on embedded defaults with a simulated fleet (the README's run command)"
    )
    p.add_argument("--cameras", type=int, default=5, help="size of the simulated fleet (default 5)")
    p.add_argument(
        "--day-seconds",
        type=int,
        default=30,
        help="length of a plan day in seconds, so the trial and its clips' retention pass within minutes"
        " (default 30; 86400 for real days)",
    )
    p.set_defaults(func=demo)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    p = db.add_parser("upgrade", help="apply pending migrations (serve does this too)")
    p.set_defaults(func=db_upgrade)

    reg = sub.add_parser("registry", help="factory registry").add_subparsers(
        dest="registry_command", required=True
    )
    p = reg.add_parser(
        "import",
        help="import a factory registry CSV",
        description=f"Imports a CSV with the header {','.join(COLUMNS)}. Invalid rows and serials already "
        "registered are rejected and listed; the rest are stored with their code and secret hashed. "
        "Exit status 1 when any row was rejected.",
    )
    p.add_argument("file", type=Path, help="registry CSV ('-' for standard input)")
    p.add_argument("--dry-run", action="store_true", help="validate and report, store nothing")
    p.add_argument("--batch-size", type=int, default=500, help="rows per transaction (default 500)")
    p.set_defaults(func=registry_import)

    brk = sub.add_parser("broker", help="broker accounts").add_subparsers(
        dest="broker_command", required=True
    )
    p = brk.add_parser(
        "sync",
        help="rewrite the broker's password and ACL files from the registry and reload it",
        description="Renders broker.password_file and broker.acl_file from the device registry and the "
        "configured gateway accounts, then signals the broker (broker.pid_file). registry import does this "
        "by itself when broker.password_file is set.",
    )
    p.set_defaults(func=broker_sync)
    p = brk.add_parser(
        "hash-password", help="print the $7$ hash of a gateway password read from standard input"
    )
    p.set_defaults(func=broker_hash_password)

    acct = sub.add_parser("account", help="account look-up").add_subparsers(
        dest="account_command", required=True
    )
    p = acct.add_parser("show", help="show an account by id, e-mail or phone (no secrets)")
    p.add_argument("who")
    p.set_defaults(func=account_show)

    dev = sub.add_parser("device", help="device look-up").add_subparsers(dest="device_command", required=True)
    p = dev.add_parser("show", help="show a device by serial or id (no secrets)")
    p.add_argument("serial")
    p.set_defaults(func=device_show)

    p = sub.add_parser(
        "sweep",
        help="delete expired snapshots and clips (object stores and database)",
        description="Deletes every snapshot, thumbnail and clip whose retention has run out: the objects "
        "(every version and delete marker in a versioned bucket), then their records, a batch at a time, and "
        "prints objects and bytes per account. Safe beside the service's periodic sweep and on several hosts "
        "at once; an interrupted sweep is resumed by the next one. Exit status 1 when objects could not be "
        "deleted (their records are kept and tried again later). See docs/retention.md.",
    )
    p.add_argument("--dry-run", action="store_true", help="report what would be deleted; change nothing")
    p.add_argument("--batch-size", type=int, help="records per batch (default: sweep.batch_size)")
    p.add_argument(
        "--reconcile",
        action="store_true",
        help="then reconcile each store with the database: objects without records, records without "
        "objects, leftovers of unfinished uploads",
    )
    p.add_argument("--region", help="only this region (default: all)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on standard output")
    p.set_defaults(func=sweep)

    stg = sub.add_parser("storage", help="object stores").add_subparsers(
        dest="storage_command", required=True
    )
    p = stg.add_parser(
        "lifecycle",
        help="install lifecycle rules generated from the plan catalogue (S3 stores)",
        description="Prints the bucket lifecycle rules for the catalogue's retention classes (objects are "
        "tagged retention-days=<n>; each class expires n + 2 days after writing, as a backstop to the sweep) "
        "and installs them on each S3 region's bucket, keeping rules that are not camgate's. Local stores "
        "have no lifecycle rules: only camgate's sweep deletes there.",
    )
    p.add_argument("--dry-run", action="store_true", help="print the rules; install nothing")
    p.add_argument("--region", help="only this region (default: all)")
    p.set_defaults(func=storage_lifecycle)
    return parser


Command = Callable[[Settings, argparse.Namespace], Awaitable[int]]


async def _with_services(settings: Settings, work: Callable[[Services], Awaitable[int]]) -> int:
    async with AsyncExitStack() as stack:
        return await work(await build(settings, stack))


async def db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    """``camgate db upgrade``."""

    async def work(_services: Services) -> int:
        console.print("schema is up to date")
        return 0

    return await _with_services(settings, work)


def _csv_rows(handle: TextIO) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(handle)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise CamgateError(f"the CSV header lacks {', '.join(missing)} (expected: {','.join(COLUMNS)})")
    for row in reader:
        yield reader.line_num, {k: v or "" for k, v in row.items() if k is not None}


async def registry_import(settings: Settings, args: argparse.Namespace) -> int:
    """``camgate registry import FILE``."""

    async def work(services: Services) -> int:
        handle = sys.stdin if str(args.file) == "-" else args.file.open(newline="")
        with handle:
            rows = list(_csv_rows(handle))
        with Progress(
            TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
        ) as progress:
            task = progress.add_task("import", total=len(rows))
            report = await import_registry(
                services.engine,
                services.pepper,
                services.clock,
                rows,
                batch_size=args.batch_size,
                dry_run=args.dry_run,
                progress=lambda n: progress.advance(task, n),
            )
        _print_report(report, dry_run=args.dry_run)
        if report.imported and not args.dry_run:
            synced = await sync_broker(services.engine, settings.broker)
            if synced is not None:
                console.print(f"broker accounts: {synced} cameras written, broker reloaded")
        return 1 if report.rejected else 0

    if args.batch_size < 1:
        raise CamgateError("--batch-size must be at least 1")
    return await _with_services(settings, work)


def _print_report(report: ImportReport, *, dry_run: bool) -> None:
    if report.rejected:
        table = Table(title="rejected rows")
        for col in ("line", "serial", "reason"):
            table.add_column(col)
        for r in report.rejected[:50]:
            table.add_row(str(r.line), r.serial, r.reason)
        console.print(table)
        if len(report.rejected) > 50:
            console.print(f"... and {len(report.rejected) - 50} more")
    verb = "would import" if dry_run else "imported"
    console.print(f"read {report.read} rows: {verb} {report.imported}, rejected {len(report.rejected)}")


async def broker_sync(settings: Settings, _args: argparse.Namespace) -> int:
    """``camgate broker sync``."""

    async def work(services: Services) -> int:
        synced = await sync_broker(services.engine, settings.broker)
        if synced is None:
            console.print("[red]broker.password_file and broker.acl_file are not configured[/red]")
            return 2
        console.print(f"broker accounts: {synced} cameras written")
        return 0

    return await _with_services(settings, work)


async def broker_hash_password(_settings: Settings, _args: argparse.Namespace) -> int:
    """``camgate broker hash-password``: the password comes on stdin, never on the command line."""
    password = sys.stdin.readline().rstrip("\n")
    if len(password) < 16:
        console.print("[red]use a random password of at least 16 characters[/red]")
        return 2
    print(hash_gateway_password(password))
    return 0


async def account_show(settings: Settings, args: argparse.Namespace) -> int:
    """``camgate account show``."""

    async def work(services: Services) -> int:
        who = args.who.strip()
        async with services.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(accounts).where(
                            or_(
                                accounts.c.id == who, accounts.c.email == who.lower(), accounts.c.phone == who
                            )
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                console.print("no such account")
                return 1
            count = len(
                (
                    await conn.execute(select(devices.c.id).where(devices.c.owner_account_id == row["id"]))
                ).all()
            )
        table = Table(show_header=False)
        for key in ("id", "email", "phone", "status", "region", "time_zone", "created_at", "last_login_at"):
            table.add_row(key, str(row[key]))
        table.add_row("devices", str(count))
        Console().print(table)
        return 0

    return await _with_services(settings, work)


async def device_show(settings: Settings, args: argparse.Namespace) -> int:
    """``camgate device show``."""

    async def work(services: Services) -> int:
        key = args.serial.strip()
        async with services.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(devices).where(or_(devices.c.serial == key.upper(), devices.c.id == key))
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            console.print("no such device")
            return 1
        table = Table(show_header=False)
        for k in ("id", "serial", "model", "owner_account_id", "name", "bound_at", "imported_at"):
            table.add_row(k, str(row[k]))
        Console().print(table)
        return 0

    return await _with_services(settings, work)


async def serve(settings: Settings, _args: argparse.Namespace) -> int:
    """``camgate serve``: runs until SIGINT or SIGTERM."""
    return await _with_services(settings, serve_until_stopped)


async def serve_until_stopped(services: Services, banner: Callable[[str], None] | None = None) -> int:
    from gateway.api.app import create_app  # the API is only needed by the commands that serve it

    runner = web.AppRunner(create_app(services), access_log=None)
    await runner.setup()
    http = services.settings.http
    site = web.TCPSite(runner, http.host, http.port)
    await site.start()
    url = f"http://{http.host}:{http.port}"
    log.info("camgate listening on %s", url)
    if banner is not None:
        banner(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    return 0


async def demo(settings: Settings, args: argparse.Namespace) -> int:
    """``camgate demo``: the whole system on embedded defaults (gateway/demo.py)."""
    from gateway.demo import run

    if args.day_seconds < 1:
        console.print("[red]--day-seconds must be at least 1[/red]")
        return 2
    return await run(settings, args.cameras, console, args.day_seconds)


def _regions(services: Services, region: str | None) -> list[str]:
    configured = sorted(services.stores.regions)
    if region is None:
        return configured
    if region not in configured:
        raise CamgateError(f"no region {region!r} is configured (regions: {', '.join(configured)})")
    return [region]


async def sweep(settings: Settings, args: argparse.Namespace) -> int:
    """``camgate sweep``."""

    async def work(services: Services) -> int:
        regions = _regions(services, args.region)
        sweeper = services.sweeper
        if args.dry_run:
            report = await sweeper.run(dry_run=True, region=args.region)
        else:
            expected = await sweeper.expired(args.region)
            with Progress(
                TextColumn("sweeping"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("objects"),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("sweep", total=expected.objects)
                report = await sweeper.run(
                    batch_size=args.batch_size,
                    region=args.region,
                    progress=lambda n: progress.advance(task, n),
                )
        reconciled = [await _reconcile(services, r, args.dry_run) for r in regions] if args.reconcile else []
        if args.json:
            print(json.dumps({"sweep": report.as_dict(), "reconcile": [r.as_dict() for r in reconciled]}))
        else:
            _print_sweep(report)
            for result in reconciled:
                console.print(result.summary())
        return 0 if report.ok and all(r.ok for r in reconciled) else 1

    if args.batch_size is not None and not 1 <= args.batch_size <= 10_000:
        raise CamgateError("--batch-size must be within 1..10000")
    return await _with_services(settings, work)


async def _reconcile(services: Services, region: str, dry_run: bool) -> ReconcileReport:
    with Progress(
        TextColumn(f"reconciling {region}: {{task.completed}} objects listed"), console=console
    ) as progress:
        task = progress.add_task("reconcile", total=None)
        return await services.sweeper.reconcile(
            region, dry_run=dry_run, progress=lambda n: progress.advance(task, n)
        )


def _print_sweep(report: SweepReport) -> None:
    if report.accounts:
        table = Table(title="would be deleted" if report.dry_run else "deleted")
        for col in ("account", "objects", "bytes", "records"):
            table.add_column(col, justify="left" if col == "account" else "right")
        ranked = sorted(report.accounts.items(), key=lambda item: (-item[1].bytes, item[0]))
        for account_id, tally in ranked[:50]:
            table.add_row(account_id, f"{tally.objects:,}", format_bytes(tally.bytes), f"{tally.records:,}")
        table.add_section()
        table.add_row(
            "total", f"{report.objects:,}", format_bytes(report.bytes), f"{report.records:,}", style="bold"
        )
        console.print(table)
        if len(ranked) > 50:
            console.print(f"... and {len(ranked) - 50} more accounts")
    console.print(report.summary())
    for key in report.failed_keys:
        console.print(f"[red]not deleted: {key}[/red]")
    for error in report.errors:
        console.print(f"[red]error: {error}[/red]")


async def storage_lifecycle(settings: Settings, args: argparse.Namespace) -> int:
    """``camgate storage lifecycle``."""
    rules = lifecycle_rules(retention_classes(settings.catalogue()))
    print(json.dumps({"Rules": rules}, indent=2))

    async def work(services: Services) -> int:
        code = 0
        for region in _regions(services, args.region):
            store = services.stores.for_region(region)
            if not isinstance(store, S3Store):
                console.print(f"region {region}: local store, no lifecycle rules; swept by camgate only")
                continue
            if args.dry_run:
                console.print(f"region {region}: would install {len(rules)} rules on bucket {store.bucket}")
                continue
            try:
                await store.put_lifecycle(merge_rules(await store.get_lifecycle(), rules))
                installed = await store.get_lifecycle()
            except StorageError as exc:
                console.print(f"[red]region {region}: bucket {store.bucket}: {exc}[/red]")
                code = 1
                continue
            console.print(
                f"region {region}: bucket {store.bucket} has {len(installed)} lifecycle rules, "
                f"{len(rules)} of them camgate's"
            )
        return code

    return await _with_services(settings, work)
