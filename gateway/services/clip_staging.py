"""The clip staging tables (``clip_uploads``, ``clip_parts``): where a clip's parts wait for the rest of
their clip, what a dropped clip leaves behind (its decision, no bytes), and the clean-up of uploads that
never completed. Used by ``gateway.services.clips``; statements only, no decisions."""

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import metrics
from gateway.adapters.db.dialect import insert_ignore
from gateway.adapters.db.tables import accounts, clip_parts, clip_uploads, clips, devices
from gateway.domain.clips import ClipDrop, object_key
from gateway.services.coverage import staged_bytes
from gateway.services.ingest import record_dead_letter
from gateway.wire import ClipHeader, clip_topic
from storage.errors import InvalidKey
from storage.keys import MediaKey, MediaKind

log = logging.getLogger(__name__)

RECEIVING = "receiving"
DROPPED = "dropped"
_BATCH = 200


@dataclass(frozen=True)
class Upload:
    """A clip being received."""

    id: str
    account_id: str
    created_at: datetime  # when its first part arrived
    header: ClipHeader  # the first part's: what every later part must match


# The clip's state for one part, in one query: the camera, its stored clip, its upload in progress — in
# the camera's current binding: a clip id its previous owner used is not this owner's duplicate.
_STATE_QUERY = (
    select(
        devices.c.id,
        devices.c.bound_at,
        clips.c.id.label("stored"),
        clip_uploads.c.id.label("upload_id"),
        clip_uploads.c.account_id,
        clip_uploads.c.status,
        clip_uploads.c.header,
        clip_uploads.c.created_at,
    )
    .select_from(
        devices.outerjoin(
            clips,
            (clips.c.device_id == devices.c.id)
            & (clips.c.binding_id == devices.c.binding_id)
            & (clips.c.camera_clip_id == bindparam("clip_id")),
        ).outerjoin(
            clip_uploads,
            (clip_uploads.c.device_id == devices.c.id)
            & (clip_uploads.c.binding_id == devices.c.binding_id)
            & (clip_uploads.c.camera_clip_id == bindparam("clip_id")),
        )
    )
    .where(devices.c.serial == bindparam("serial"))
)


@dataclass(frozen=True)
class ClipState:
    """What one part finds: whether its clip is stored, and its upload in progress (and that one's status)."""

    stored: bool
    upload: Upload | None
    status: str | None
    bound_at: datetime | None = None  # when the camera's current binding began (None: unbound)


async def clip_state(conn: AsyncConnection, serial: str, clip_id: str) -> ClipState | None:
    """The state of a camera's clip ``clip_id`` in one query; None for an unknown serial."""
    row = (await conn.execute(_STATE_QUERY, {"serial": serial, "clip_id": clip_id})).first()
    if row is None:
        return None
    upload = None
    if row.upload_id is not None:
        upload = Upload(row.upload_id, row.account_id, row.created_at, ClipHeader.model_validate(row.header))
    return ClipState(row.stored is not None, upload, row.status, row.bound_at)


async def hold(conn: AsyncConnection, upload_id: str) -> bool:
    """Locks a receiving upload for this transaction; False when it is dropped or gone.

    An update, not a read: it locks the row on PostgreSQL and takes the write lock on SQLite, so parts of
    one clip stage one at a time and a drop or clean-up of the upload cannot interleave with them.
    """
    touched = await conn.execute(
        update(clip_uploads)
        .where(clip_uploads.c.id == upload_id, clip_uploads.c.status == RECEIVING)
        .values(status=RECEIVING)
    )
    return bool(touched.rowcount)


@dataclass(frozen=True)
class InProgress:
    """What is in progress before a new clip is admitted: the uploads receiving for its camera and for
    its account, and the bytes staged for the account."""

    device_uploads: int
    account_uploads: int
    account_staged_bytes: int


async def in_progress(conn: AsyncConnection, device_id: str, account_id: str) -> InProgress:
    """Locks the account's admissions for this transaction, then counts what it has in progress.

    The lock is an update of the account's row (a row lock on PostgreSQL, the write lock on SQLite):
    first parts of one account are admitted one at a time, so parallel first parts cannot all pass a
    limit that each of them reads as not reached. First parts are one per clip, so this costs little."""
    await conn.execute(update(accounts).where(accounts.c.id == account_id).values(status=accounts.c.status))
    receiving = clip_uploads.c.status == RECEIVING
    query = select(
        select(func.count()).where(receiving, clip_uploads.c.device_id == device_id).scalar_subquery(),
        select(func.count()).where(receiving, clip_uploads.c.account_id == account_id).scalar_subquery(),
        staged_bytes(account_id),
    )
    device_n, account_n, staged = (await conn.execute(query)).one()
    return InProgress(int(device_n), int(account_n), int(staged))


@dataclass(frozen=True)
class Staged:
    """After a part is staged: its upload's parts and bytes, and the bytes staged for its account."""

    parts: int
    bytes: int
    account_bytes: int


async def stage(conn: AsyncConnection, upload: Upload, part: int, data: bytes, now: datetime) -> Staged:
    """Keeps a part (a redelivered part is a no-op) and counts what is staged. A new part marks the
    upload active (``updated_at``): the clean-up times out idle uploads, not slow ones."""
    values = {"upload_id": upload.id, "part": part, "data": data}
    if await insert_ignore(conn, clip_parts, values, ("upload_id", "part")):
        await conn.execute(update(clip_uploads).where(clip_uploads.c.id == upload.id).values(updated_at=now))
    mine = clip_parts.c.upload_id == upload.id
    query = select(
        select(func.count()).where(mine).scalar_subquery(),
        select(func.coalesce(func.sum(func.length(clip_parts.c.data)), 0)).where(mine).scalar_subquery(),
        staged_bytes(upload.account_id),
    )
    count, total, account = (await conn.execute(query)).one()
    return Staged(int(count), int(total), int(account))


