"""The retention sweep: deletes expired snapshots, thumbnails and clips from storage, then their records.

Each ``events`` and ``clips`` record carries its ``retain_until``, fixed at capture. A sweeper claims a
batch of expired records with one conditional UPDATE that sets a lease (``claimed_by`` = this run's token,
``claimed_until``), exactly like the push outbox: of two sweepers (two gateway instances, or the periodic
job and ``camgate sweep``) racing for a record, one gets it. Then it deletes the batch's objects, region by
region (``delete_many``: DeleteObjects of 1,000 keys, every version and delete marker in a versioned
bucket), and deletes the records whose objects are all gone, still under its token. Records with an
object that could not be deleted keep their row; their claim is released and they are tried again by a
later run. A sweeper that dies mid-batch leaves a lease that runs out after ``sweep.lease_s``; the next
run claims those records again and deletes their objects again, which is harmless (deleting a missing
key succeeds). Only the run whose token deletes a record counts it, so no object is counted twice.

A run works on ``LANES`` batches at once: while one waits for DeleteObjects, the others' records are
deleted and their next batches claimed, so the database work hides behind the store's (docs/retention.md,
bench/sweep.py).
"""

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import ColumnElement, Table, case, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import metrics
from gateway.adapters.db.tables import clips, events
from gateway.config import SweepSettings
from gateway.domain.plans import Catalogue
from gateway.ports import Clock
from gateway.services.reconcile import Reconciler, delete_event_children
from gateway.services.sweep_report import ReconcileReport, SweepReport
from storage import InvalidKey, StorageError, StoreRouter
from storage.keys import validate_key

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
# Batches in flight at once in one sweep. One lane leaves the store idle while the database works; on
# the bench (bench/sweep.py, 2 cores) 2 lanes reached 0.8-0.9 x raw DeleteObjects and 3 lanes 0.95-1.15.
LANES = 3
# Records whose objects failed are skipped for the rest of a run; past this many the run stops rather
# than grow the exclusion list (sent with every claim) without bound.
MAX_SKIPPED = 5000


class _Record(NamedTuple):  # a tuple: a batch makes a thousand of them
    table: Table
    id: str
    account_id: str
    region: str
    keys: tuple[str, ...]
    bytes: int


@dataclass(frozen=True)
class _Batch:
    token: str
    records: list[_Record]


def retention_classes(catalogue: Catalogue) -> list[int]:
    """Every retention in days a stored object can have under the catalogue (retired plans included)."""
    days = {p.snapshot_retention_days for p in catalogue.plans} | {
        p.video_retention_days for p in catalogue.plans if p.video
    }
    return sorted(d for d in days if d > 0)


