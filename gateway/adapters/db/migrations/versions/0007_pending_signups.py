"""pending sign-ups: one registration per sign-up, accounts only once confirmed

Accounts still pending at this revision are removed (with their codes and guardian consents): they were
never confirmed, their codes last minutes, and they sign up again. ``verification_codes`` goes: a
registration carries its own code.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_signups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("identifier", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.String(length=100), server_default="", nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("region", sa.String(length=16), nullable=False),
        sa.Column("time_zone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("guardian_name", sa.String(length=100), nullable=True),
        sa.Column("guardian_contact", sa.String(length=254), nullable=True),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_signups")),
    )
    with op.batch_alter_table("pending_signups", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pending_signups_identifier_created_at", ["identifier", "created_at"], unique=False
        )
    op.execute("DELETE FROM verification_codes")
    op.execute(
        "DELETE FROM guardian_consents WHERE account_id IN (SELECT id FROM accounts WHERE status = 'pending')"
    )
    op.execute("DELETE FROM accounts WHERE status = 'pending'")
    with op.batch_alter_table("verification_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verification_codes_account_id"))
    op.drop_table("verification_codes")


def downgrade() -> None:
    op.create_table(
        "verification_codes",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_verification_codes_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verification_codes")),
    )
    with op.batch_alter_table("verification_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_verification_codes_account_id"), ["account_id"], unique=False)
    # Registrations still open are lost: those people sign up again.
    with op.batch_alter_table("pending_signups", schema=None) as batch_op:
        batch_op.drop_index("ix_pending_signups_identifier_created_at")
    op.drop_table("pending_signups")
