"""Reconciliation of one region's object store with the records naming its objects.

One pass walks the store's listing under ``acct/`` (key order, a page at a time) beside the region's
record keys read from the database in the same order (``events.snapshot_key``, ``events.thumbnail_key``,
``clips.key``, streamed and sorted by the database: no key index is needed, and neither side is held in
memory), like a merge join:

- an object no record names is an **orphan** (ingest crashed between writing it and committing its
  record, or a record was deleted while its object could not be): deleted once older than
  ``sweep.orphan_grace_s``, because ingest writes objects before it commits the record naming them.
  Just before deleting, a batch is looked up again, so a record committed meanwhile saves its object,
  and so does a clip upload still receiving (its re-assembly may have found the object and be about to
  commit the row naming it).
  Keys under ``acct/`` outside the media layout are reported and left alone.
- a record whose object is gone cannot be shown: once a HEAD confirms the object is missing, the record
  is removed (with its other object, if any), unless a sweeper holds it.
- leftovers of writes that never finished (``ObjectStore.clean_incomplete``) older than the grace go.

A ``job_leases`` row (``reconcile:<region>``) keeps two instances from reconciling one region at once; it
is renewed as the pass goes and runs out by itself if the instance dies. A dry run takes no lease and
changes nothing.
"""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, Table, delete, literal_column, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import metrics
from gateway.adapters.db.dialect import insert_ignore
from gateway.adapters.db.tables import clips, events, job_leases, push_deliveries, push_outbox
from gateway.config import SweepSettings
from gateway.ports import Clock
from gateway.services import clip_staging
from gateway.services.sweep_report import ReconcileReport
from storage import InvalidKey, ObjectInfo, ObjectStore, StorageError
from storage.keys import MediaKey, validate_key

MEDIA_PREFIX = "acct/"
BATCH = 1000  # orphans or missing records handled at a time; the lease is renewed as often
_TABLES = {events.name: events, clips.name: clips}


@dataclass(frozen=True)
class _Ref:
    key: str
    table: str
    id: str


async def acquire_lease(
    engine: AsyncEngine, name: str, holder: str, now: datetime, ttl: timedelta
) -> str | None:
    """Takes the job lease ``name`` for ``holder``; returns None when taken, else who holds it."""
    async with engine.begin() as conn:
        values = {"name": name, "holder": holder, "expires_at": now + ttl}
        if await insert_ignore(conn, job_leases, values, ("name",)):
            return None
        # An expired lease is taken over; the condition is re-checked under the row lock, so of two
        # instances racing for it one wins.
        taken = await conn.execute(
            update(job_leases)
            .where(job_leases.c.name == name, job_leases.c.expires_at < now)
            .values(holder=holder, expires_at=now + ttl)
        )
        if taken.rowcount == 1:
            return None
        return str(await conn.scalar(select(job_leases.c.holder).where(job_leases.c.name == name)))