class Sweeper:
    """Deletes what has expired (``run``) and reconciles a region's store with the records (``reconcile``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        stores: StoreRouter,
        settings: SweepSettings,
        clock: Clock,
        instance: str | None = None,
    ) -> None:
        self._db = engine
        self._stores = stores
        self._settings = settings
        self._clock = clock
        # claimed_by is 64 characters: the instance name, "/" and a 12-character token.
        self.instance = (instance or f"{socket.gethostname()}:{os.getpid()}")[:51]
        self._lease = timedelta(seconds=settings.lease_s)

    async def run(
        self,
        *,
        dry_run: bool = False,
        batch_size: int | None = None,
        region: str | None = None,
        progress: Progress | None = None,
    ) -> SweepReport:
        """Sweeps until no expired record is left (in ``region``, or everywhere); ``progress`` gets the
        number of objects deleted after each batch. A dry run claims and deletes nothing."""
        started = time.monotonic()
        if dry_run:
            report = await self.expired(region)
            if progress is not None:
                progress(report.objects)
        else:
            report = SweepReport()
            await self._sweep(report, batch_size or self._settings.batch_size, region, progress)
        report.elapsed_s = time.monotonic() - started
        return report

    async def reconcile(
        self, region: str, *, dry_run: bool = False, progress: Progress | None = None
    ) -> ReconcileReport:
        """Objects without records and records without objects in one region's store, and stale
        temporary data (docs/retention.md); one instance at a time per region."""
        reconciler = Reconciler(
            self._db, self._stores.for_region(region), region, self._settings, self._clock, self.instance
        )
        return await reconciler.run(dry_run=dry_run, progress=progress)

    async def expired(self, region: str | None = None) -> SweepReport:
        """What a sweep would delete now, per account (claimed or not)."""
        now = self._clock.now()
        report = SweepReport(dry_run=True)
        nonempty = [
            case((events.c.snapshot_key != "", 1), else_=0),
            case((events.c.thumbnail_key != "", 1), else_=0),
        ]
        queries = [
            select(
                events.c.account_id,
                func.count(),
                func.sum(nonempty[0] + nonempty[1]),
                func.sum(events.c.snapshot_bytes + events.c.thumbnail_bytes),
            ).where(*self._due(events, now, region, claimable=False)),
            select(
                clips.c.account_id,
                func.count(),
                func.sum(case((clips.c.key != "", 1), else_=0)),
                func.sum(clips.c.bytes),
            ).where(*self._due(clips, now, region, claimable=False)),
        ]
        async with self._db.connect() as conn:
            for query in queries:
                for account_id, records, objects, nbytes in await conn.execute(
                    query.group_by(query.selected_columns[0])
                ):
                    report.add(account_id, int(objects or 0), int(nbytes or 0), int(records))
        return report

    # --- the sweep loop ---------------------------------------------------------------------------

    async def _sweep(
        self, report: SweepReport, size: int, region: str | None, progress: Progress | None
    ) -> None:
        run = _Run(report, size, region, progress)
        lanes = [asyncio.create_task(self._lane(run)) for _ in range(LANES)]
        try:
            await asyncio.gather(*lanes)
        except BaseException:
            # A crash (or a cancelled job) leaves its claims to run out: the next run takes them again.
            for lane in lanes:
                lane.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            raise

    async def _lane(self, run: "_Run") -> None:
        """Claims, deletes the objects, deletes the records, until nothing is left to claim."""
        async with self._db.begin() as conn:
            batch = await self._claim(conn, run)
        while batch.records:
            failed_keys = await self._remove_objects(batch.records, run)
            # One transaction settles this batch and claims the next: one commit (and, on SQLite, one
            # turn at the write lock) per batch instead of two.
            async with self._db.begin() as conn:
                tally = await self._settle(conn, batch, failed_keys, run)
                following = await self._claim(conn, run) if self._going_on(run) else _Batch("", [])
            tally.count(run)
            batch = following

    def _going_on(self, run: "_Run") -> bool:
        if sum(map(len, run.skipped.values())) > MAX_SKIPPED:
            run.report.stopped = f"more than {MAX_SKIPPED} records could not be deleted"
        return run.report.stopped is None

    def _due(
        self, table: Table, now: datetime, region: str | None, *, claimable: bool = True
    ) -> list[ColumnElement[bool]]:
        due: list[ColumnElement[bool]] = [table.c.retain_until <= now]
        if claimable:
            due.append(or_(table.c.claimed_until.is_(None), table.c.claimed_until < now))
        if region is not None:
            due.append(table.c.region == region)
        return due

    async def _claim(self, conn: AsyncConnection, run: "_Run") -> _Batch:
        now = self._clock.now()
        token = f"{self.instance}/{secrets.token_hex(6)}"
        records: list[_Record] = []
        for table in (events, clips):
            if len(records) < run.size:
                records += await self._claim_from(conn, table, token, now, run.size - len(records), run)
        return _Batch(token, records)

    async def _claim_from(
        self, conn: AsyncConnection, table: Table, token: str, now: datetime, limit: int, run: "_Run"
    ) -> list[_Record]:
        due = self._due(table, now, run.region)
        candidates = select(table.c.id).where(*due).order_by(table.c.retain_until).limit(limit)
        if run.skipped[table.name]:
            candidates = candidates.where(table.c.id.not_in(run.skipped[table.name]))
        if run.down:
            candidates = candidates.where(table.c.region.not_in(run.down))
        if conn.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)  # instances skip each other's rows
        # A CTE, not IN (subquery): PostgreSQL may re-run a subquery, and with SKIP LOCKED each re-run
        # takes further rows. The UPDATE re-checks `due`, so of two racing sweepers one gets a row.
        chosen = candidates.cte(f"expired_{table.name}")
        if table is events:
            returned = [
                events.c.snapshot_key,
                events.c.thumbnail_key,
                (events.c.snapshot_bytes + events.c.thumbnail_bytes).label("bytes"),
            ]
        else:
            returned = [clips.c.key, clips.c.bytes]
        claim = (
            update(table)
            .where(table.c.id.in_(select(chosen.c.id)), *due)
            .values(claimed_by=token, claimed_until=now + self._lease)
            .returning(table.c.id, table.c.account_id, table.c.region, *returned)
        )
        records = []
        for row in await conn.execute(claim):
            keys = tuple(k for k in row[3:-1] if k)
            records.append(_Record(table, row[0], row[1], row[2], keys, int(row[-1] or 0)))
        # Another lane may have skipped (and released) a record while this claim waited for the database:
        # the statement was built before. Give such records straight back, so each is tried once a run.
        skipped = [r.id for r in records if r.id in run.skipped[table.name]]
        if skipped:
            await conn.execute(
                update(table)
                .where(table.c.id.in_(skipped), table.c.claimed_by == token)
                .values(claimed_by=None, claimed_until=None)
            )
        return [r for r in records if r.id not in run.skipped[table.name]]

    async def _remove_objects(self, records: Sequence[_Record], run: "_Run") -> frozenset[str]:
        """Deletes the batch's objects, each region's store at once; returns the keys that failed."""
        by_region: dict[str, list[str]] = {}
        for record in records:
            by_region.setdefault(record.region, []).extend(record.keys)
        failed = await asyncio.gather(*(self._delete_in(r, keys, run) for r, keys in by_region.items()))
        return frozenset().union(*failed)

    async def _delete_in(self, region: str, keys: list[str], run: "_Run") -> frozenset[str]:
        try:
            store = self._stores.for_region(region)
            try:
                result = await store.delete_many(keys)
            except InvalidKey:  # a record naming a key no store accepts: it has no object to delete
                result = await store.delete_many(_valid(keys))
        except StorageError as exc:
            # The store is down or refuses the request as a whole: its region sits the rest of this run out.
            log.warning("sweep: deleting %d objects in region %s failed: %s", len(keys), region, exc)
            run.down.add(region)
            run.report.note_failure(keys, f"{region}: {exc}")
            return frozenset(keys)
        if not result.ok:
            run.report.note_failure(sorted(result.failed_keys), f"{region}: {result.failed[0].code}")
        return result.failed_keys

    async def _settle(
        self, conn: AsyncConnection, batch: _Batch, failed_keys: frozenset[str], run: "_Run"
    ) -> "_Tally":
        """Deletes the records whose objects are gone (under our token) and releases the others."""
        done = [r for r in batch.records if failed_keys.isdisjoint(r.keys)]
        kept = [r for r in batch.records if not failed_keys.isdisjoint(r.keys)]
        for record in kept:
            run.skipped[record.table.name].add(record.id)  # before the release: no re-claim in this run
        deleted: set[tuple[str, str]] = set()
        for table in (events, clips):
            ids = [r.id for r in done if r.table is table]
            if ids:
                if run.cascades is None:
                    run.cascades = await foreign_keys_enforced(conn)
                gone = await _delete_records(conn, table, ids, batch.token, run.cascades)
                deleted |= {(table.name, i) for i in gone}
            again = [r.id for r in kept if r.table is table]
            if again:
                await conn.execute(
                    update(table)
                    .where(table.c.id.in_(again), table.c.claimed_by == batch.token)
                    .values(claimed_by=None, claimed_until=None)
                )
        # Else our lease ran out meanwhile and another run deleted (and counts) the record.
        return _Tally([r for r in done if (r.table.name, r.id) in deleted], len(kept))


@dataclass(frozen=True)
class _Tally:
    """What a committed batch deleted and kept."""

    deleted: list[_Record]
    kept: int

    def count(self, run: "_Run") -> None:
        """Adds the batch to the report, the metrics and the progress."""
        objects = {events.name: 0, clips.name: 0}
        accounts: dict[str, list[int]] = {}
        for record in self.deleted:
            tally = accounts.setdefault(record.account_id, [0, 0, 0])
            tally[0] += len(record.keys)
            tally[1] += record.bytes
            tally[2] += 1
            objects[record.table.name] += len(record.keys)
        for account_id, (count, nbytes, records) in accounts.items():
            run.report.add(account_id, count, nbytes, records)
        for name, count in objects.items():
            metrics.SWEPT_OBJECTS.labels(name).inc(count)
        metrics.SWEPT_BYTES.inc(sum(r.bytes for r in self.deleted))
        run.report.failed_records += self.kept
        metrics.SWEEP_FAILURES.inc(self.kept)
        if run.progress is not None:
            run.progress(sum(objects.values()))


@dataclass
class _Run:
    """What one sweep carries from batch to batch."""

    report: SweepReport
    size: int
    region: str | None
    progress: Progress | None
    # Records whose objects failed, skipped for the rest of the run (a later run tries them again).
    skipped: dict[str, set[str]] = field(default_factory=lambda: {events.name: set(), clips.name: set()})
    down: set[str] = field(default_factory=set)  # regions whose store failed a whole request
    cascades: bool | None = None  # whether deleting an event deletes its outbox rows (asked once)


async def _delete_records(
    conn: AsyncConnection, table: Table, ids: list[str], token: str, cascades: bool
) -> set[str]:
    """Deletes the records still claimed under ``token``; returns their ids."""
    result = await conn.execute(
        delete(table).where(table.c.id.in_(ids), table.c.claimed_by == token).returning(table.c.id)
    )
    deleted = set(result.scalars())
    if table is events and deleted and not cascades:
        await delete_event_children(conn, deleted)
    return deleted


async def foreign_keys_enforced(conn: AsyncConnection) -> bool:
    """Whether the database deletes an event's push outbox rows with it (ON DELETE CASCADE): always on
    PostgreSQL, on SQLite only where the connection enabled foreign keys (camgate's engine does)."""
    if conn.dialect.name != "sqlite":
        return True
    return bool(await conn.scalar(text("PRAGMA foreign_keys")))


def _valid(keys: Iterable[str]) -> list[str]:
    """Keys the store could ever have written; a record naming another has no object to delete."""
    out = []
    for key in keys:
        try:
            out.append(validate_key(key))
        except InvalidKey:
            log.warning("sweep: record names an invalid key %r; deleting the record only", key)
    return out
