"""The schema, as SQLAlchemy Core tables. Alembic migrations in ``migrations/`` create and evolve it."""

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
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
    Column(
        "status", String(16), nullable=False
    ),  # active (pending sign-ups live in pending_signups; "pending" before 0007)
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

# One row per sign-up: the credentials chosen and the one-time code sent for them travel together, so a
# later sign-up for the same identifier closes this one (its code is void) but never rewrites it; the
# account is created from the registration whose code and password the confirmer presents.
pending_signups = Table(
    "pending_signups",
    metadata,
    Column("id", String(36), primary_key=True),  # becomes the account's id
    Column("identifier", String(254), nullable=False),  # normalised e-mail or E.164 phone
    Column("password_hash", String(200), nullable=False),
    Column("display_name", String(100), nullable=False, server_default=""),
    Column("birth_date", Date, nullable=False),
    Column("region", String(16), nullable=False),
    Column("time_zone", String(64), nullable=False, server_default="UTC"),
    Column("guardian_name", String(100)),
    Column("guardian_contact", String(254)),
    Column("code_hash", String(64), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("expires_at", UtcDateTime, nullable=False),  # of the code
    Column("created_at", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime),  # confirmed, or superseded by a newer sign-up
    Index("ix_pending_signups_identifier_created_at", "identifier", "created_at"),
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
    Column("bound_at", UtcDateTime),  # when the current binding started: earlier captures are not its
    # The current binding (owner and period): a fresh id at every bind, null while unbound. What a camera
    # sends is stored, de-duplicated and configured per binding, never for a later owner (issue 8).
    Column("binding_id", String(36)),
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

# --- alert ingest (issue 3) ----------------------------------------------------------------------

device_presence = Table(
    "device_presence",
    metadata,
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("online", Boolean, nullable=False),
    Column("firmware", String(64)),
    Column("last_seen_at", UtcDateTime, nullable=False),
)

alert_settings = Table(
    "alert_settings",
    metadata,
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("message_alerts", Boolean, nullable=False),
    Column("event_kinds", JSON),  # null: every kind
    Column("updated_at", UtcDateTime, nullable=False),
)

device_alert_settings = Table(
    "device_alert_settings",
    metadata,
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("binding_id", String(36), nullable=False, server_default=""),  # read only while it is current
    Column("muted", Boolean, nullable=False),
    Column("snoozed_until", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("binding_id", String(36), nullable=False, server_default=""),  # "": before bindings were kept
    Column("camera_event_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("captured_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("stored_at", UtcDateTime),  # when the event was committed (publish-to-commit latency)
    Column("region", String(16), nullable=False),
    Column("snapshot_key", String(300), nullable=False),
    Column("thumbnail_key", String(300), nullable=False),
    Column("snapshot_bytes", Integer, nullable=False),
    Column("thumbnail_bytes", Integer, nullable=False, server_default="0"),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    # Why the event has no snapshot and thumbnail (their keys are then ""): gateway.domain.alerts.SnapshotDropped.
    Column("snapshot_dropped", String(32)),
    # Fixed at capture from the plan in force then (issue 4); the sweep deletes the row and its objects after.
    Column("retain_until", UtcDateTime, nullable=False),
    Column("claimed_by", String(64)),  # a sweeper's lease on the row (docs/retention.md)
    Column("claimed_until", UtcDateTime),
    # Per binding: a camera's next owner may re-use an event id its previous owner's events have.
    UniqueConstraint("device_id", "binding_id", "camera_event_id", name="uq_events_device_binding_event"),
    Index("ix_events_account_captured", "account_id", "captured_at"),
    Index("ix_events_retain_until", "retain_until"),
)

push_targets = Table(
    "push_targets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("kind", String(16), nullable=False),  # webhook (fcm, apns, webpush later)
    Column("address", String(2000), nullable=False),  # webhook URL / device token / subscription JSON
    Column("created_at", UtcDateTime, nullable=False),
)

push_outbox = Table(
    "push_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), ForeignKey("events.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("account_id", String(36), nullable=False, index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("claimed_by", String(64)),
    Column("claimed_until", UtcDateTime),
    Column("done_at", UtcDateTime),
    Column("last_error", String(500)),
    Index("ix_push_outbox_due", "done_at", "next_attempt_at"),
)

push_deliveries = Table(
    "push_deliveries",
    metadata,
    Column("outbox_id", BigId, ForeignKey("push_outbox.id", ondelete="CASCADE"), primary_key=True),
    Column("target_id", String(36), ForeignKey("push_targets.id", ondelete="CASCADE"), primary_key=True),
    Column("delivered_at", UtcDateTime, nullable=False),
    Column("status", Integer, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("topic", String(300), nullable=False),
    Column("serial", String(32), nullable=False, server_default="", index=True),
    Column("reason", String(64), nullable=False),
    Column("detail", String(500), nullable=False),
    Column("header", JSON, nullable=False),  # what could be parsed; never the snapshot bytes
    Column("payload_bytes", Integer, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)


# --- plans, clips and retention (issue 4) ------------------------------------------------------

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("plan_id", String(40), nullable=False),
    Column("billing", String(16), nullable=False),  # monthly | annual | trial
    Column("status", String(16), nullable=False),  # the recorded decision: gateway.domain.plans.Status
    Column("starts_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime, nullable=False),
    Column("anchor_at", UtcDateTime, nullable=False),
    Column("period", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_paid", BigInteger, nullable=False),  # minor units, like every amount below
    Column("monthly_price", BigInteger, nullable=False),
    Column("credits_given", BigInteger, nullable=False),
    Column("auto_renew", Boolean, nullable=False),
    Column("renewal_of", String(36)),  # the period this one renewed
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

trial_claims = Table(
    "trial_claims",
    metadata,
    # One row per account, ever: the primary key is what makes the trial once per account under races.
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("device_id", String(36), nullable=False),
    Column("subscription_id", String(36), nullable=False),
    Column("claimed_at", UtcDateTime, nullable=False),
)

payments = Table(
    "payments",
    metadata,
    # The ledger: every charge and refund. No foreign keys: money records outlive accounts and devices.
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account_id", String(36), nullable=False, index=True),
    Column("subscription_id", String(36), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # charge | refund
    Column("amount", BigInteger, nullable=False),  # minor units, never negative
    Column("currency", String(3), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("provider_ref", String(100), nullable=False),
    Column("description", String(200), nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False),
)

clips = Table(
    "clips",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("binding_id", String(36), nullable=False, server_default=""),
    Column("camera_clip_id", String(64), nullable=False),
    Column("event_id", String(64)),  # the camera's id of the alert the clip follows
    Column("region", String(16), nullable=False),
    Column("key", String(300), nullable=False),
    Column("content_type", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("frames", Integer),  # known for frame bursts the gateway encoded
    Column("width", Integer),
    Column("height", Integer),
    Column("plan_id", String(40), nullable=False),  # the plan in force at capture
    Column("captured_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("stored_at", UtcDateTime, nullable=False),
    Column("retain_until", UtcDateTime, nullable=False),
    Column("claimed_by", String(64)),
    Column("claimed_until", UtcDateTime),
    UniqueConstraint("device_id", "binding_id", "camera_clip_id", name="uq_clips_device_binding_clip"),
    Index("ix_clips_account_captured", "account_id", "captured_at"),
    Index("ix_clips_retain_until", "retain_until"),
)

clip_uploads = Table(
    "clip_uploads",
    metadata,
    # A clip being reassembled: its parts are staged in clip_parts and acknowledged once committed.
    Column("id", String(36), primary_key=True),
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("camera_clip_id", String(64), nullable=False),
    Column("account_id", String(36), nullable=False),
    Column("binding_id", String(36), nullable=False, server_default=""),
    Column("status", String(16), nullable=False),  # receiving | dropped (later parts are dropped too)
    Column("reason", String(64)),  # why it was dropped
    Column("header", JSON, nullable=False),  # the first part's header: what every later part must match
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),  # the last part staged: timeouts count from it
    UniqueConstraint("device_id", "binding_id", "camera_clip_id", name="uq_clip_uploads_device_binding_clip"),
    Index("ix_clip_uploads_updated_at", "updated_at"),
)

clip_parts = Table(
    "clip_parts",
    metadata,
    Column("upload_id", String(36), ForeignKey("clip_uploads.id", ondelete="CASCADE"), primary_key=True),
    Column("part", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

job_leases = Table(
    "job_leases",
    metadata,
    # Singleton jobs across instances (reconciliation of a region): one holder at a time.
    Column("name", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)
