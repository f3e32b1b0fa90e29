"""Pending registrations: one row per sign-up, with the credentials chosen and the code sent for them.

No unauthenticated request rewrites a registration: a newer sign-up for the same identifier only closes
the older ones (their codes are void), and confirmation activates the registration whose code is used,
after its password is presented again, so whoever confirms proves they chose these credentials.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.adapters.db.tables import pending_signups as ps


@dataclass(frozen=True)
class GuardianConsent:
    guardian_name: str
    guardian_contact: str


@dataclass(frozen=True)
class SignUp:
    identifier: str
    password: str
    birth_date: date
    region: str
    display_name: str = ""
    time_zone: str = "UTC"
    guardian: GuardianConsent | None = None


async def open_registration(
    conn: AsyncConnection,
    reg_id: str,
    form: SignUp,
    *,
    identifier: str,
    password_hash: str,
    code_hash: str,
    now: datetime,
    ttl_s: int,
) -> None:
    """Closes the identifier's open registrations (their codes are void) and records a new one; its id
    becomes the account's once confirmed."""
    await close_all(conn, identifier, now)
    await conn.execute(
        insert(ps).values(
            id=reg_id,
            identifier=identifier,
            password_hash=password_hash,
            display_name=form.display_name,
            birth_date=form.birth_date,
            region=form.region,
            time_zone=form.time_zone,
            guardian_name=form.guardian.guardian_name if form.guardian else None,
            guardian_contact=form.guardian.guardian_contact if form.guardian else None,
            code_hash=code_hash,
            expires_at=now + timedelta(seconds=ttl_s),
            created_at=now,
        )
    )


async def set_code(conn: AsyncConnection, reg_id: str, code_hash: str, now: datetime, ttl_s: int) -> None:
    """Gives a registration a fresh code (the previous one is void) and a fresh attempt count."""
    await conn.execute(
        update(ps)
        .where(ps.c.id == reg_id)
        .values(code_hash=code_hash, attempts=0, expires_at=now + timedelta(seconds=ttl_s))
    )


async def latest_open(conn: AsyncConnection, identifier: str) -> Row[Any] | None:
    """The identifier's newest registration not yet closed (the only one whose code counts)."""
    query = (
        select(ps)
        .where(ps.c.identifier == identifier, ps.c.closed_at.is_(None))
        .order_by(ps.c.created_at.desc(), ps.c.id)
        .limit(1)
    )
    return (await conn.execute(query)).first()


async def take_attempt(conn: AsyncConnection, reg_id: str, limit: int, now: datetime) -> bool:
    """Counts one confirmation attempt on a live code, atomically: one conditional UPDATE, so parallel
    guesses cannot pass ``limit`` between a read and a write. False: the code is void."""
    result = await conn.execute(
        update(ps)
        .where(
            ps.c.id == reg_id,
            ps.c.closed_at.is_(None),
            ps.c.expires_at > now,
            ps.c.attempts < limit,
        )
        .values(attempts=ps.c.attempts + 1)
    )
    return bool(result.rowcount)


async def close(conn: AsyncConnection, reg_id: str, now: datetime) -> bool:
    """Closes one open registration; False when it was already closed (a parallel confirmation)."""
    result = await conn.execute(
        update(ps).where(ps.c.id == reg_id, ps.c.closed_at.is_(None)).values(closed_at=now)
    )
    return bool(result.rowcount)


async def close_all(conn: AsyncConnection, identifier: str, now: datetime) -> None:
    """Closes every open registration of an identifier."""
    await conn.execute(
        update(ps).where(ps.c.identifier == identifier, ps.c.closed_at.is_(None)).values(closed_at=now)
    )


async def prune(conn: AsyncConnection, older_than: datetime) -> int:
    """Deletes registrations closed, or whose code expired, before ``older_than``."""
    result = await conn.execute(
        delete(ps).where(or_(ps.c.closed_at < older_than, ps.c.expires_at < older_than))
    )
    return int(result.rowcount)
