"""Sliding-window attempt counters kept in the database, so every gateway instance sees the same counts."""

import math
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.db.tables import throttle_hits


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

    async def retry_after(self, conn: AsyncConnection, key: str, now: datetime) -> int | None:
        """Seconds until another attempt is allowed, or None when one is allowed now."""
        count, oldest = await self.hits(conn, key, now)
        if count < self.limit or oldest is None:
            return None
        return max(1, math.ceil((oldest + timedelta(seconds=self.seconds) - now).total_seconds()))

    async def hit(self, conn: AsyncConnection, key: str, now: datetime) -> None:
        """Records one attempt."""
        await conn.execute(insert(throttle_hits).values(scope=self.scope, key=key, at=now))

    async def clear(self, conn: AsyncConnection, key: str) -> None:
        """Forgets the attempts for a key (after a success)."""
        await conn.execute(
            delete(throttle_hits).where(throttle_hits.c.scope == self.scope, throttle_hits.c.key == key)
        )


async def prune(conn: AsyncConnection, older_than: datetime) -> int:
    """Deletes hits older than any window still needs."""
    result = await conn.execute(delete(throttle_hits).where(throttle_hits.c.at < older_than))
    return int(result.rowcount)
