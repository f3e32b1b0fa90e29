"""The owner's view of alert events: list with filters and a cursor, detail, media, deletion."""

import base64
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.adapters.db.tables import events
from gateway.errors import InvalidRequest, NotFound, Unavailable
from gateway.ports import Clock
from gateway.services import audit
from storage import StoreRouter


@dataclass(frozen=True)
class Event:
    id: str
    device_id: str
    kind: str
    captured_at: datetime
    received_at: datetime
    width: int
    height: int
    snapshot_bytes: int
    region: str
    snapshot_key: str
    thumbnail_key: str


@dataclass(frozen=True)
class EventFilter:
    device_id: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def encode_cursor(captured_at: datetime, row_id: str) -> str:
    """An opaque page cursor for lists ordered by capture time, then id (events, clips)."""
    return base64.urlsafe_b64encode(f"{captured_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The capture time and id an ``encode_cursor`` cursor names; InvalidRequest when it is not one."""
    try:
        at, _, event_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), event_id
    except ValueError:
        raise InvalidRequest("invalid_cursor", "cursor must be the next_cursor of a previous page") from None


def _event(row: object) -> Event:
    return Event(**{name: getattr(row, name) for name in Event.__dataclass_fields__})


class EventService:
    """Events are always read through their owner."""

    def __init__(self, engine: AsyncEngine, stores: StoreRouter, clock: Clock) -> None:
        self._db = engine
        self._stores = stores
        self._clock = clock

    async def page(
        self, account_id: str, flt: EventFilter, *, limit: int, cursor: str | None
    ) -> tuple[list[Event], str | None]:
        """Newest first; returns the page and the cursor of the next one."""
        query = select(events).where(events.c.account_id == account_id)
        if flt.device_id is not None:
            query = query.where(events.c.device_id == flt.device_id)
        if flt.kind is not None:
            query = query.where(events.c.kind == flt.kind)
        if flt.since is not None:
            query = query.where(events.c.captured_at >= flt.since)
        if flt.until is not None:
            query = query.where(events.c.captured_at < flt.until)
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            query = query.where(
                or_(events.c.captured_at < at, and_(events.c.captured_at == at, events.c.id < last_id))
            )
        query = query.order_by(events.c.captured_at.desc(), events.c.id.desc()).limit(limit + 1)
        async with self._db.connect() as conn:
            rows = [_event(r) for r in await conn.execute(query)]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].captured_at, rows[-1].id) if more else None

    async def get(self, account_id: str, event_id: str) -> Event:
        """One of the account's events."""
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    select(events).where(events.c.id == event_id, events.c.account_id == account_id)
                )
            ).first()
        if row is None:
            raise NotFound("event_not_found", "no such event")
        return _event(row)

    async def media(
        self, account_id: str, event_id: str, which: str, ttl_s: int
    ) -> tuple[str | None, bytes | None]:
        """A short-lived URL of the snapshot or thumbnail, or its bytes when the store has no URLs."""
        event = await self.get(account_id, event_id)
        key = event.snapshot_key if which == "snapshot" else event.thumbnail_key
        store = self._stores.for_region(event.region)
        url = await store.presigned_get_url(key, ttl_s)
        if url is not None:
            return url, None
        return None, await store.get(key)

    async def delete(self, account_id: str, event_id: str, *, address: str) -> None:
        """Deletes an event with its objects (every version)."""
        event = await self.get(account_id, event_id)
        report = await self._stores.for_region(event.region).delete_many(
            [event.snapshot_key, event.thumbnail_key]
        )
        if not report.ok:
            raise Unavailable(
                "delete_incomplete", "the media could not be deleted yet; try again", retry_after=30
            )
        async with self._db.begin() as conn:
            await conn.execute(
                delete(events).where(events.c.id == event_id, events.c.account_id == account_id)
            )
            await audit.record(
                conn,
                account_id=account_id,
                actor=f"account:{account_id}",
                action="event.deleted",
                target_type="event",
                target_id=event_id,
                at=self._clock.now(),
                address=address,
            )
