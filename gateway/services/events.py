"""The owner's view of alert events: list with filters and a cursor, detail, media, deletion."""

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, Table, and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.adapters.db.tables import events
from gateway.errors import InvalidRequest, NotFound, Unavailable
from gateway.ports import Clock
from gateway.services import audit
from gateway.services.media_links import present_link
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
    snapshot_key: str  # "" when the snapshot was not stored (snapshot_dropped says why)
    thumbnail_key: str
    snapshot_dropped: str | None = None


@dataclass(frozen=True)
class EventFilter:
    device_id: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def encode_cursor(captured_at: datetime, row_id: str) -> str:
    """An opaque page cursor for lists ordered by capture time, then id (events, clips)."""
    return base64.urlsafe_b64encode(f"{captured_at.isoformat()}|{row_id}".encode()).decode()


_ROW_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The capture time and id an ``encode_cursor`` cursor names; InvalidRequest when it is not one."""
    # A cursor comes back from the client: anything it holds reaches the query. A naive or
    # out-of-range time, or an id with a NUL, made the database bind fail (a 500).
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
        at, _, row_id = text.partition("|")
        captured_at = datetime.fromisoformat(at)
        if captured_at.tzinfo is None or _ROW_ID.fullmatch(row_id) is None:
            raise ValueError("not a cursor")
        return captured_at.astimezone(UTC), row_id
    except (ValueError, OverflowError):  # binascii.Error and UnicodeError are ValueErrors
        raise InvalidRequest("invalid_cursor", "cursor must be the next_cursor of a previous page") from None


def newest_first(
    query: Select[Any],
    table: Table,
    *,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
) -> Select[Any]:
    """``query`` over ``table`` (captured_at, id) narrowed to captures in [since, until) after the cursor,
    newest first, one row more than ``limit``: ``page_of`` tells from it whether another page follows."""
    if since is not None:
        query = query.where(table.c.captured_at >= since)
    if until is not None:
        query = query.where(table.c.captured_at < until)
    if cursor is not None:
        at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(table.c.captured_at < at, and_(table.c.captured_at == at, table.c.id < last_id))
        )
    return query.order_by(table.c.captured_at.desc(), table.c.id.desc()).limit(limit + 1)


class Captured(Protocol):
    """A listed row: what a cursor is made of."""

    @property
    def id(self) -> str: ...

    @property
    def captured_at(self) -> datetime: ...


C = TypeVar("C", bound=Captured)


def page_of(rows: list[C], limit: int) -> tuple[list[C], str | None]:
    """The page of a ``newest_first`` query's rows, and the cursor of the next page (None: the last)."""
    page = rows[:limit]
    return page, encode_cursor(page[-1].captured_at, page[-1].id) if len(rows) > limit else None


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
        query = newest_first(query, events, since=flt.since, until=flt.until, cursor=cursor, limit=limit)
        async with self._db.connect() as conn:
            rows = [_event(r) for r in await conn.execute(query)]
        return page_of(rows, limit)

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
        if not key:  # kept without media (e.g. the camera was over its alert rate)
            raise NotFound(
                f"{which}_not_stored", f"this event's {which} was not stored ({event.snapshot_dropped})"
            )
        store = self._stores.for_region(event.region)
        url = await present_link(store, key, ttl_s)
        if url is not None:
            return url, None
        return None, await store.get(key)

    async def delete(self, account_id: str, event_id: str, *, address: str) -> None:
        """Deletes an event with its objects (every version)."""
        event = await self.get(account_id, event_id)
        report = await self._stores.for_region(event.region).delete_many(
            [k for k in (event.snapshot_key, event.thumbnail_key) if k]
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
