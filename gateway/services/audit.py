"""The audit log of sensitive actions, readable by the account holder for their own account."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.adapters.db.tables import audit_log


@dataclass(frozen=True)
class AuditEntry:
    id: int
    actor: str
    action: str
    target_type: str
    target_id: str
    detail: dict[str, Any]
    address: str
    at: datetime


async def record(
    conn: AsyncConnection,
    *,
    account_id: str,
    actor: str,
    action: str,
    at: datetime,
    target_type: str = "",
    target_id: str = "",
    detail: dict[str, Any] | None = None,
    address: str = "",
) -> None:
    """Appends one entry, inside the caller's transaction so the entry and the change commit together."""
    await conn.execute(
        insert(audit_log).values(
            account_id=account_id,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            detail=detail or {},
            address=address,
            at=at,
        )
    )


async def page(
    engine: AsyncEngine, account_id: str, *, limit: int, before_id: int | None
) -> list[AuditEntry]:
    """Newest first; ``before_id`` is the cursor from the previous page."""
    query = select(audit_log).where(audit_log.c.account_id == account_id)
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(audit_log.c.id.desc()).limit(limit))).mappings().all()
    return [
        AuditEntry(
            id=r["id"],
            actor=r["actor"],
            action=r["action"],
            target_type=r["target_type"],
            target_id=r["target_id"],
            detail=r["detail"],
            address=r["address"],
            at=r["at"],
        )
        for r in rows
    ]
