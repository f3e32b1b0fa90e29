"""Alembic environment: runs migrations on the connection handed over by ``gateway.adapters.db.migrate``."""

from alembic import context

from gateway.adapters.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    # `alembic revision --autogenerate` from a developer's shell: use the URL given with -x url=...
    from sqlalchemy import create_engine

    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///var/alembic-dev.db")
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
