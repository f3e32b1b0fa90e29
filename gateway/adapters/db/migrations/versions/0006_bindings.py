"""bindings: what a camera sends belongs to the binding it was captured in (issue 8)

Every bound device gets a binding id. Events, clips, clip uploads and per-device alert settings of the
device's current owner join that binding; rows of earlier owners get the empty binding id "" (a binding
from before bindings were recorded), which no device ever has, so they are never read as the current
binding's and never count as its duplicates. The duplicate checks become unique per binding.

Downgrading fails when one camera id was stored in two bindings of a device (the old constraint cannot
hold them both).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 09:00:00.000000
"""

import uuid

import sqlalchemy as sa
from alembic import op

BACKFILL_BATCH = 5000
PAST_BINDING = ""

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (table, old unique constraint, its columns, new unique constraint, its columns)
_UNIQUE = (
    (
        "events",
        "uq_events_device_camera_event",
        ["device_id", "camera_event_id"],
        "uq_events_device_binding_event",
        ["device_id", "binding_id", "camera_event_id"],
    ),
    (
        "clips",
        "uq_clips_device_camera_clip",
        ["device_id", "camera_clip_id"],
        "uq_clips_device_binding_clip",
        ["device_id", "binding_id", "camera_clip_id"],
    ),
    (
        "clip_uploads",
        "uq_clip_uploads_device_camera_clip",
        ["device_id", "camera_clip_id"],
        "uq_clip_uploads_device_binding_clip",
        ["device_id", "binding_id", "camera_clip_id"],
    ),
)
# Rows keyed by their own id column, and those keyed by device (device_alert_settings).
_OWNED = (("events", "id"), ("clips", "id"), ("clip_uploads", "id"), ("device_alert_settings", "device_id"))


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("binding_id", sa.String(length=36), nullable=True))
    _start_bindings()
    for table, _key in _OWNED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("binding_id", sa.String(length=36), server_default=PAST_BINDING, nullable=False)
            )
    for table, key in _OWNED:
        _join_current_binding(table, key)
    for table, old, _old_columns, new, new_columns in _UNIQUE:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(old, type_="unique")
            batch_op.create_unique_constraint(new, new_columns)


def _start_bindings() -> None:
    # A fresh id per bound device, in Python: uuid generation differs between SQLite and PostgreSQL.
    devices = sa.table(
        "devices", sa.column("id", sa.String), sa.column("owner_account_id"), sa.column("binding_id")
    )
    conn = op.get_bind()
    update = (
        devices.update().where(devices.c.id == sa.bindparam("device")).values(binding_id=sa.bindparam("b"))
    )
    bound = sa.select(devices.c.id).where(devices.c.owner_account_id.is_not(None))
    for batch in conn.execute(bound).yield_per(BACKFILL_BATCH).partitions():
        conn.execute(update, [{"device": r.id, "b": str(uuid.uuid4())} for r in batch])


def _join_current_binding(name: str, key: str) -> None:
    """Rows of the device's current owner join its binding; the others stay in the past binding."""
    columns = dict.fromkeys((key, "device_id", "account_id", "binding_id"))  # key may be device_id
    table = sa.table(name, *(sa.column(c, sa.String) for c in columns))
    devices = sa.table(
        "devices", sa.column("id", sa.String), sa.column("owner_account_id"), sa.column("binding_id")
    )
    conn = op.get_bind()
    current = sa.select(table.c[key], devices.c.binding_id).select_from(
        table.join(
            devices,
            (devices.c.id == table.c.device_id) & (devices.c.owner_account_id == table.c.account_id),
        )
    )
    update = table.update().where(table.c[key] == sa.bindparam("row")).values(binding_id=sa.bindparam("b"))
    for batch in conn.execute(current).yield_per(BACKFILL_BATCH).partitions():
        # One executemany per batch, like 0004: a large table takes seconds, not a round trip per row.
        conn.execute(update, [{"row": r[0], "b": r[1]} for r in batch])


def downgrade() -> None:
    for table, old, old_columns, new, _new_columns in reversed(_UNIQUE):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(new, type_="unique")
            batch_op.create_unique_constraint(old, old_columns)
    for table, _key in reversed(_OWNED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("binding_id")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("binding_id")
