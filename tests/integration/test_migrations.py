"""The migrations build exactly the schema the code declares, on both databases, and re-run cleanly."""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.adapters.db.engine import _alembic_config, create_engine, migrate
from gateway.adapters.db.tables import events, metadata


async def test_migrations_match_the_declared_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        await migrate(engine)  # idempotent
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
        assert diff == [], f"schema drift; write a migration: {diff}"
    finally:
        await engine.dispose()


async def test_events_recorded_before_plans_get_the_free_snapshot_retention(database_url: str) -> None:
    engine = create_engine(database_url)
    captured = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "0003"))
            await conn.execute(
                sa.text(
                    "INSERT INTO accounts (id, password_hash, birth_date, region, status, created_at)"
                    " VALUES ('a1', 'x', '1990-01-01', 'sg', 'active', :at)"
                ),
                {"at": captured},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO devices (id, serial, model, code_hash, broker_secret_hash, imported_at)"
                    " VALUES ('d1', 'CG00000001', 'm', 'h', 'h', :at)"
                ),
                {"at": captured},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO events (id, account_id, device_id, camera_event_id, kind, captured_at,"
                    " received_at, region, snapshot_key, thumbnail_key, snapshot_bytes, width, height)"
                    " VALUES ('e1', 'a1', 'd1', 'c1', 'motion', :at, :at, 'sg', 's', 't', 1, 64, 64)"
                ),
                {"at": captured},
            )
        await migrate(engine)
        async with engine.connect() as conn:
            kept = (await conn.execute(sa.select(events.c.retain_until))).scalar_one()
        assert kept == captured + timedelta(days=3)
    finally:
        await engine.dispose()
