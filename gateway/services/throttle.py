"""Sliding-window attempt counters kept in the database, so every gateway instance sees the same counts.

An attempt is *reserved* before the work it guards (a hash, a code check): the reservation records it
and counts the window atomically, so parallel requests cannot all pass a check that none has recorded
yet. A refused reservation records nothing (a flood does not extend its own lockout); a reservation whose
attempt turned out fine is refunded.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.db.dialect import lock_key
from gateway.adapters.db.tables import throttle_hits


@dataclass(frozen=True)
class Reservation:
    """One attempt reserved in a window (``hit_id`` set), or refused (``retry_after`` set)."""

    window: "Window"
    key: str
    prior: int  # attempts already in the window before this one
    hit_id: int | None = None
    retry_after: int | None = None

    @property
    def granted(self) -> bool:
        """True when the attempt may go ahead."""
        return self.hit_id is not None


class Window:
    """``limit`` attempts per ``seconds`` for one scope (e.g. wrong codes per serial)."""

    def __init__(self, scope: str, limit: int, seconds: int) -> None:
        self.scope = scope
        self.limit = limit
        self.seconds = seconds

    async def hits(self, conn: AsyncConnection, key: str, now: datetime) -> tuple[int, datetime | None]:
        """Attempts within the window and the oldest of them."""
        since = now - timedelta(seconds=self.seconds)
        row = (
            await conn.execute(
                select(func.count(), func.min(throttle_hits.c.at)).where(
                    throttle_hits.c.scope == self.scope,
                    throttle_hits.c.key == key,
                    throttle_hits.c.at > since,
                )
            )
        ).one()
        return int(row[0]), row[1]

    def _wait(self, oldest: datetime | None, now: datetime) -> int:
        if oldest is None:
            return self.seconds
        return max(1, math.ceil((oldest + timedelta(seconds=self.seconds) - now).total_seconds()))

    async def reserve(self, conn: AsyncConnection, key: str, now: datetime) -> Reservation:
        """Records one attempt and counts the window in the same transaction, under a lock on
        (scope, key): granted while the count stays within the limit, else refused and not recorded.
        The caller's transaction must commit for the reservation to hold."""
        await lock_key(conn, f"throttle:{self.scope}:{key}")
        # Write first: on SQLite this insert takes the write lock that makes the count below exact.
        result = await conn.execute(insert(throttle_hits).values(scope=self.scope, key=key, at=now))
        inserted = result.inserted_primary_key
        assert inserted is not None  # a plain single-row INSERT always reports its key
        hit_id = int(inserted[0])
        count, oldest = await self.hits(conn, key, now)
        if count <= self.limit:
            return Reservation(self, key, prior=count - 1, hit_id=hit_id)
        await conn.execute(delete(throttle_hits).where(throttle_hits.c.id == hit_id))
        return Reservation(self, key, prior=count - 1, retry_after=self._wait(oldest, now))

    async def retry_after(self, conn: AsyncConnection, key: str, now: datetime) -> int | None:
        """Seconds until another attempt is allowed, or None when one is allowed now (a read only:
        use ``reserve`` to guard work)."""
        count, oldest = await self.hits(conn, key, now)
        if count < self.limit or oldest is None:
            return None
        return self._wait(oldest, now)

    async def hit(self, conn: AsyncConnection, key: str, now: datetime) -> None:
        """Records one attempt."""
        await conn.execute(insert(throttle_hits).values(scope=self.scope, key=key, at=now))

    async def clear(self, conn: AsyncConnection, key: str) -> None:
        """Forgets the attempts for a key (after a success)."""
        await conn.execute(
            delete(throttle_hits).where(throttle_hits.c.scope == self.scope, throttle_hits.c.key == key)
        )


@dataclass(frozen=True)
class Reservations:
    """Attempts reserved in several windows at once: all granted, or ``refused`` names the first window
    that said no (the others are then refunded)."""

    granted: tuple[Reservation, ...]
    refused: Reservation | None

    async def refund(self, conn: AsyncConnection) -> None:
        """Gives the granted attempts back (the work they guarded was not done, or went well)."""
        ids = [r.hit_id for r in self.granted if r.hit_id is not None]
        if ids:
            await conn.execute(delete(throttle_hits).where(throttle_hits.c.id.in_(ids)))


async def reserve(conn: AsyncConnection, now: datetime, *claims: tuple[Window, str]) -> Reservations:
    """Reserves one attempt in each (window, key), in the order given; stops at the first refusal.
    Every call site names its windows in one fixed order, so the locks cannot deadlock."""
    granted: list[Reservation] = []
    for window, key in claims:
        reservation = await window.reserve(conn, key, now)
        if not reservation.granted:
            done = Reservations(tuple(granted), reservation)
            await done.refund(conn)
            return Reservations((), reservation)
        granted.append(reservation)
    return Reservations(tuple(granted), None)


async def prune(conn: AsyncConnection, older_than: datetime) -> int:
    """Deletes hits older than any window still needs."""
    result = await conn.execute(delete(throttle_hits).where(throttle_hits.c.at < older_than))
    return int(result.rowcount)