async def renew_lease(engine: AsyncEngine, name: str, holder: str, until: datetime) -> bool:
    """Extends the lease while ``holder`` still has it; False when it was lost (ran out, taken over)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(job_leases)
            .where(job_leases.c.name == name, job_leases.c.holder == holder)
            .values(expires_at=until)
        )
    return result.rowcount == 1


async def release_lease(engine: AsyncEngine, name: str, holder: str) -> None:
    """Gives the lease up (if ``holder`` still has it)."""
    async with engine.begin() as conn:
        await conn.execute(delete(job_leases).where(job_leases.c.name == name, job_leases.c.holder == holder))


async def delete_event_children(conn: AsyncConnection, event_ids: Iterable[str]) -> None:
    """Deletes the push outbox rows of deleted events: PostgreSQL cascades, but SQLite may run without
    foreign keys."""
    ids = list(event_ids)
    outbox = select(push_outbox.c.id).where(push_outbox.c.event_id.in_(ids))
    await conn.execute(delete(push_deliveries).where(push_deliveries.c.outbox_id.in_(outbox)))
    await conn.execute(delete(push_outbox).where(push_outbox.c.event_id.in_(ids)))


def _record_keys(region: str, postgres: bool) -> Select[tuple[str, str, str]]:
    parts = [
        select(
            col.label("key"), literal_column(f"'{table.name}'").label("tbl"), table.c.id.label("id")
        ).where(table.c.region == region, col != "")  # "": an event kept without its media
        for table, col in (
            (events, events.c.snapshot_key),
            (events, events.c.thumbnail_key),
            (clips, clips.c.key),
        )
    ]
    keys = union_all(*parts).subquery()
    # Byte order, as S3 and the local store list keys (PostgreSQL's default collation is not).
    order = keys.c.key.collate("C") if postgres else keys.c.key
    return select(keys.c.key, keys.c.tbl, keys.c.id).order_by(order)


class Reconciler:
    """One reconciliation pass over one region's store."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: ObjectStore,
        region: str,
        settings: SweepSettings,
        clock: Clock,
        instance: str,
    ) -> None:
        self._db = engine
        self._store = store
        self._settings = settings
        self._clock = clock
        self._lease_name = f"reconcile:{region}"
        self._holder = f"{instance}/{secrets.token_hex(6)}"
        self._orphans: list[ObjectInfo] = []
        self._missing: list[_Ref] = []
        self.report = ReconcileReport(region)

    async def run(self, *, dry_run: bool, progress: Callable[[int], None] | None) -> ReconcileReport:
        """Walks the store and the records once; see the module docstring."""
        started = time.monotonic()
        self.report.dry_run = dry_run
        self._now = self._clock.now()
        self._cutoff = self._now - timedelta(seconds=self._settings.orphan_grace_s)
        lease = timedelta(seconds=self._settings.lease_s)
        if not dry_run:
            holder = await acquire_lease(self._db, self._lease_name, self._holder, self._now, lease)
            if holder is not None:
                self.report.busy = holder.rsplit("/", 1)[0]
                return self.report
        try:
            await self._walk(progress)
            if self.report.stopped is None:
                self.report.stale = await self._store.clean_incomplete(self._cutoff, dry_run=dry_run)
        finally:
            if not dry_run:
                await release_lease(self._db, self._lease_name, self._holder)
        if not dry_run:
            metrics.RECONCILED.labels("orphan_objects").inc(self.report.orphans)
            metrics.RECONCILED.labels("records_without_object").inc(self.report.missing)
            metrics.RECONCILED.labels("stale_uploads").inc(self.report.stale)
        self.report.elapsed_s = time.monotonic() - started
        return self.report

    async def _walk(self, progress: Callable[[int], None] | None) -> None:
        postgres = self._db.dialect.name == "postgresql"
        async with self._db.connect() as conn:
            result = await conn.stream(_record_keys(self.report.region, postgres))
            refs = _refs(result)
            ref = await anext(refs, None)
            async for info in self._store.list(MEDIA_PREFIX):
                self.report.listed += 1
                while ref is not None and ref.key < info.key:  # named by a record, not in the store
                    await self._add_missing(ref)
                    ref = await anext(refs, None)
                if ref is not None and ref.key == info.key:
                    while ref is not None and ref.key == info.key:
                        ref = await anext(refs, None)
                else:
                    await self._add_orphan(info)
                if self.report.listed % BATCH == 0:
                    if progress is not None:
                        progress(BATCH)
                    if not await self._renew():
                        return
            while ref is not None:
                await self._add_missing(ref)
                ref = await anext(refs, None)
        await self._flush_orphans()
        await self._flush_missing()
        if progress is not None:
            progress(self.report.listed % BATCH)

    async def _renew(self) -> bool:
        if self.report.dry_run:
            return True
        until = self._clock.now() + timedelta(seconds=self._settings.lease_s)
        if await renew_lease(self._db, self._lease_name, self._holder, until):
            return True
        self.report.stopped = "the reconciliation lease was lost (another instance took over)"
        return False

    # --- objects without records ------------------------------------------------------------------

    async def _add_orphan(self, info: ObjectInfo) -> None:
        try:
            MediaKey.parse(info.key)
        except InvalidKey:
            self.report.unparseable += 1
            self.report.sample("unparseable", info.key)
            return
        if info.last_modified > self._cutoff:  # its record may be on its way
            self.report.recent += 1
            return
        self._orphans.append(info)
        if len(self._orphans) >= BATCH:
            await self._flush_orphans()

    async def _flush_orphans(self) -> None:
        batch, self._orphans = self._orphans, []
        if not batch:
            return
        named = await self._still_named([o.key for o in batch])
        batch = [o for o in batch if o.key not in named]
        failed: frozenset[str] = frozenset()
        if batch and not self.report.dry_run:
            try:
                result = await self._store.delete_many([o.key for o in batch])
                failed = result.failed_keys
            except StorageError:
                failed = frozenset(o.key for o in batch)
        for orphan in batch:
            if orphan.key in failed:
                self.report.failures += 1
                continue
            self.report.orphans += 1
            self.report.orphan_bytes += orphan.size
            self.report.sample("orphans", orphan.key)

    async def _still_named(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` a record names now (records committed since the pass began), or will: the
        objects of clips still being received, whose assembly commits its row later."""
        query = union_all(
            select(events.c.snapshot_key.label("key")).where(events.c.snapshot_key.in_(keys)),
            select(events.c.thumbnail_key).where(events.c.thumbnail_key.in_(keys)),
            select(clips.c.key).where(clips.c.key.in_(keys)),
        )
        async with self._db.connect() as conn:
            # Uploads first: an assembly deletes its upload and inserts its row in one commit, so a
            # clip's key missed here because that commit came after it is seen by the query after.
            receiving = await clip_staging.receiving_keys(conn, keys)
            return receiving | set((await conn.execute(query)).scalars())

    # --- records without objects ------------------------------------------------------------------

    async def _add_missing(self, ref: _Ref) -> None:
        self._missing.append(ref)
        if len(self._missing) >= BATCH:
            await self._flush_missing()

    async def _flush_missing(self) -> None:
        batch, self._missing = self._missing, []
        if not batch:
            return
        # Confirmed one by one: the listing is older than the records read, and a miss is rare.
        found = await asyncio.gather(*(self._store.head(ref.key) for ref in batch if _plausible(ref.key)))
        present = {info.key for info in found if info is not None}
        gone = [ref for ref in batch if ref.key not in present]
        for name, table in _TABLES.items():
            ids = list(dict.fromkeys(ref.id for ref in gone if ref.table == name))
            if ids:
                await self._remove_records(table, ids, [ref.key for ref in gone if ref.table == name])

    async def _remove_records(self, table: Table, ids: list[str], keys: list[str]) -> None:
        for key in keys:
            self.report.sample("missing", key)
        if self.report.dry_run:
            self.report.missing += len(ids)
            return
        key_columns = [events.c.snapshot_key, events.c.thumbnail_key] if table is events else [clips.c.key]
        async with self._db.begin() as conn:
            # A record a sweeper holds is on its way out already: leave it to that sweeper.
            removed = (
                await conn.execute(
                    delete(table)
                    .where(
                        table.c.id.in_(ids),
                        or_(table.c.claimed_until.is_(None), table.c.claimed_until < self._clock.now()),
                    )
                    .returning(table.c.id, *key_columns)
                )
            ).all()
            if table is events and removed:
                await delete_event_children(conn, [r[0] for r in removed])
        self.report.missing += len(removed)
        # What the record named and is still there goes too (an event whose thumbnail alone is lost).
        leftovers = [k for r in removed for k in r[1:] if k and _plausible(k)]
        if leftovers:
            try:
                result = await self._store.delete_many(leftovers)
                self.report.failures += len(result.failed_keys)
            except StorageError:
                self.report.failures += len(leftovers)


async def _refs(result: AsyncIterator[Row[Any]]) -> AsyncIterator[_Ref]:
    async for row in result:
        yield _Ref(row.key, row.tbl, row.id)


def _plausible(key: str) -> bool:
    """Whether the store could hold ``key`` at all (it refuses invalid keys before any I/O)."""
    try:
        validate_key(key)
    except InvalidKey:
        return False
    return True