async def staged_parts(conn: AsyncConnection, upload_id: str) -> list[bytes]:
    """The upload's parts, in part order."""
    query = select(clip_parts.c.data).where(clip_parts.c.upload_id == upload_id).order_by(clip_parts.c.part)
    return [bytes(r.data) for r in await conn.execute(query)]


async def drop(conn: AsyncConnection, upload_id: str, reason: ClipDrop, now: datetime) -> bool:
    """Marks a receiving upload dropped and deletes its parts; False when it was not receiving (stored
    or dropped meanwhile). The row stays until the clean-up (an upload timeout from now), so late parts
    are dropped unread."""
    changed = await conn.execute(
        update(clip_uploads)
        .where(clip_uploads.c.id == upload_id, clip_uploads.c.status == RECEIVING)
        .values(status=DROPPED, reason=reason.value, updated_at=now)
    )
    await conn.execute(delete(clip_parts).where(clip_parts.c.upload_id == upload_id))
    return bool(changed.rowcount)


async def finish(conn: AsyncConnection, upload_id: str) -> None:
    """Deletes a stored clip's staging. The upload row first, like every writer here: it is the lock a
    staging part holds, so taking it before the parts' rows leaves no order to deadlock on. The parts are
    deleted explicitly because SQLite may run without cascading deletes."""
    await conn.execute(delete(clip_uploads).where(clip_uploads.c.id == upload_id))
    await conn.execute(delete(clip_parts).where(clip_parts.c.upload_id == upload_id))


async def receiving_keys(conn: AsyncConnection, keys: list[str]) -> set[str]:
    """Which of the media ``keys`` are the objects of clips still being received: an assembly may have
    stored one (or found it from a crashed attempt) and be about to commit the row naming it."""
    wanted: dict[str, set[str]] = {}
    for key in keys:
        try:
            media = MediaKey.parse(key)
        except InvalidKey:
            continue
        if media.kind is MediaKind.CLIP:
            wanted.setdefault(media.object_id, set()).add(media.device_id)
    if not wanted:
        return set()
    query = select(
        clip_uploads.c.account_id,
        clip_uploads.c.device_id,
        clip_uploads.c.camera_clip_id,
        clip_uploads.c.header,
    ).where(clip_uploads.c.status == RECEIVING, clip_uploads.c.camera_clip_id.in_(list(wanted)))
    found = set()
    for row in await conn.execute(query):
        if row.device_id in wanted[row.camera_clip_id]:
            found.add(object_key(row.account_id, row.device_id, ClipHeader.model_validate(row.header)))
    return found & set(keys)


def count_drop(serial: str, clip_id: str, reason: ClipDrop) -> None:
    """Counts and logs a clip that is not stored (once per clip)."""
    metrics.CLIPS_DROPPED.labels(reason.value).inc()
    log.info("clip %s of %s dropped: %s", clip_id, serial, reason.value)


async def abandon_stale(engine: AsyncEngine, now: datetime, cutoff: datetime, timeout_s: float) -> int:
    """Removes uploads idle since before ``cutoff`` (no new part staged): incomplete ones are
    dead-lettered (``clip_incomplete``) and counted, dropped ones forgotten. Returns how many were removed;
    safe to run on several instances at once (each upload is removed, and reported, by one).

    An upload with every part staged is never removed, however old: each of its parts was acknowledged
    but the last, whose assembly failed (a store outage), so the broker redelivers that one and it
    assembles the clip. Removing it would lose a clip the camera was told is safe."""
    staged = select(func.count()).where(clip_parts.c.upload_id == clip_uploads.c.id).scalar_subquery()
    idle = (clip_uploads.c.updated_at < cutoff) & or_(
        clip_uploads.c.status != RECEIVING, staged < clip_uploads.c.header["parts"].as_integer()
    )
    query = (
        select(clip_uploads, devices.c.serial, staged.label("staged"))
        .select_from(clip_uploads.outerjoin(devices, devices.c.id == clip_uploads.c.device_id))
        .where(idle)
        .order_by(clip_uploads.c.updated_at)
        .limit(_BATCH)
    )
    removed = 0
    while True:
        async with engine.connect() as conn:
            batch = (await conn.execute(query)).all()
        if not batch:
            return removed
        for row in batch:
            serial = row.serial or ""
            incomplete = row.status == RECEIVING
            async with engine.begin() as conn:
                # The upload first: a part staging into it holds its row, so this waits for that part,
                # and the condition is checked again after the wait: a part staged meanwhile keeps it.
                gone = bool(
                    (
                        await conn.execute(delete(clip_uploads).where(clip_uploads.c.id == row.id, idle))
                    ).rowcount
                )
                await conn.execute(delete(clip_parts).where(clip_parts.c.upload_id == row.id))
                if gone and incomplete:
                    detail = f"{row.staged} of {row.header.get('parts', '?')} parts after {timeout_s:g} s"
                    topic = clip_topic(serial, row.camera_clip_id) if serial else ""
                    await record_dead_letter(
                        conn, now, topic, serial, "clip_incomplete", detail, b"", header=row.header
                    )
            if gone and incomplete:
                count_drop(serial, row.camera_clip_id, ClipDrop.INCOMPLETE)
            removed += int(gone)
