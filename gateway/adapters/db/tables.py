"""The schema, as SQLAlchemy Core tables. Alembic migrations in ``migrations/`` create and evolve it."""

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite keeps integer primary keys as ROWID aliases only for INTEGER, not BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would otherwise hand back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


accounts = Table(
    "accounts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(254), unique=True),
    Column("phone", String(20), unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("display_name", String(100), nullable=False, server_default=""),
    Column("birth_date", Date, nullable=False),
    Column("region", String(16), nullable=False),
    Column("time_zone", String(64), nullable=False, server_default="UTC"),
    Column("locale", String(16), nullable=False, server_default="en"),
    Column("status", String(16), nullable=False),  # pending | active
    Column("created_at", UtcDateTime, nullable=False),
    Column("confirmed_at", UtcDateTime),
    Column("last_login_at", UtcDateTime),
)

guardian_consents = Table(
    "guardian_consents",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("guardian_name", String(100), nullable=False),
    Column("guardian_contact", String(254), nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
)

verification_codes = Table(
    "verification_codes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("code_hash", String(64), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("used_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_agent", String(200), nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("serial", String(32), nullable=False, unique=True),
    Column("model", String(64), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("broker_secret_hash", String(200), nullable=False),
    Column("owner_account_id", String(36), ForeignKey("accounts.id", ondelete="SET NULL"), index=True),
    Column("name", String(100), nullable=False, server_default=""),
    Column("bound_at", UtcDateTime),
    Column("imported_at", UtcDateTime, nullable=False),
)

throttle_hits = Table(
    "throttle_hits",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("scope", String(32), nullable=False),
    Column("key", String(300), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_throttle_hits_scope_key_at", "scope", "key", "at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account_id", String(36), nullable=False, index=True),  # no FK: the log outlives the rows it names
    Column("actor", String(64), nullable=False),  # "account:<id>", "ops", "system"
    Column("action", String(64), nullable=False),
    Column("target_type", String(32), nullable=False, server_default=""),
    Column("target_id", String(64), nullable=False, server_default=""),
    Column("detail", JSON, nullable=False),
    Column("address", String(64), nullable=False, server_default=""),
    Column("at", UtcDateTime, nullable=False),
)
