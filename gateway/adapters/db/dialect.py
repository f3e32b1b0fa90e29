"""The few statements SQLite and PostgreSQL spell differently, built once per table and dialect so the
hot path reuses SQLAlchemy's compiled-statement cache instead of rebuilding statements per call."""

import hashlib
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.ext.asyncio import AsyncConnection

_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


def _insert(dialect_name: str, table: Table) -> PgInsert | SqliteInsert:
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


@cache
def _insert_ignore(dialect_name: str, table: Table, conflict: tuple[str, ...]) -> PgInsert | SqliteInsert:
    return _insert(dialect_name, table).on_conflict_do_nothing(index_elements=list(conflict))


@cache
def _upsert(
    dialect_name: str, table: Table, columns: tuple[str, ...], key: tuple[str, ...]
) -> PgInsert | SqliteInsert:
    stmt = _insert(dialect_name, table)
    changes = {name: stmt.excluded[name] for name in columns if name not in key}
    return stmt.on_conflict_do_update(index_elements=list(key), set_=changes)


async def insert_ignore(
    conn: AsyncConnection, table: Table, values: Mapping[str, Any], conflict: Sequence[str]
) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when the row was inserted."""
    stmt = _insert_ignore(conn.dialect.name, table, tuple(conflict))
    result = await conn.execute(stmt, dict(values))
    return bool(result.rowcount)


async def upsert(conn: AsyncConnection, table: Table, values: Mapping[str, Any], key: Sequence[str]) -> None:
    """INSERT … ON CONFLICT (key) DO UPDATE SET every other given column."""
    stmt = _upsert(conn.dialect.name, table, tuple(sorted(values)), tuple(key))
    await conn.execute(stmt, dict(values))


def _lock_id(name: str) -> int:
    # A stable signed 64-bit number for the name (Python's hash() changes per process).
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


async def lock_key(conn: AsyncConnection, name: str) -> None:
    """Serialises, until they end, the transactions that lock the same ``name``.

    PostgreSQL: a transaction-level advisory lock (two names may share a number; that only costs
    waiting). SQLite has a single writer: the caller's next write takes the database's write lock and
    holds it to the end of the transaction, so callers must write before they read what the lock guards.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(_ADVISORY_LOCK, {"k": _lock_id(name)})
