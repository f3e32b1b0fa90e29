"""The migrations build exactly the schema the code declares, on both databases, and re-run cleanly."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.adapters.db.engine import create_engine, migrate
from gateway.adapters.db.tables import metadata


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
