"""Factory registry import: validated rows in, only hashes of codes and secrets stored."""

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.adapters.db.tables import devices
from gateway.domain.credentials import hash_broker_secret, hash_label_code
from gateway.domain.registry import RegistryRow, validate_row
from gateway.ports import Clock
from gateway.services.devices import new_device_id


@dataclass(frozen=True)
class Rejection:
    line: int
    serial: str
    reason: str


@dataclass
class ImportReport:
    read: int = 0
    imported: int = 0
    rejected: list[Rejection] = field(default_factory=list)


async def import_registry(
    engine: AsyncEngine,
    pepper: bytes,
    clock: Clock,
    rows: Iterable[tuple[int, dict[str, str]]],
    *,
    batch_size: int = 500,
    dry_run: bool = False,
    progress: Callable[[int], None] = lambda _n: None,
) -> ImportReport:
    """Imports ``(line number, row)`` pairs; invalid and duplicate rows are rejected, the rest stored.

    ``progress`` is called with the number of rows handled after each batch.
    """
    report = ImportReport()
    first_line: dict[str, int] = {}
    pending: list[tuple[int, RegistryRow]] = []
    for line, raw in rows:
        report.read += 1
        try:
            row = validate_row(raw)
        except ValueError as exc:
            report.rejected.append(Rejection(line, raw.get("serial", "").strip(), str(exc)))
            continue
        if row.serial in first_line:
            report.rejected.append(
                Rejection(line, row.serial, f"duplicate serial (first on line {first_line[row.serial]})")
            )
            continue
        first_line[row.serial] = line
        pending.append((line, row))

    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        async with engine.begin() as conn:
            serials = [row.serial for _, row in batch]
            taken = set(
                (await conn.execute(select(devices.c.serial).where(devices.c.serial.in_(serials)))).scalars()
            )
            fresh = [row for _, row in batch if row.serial not in taken]
            report.rejected.extend(
                Rejection(line, row.serial, "serial already registered")
                for line, row in batch
                if row.serial in taken
            )
            values = await asyncio.to_thread(_hashed, pepper, fresh)  # PBKDF2 is CPU work
            now = clock.now()
            if values and not dry_run:
                await conn.execute(insert(devices), [{**v, "imported_at": now} for v in values])
            report.imported += len(values)
        progress(len(batch))
    progress(report.read - len(pending))  # rejected rows count as handled too
    report.rejected.sort(key=lambda r: r.line)
    return report


def _hashed(pepper: bytes, rows: list[RegistryRow]) -> list[dict[str, str]]:
    return [
        {
            "id": new_device_id(),
            "serial": row.serial,
            "model": row.model,
            "code_hash": hash_label_code(pepper, row.serial, row.code),
            "broker_secret_hash": hash_broker_secret(row.broker_secret),
        }
        for row in rows
    ]
