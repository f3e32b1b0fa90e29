"""Prometheus metrics of the ingest path (the push worker keeps its own next to its code)."""

from prometheus_client import Counter, Gauge, Histogram

ALERTS = Counter("camgate_alerts_total", "Alert messages handled, by outcome", ["outcome"])
ALERTS_DROPPED = Counter(
    "camgate_alerts_dropped_total", "Alerts dropped unread because of the owner's settings", ["reason"]
)
DEAD_LETTERS = Counter("camgate_dead_letters_total", "Messages dead-lettered, by reason", ["reason"])
DEAD_LETTERS_NOT_WRITTEN = Counter(
    "camgate_dead_letters_not_written_total",
    "Dead letters counted but not written: their camera is past its dead-letter allowance",
)
INGEST_SECONDS = Histogram(
    "camgate_ingest_seconds",
    "Receipt to commit of a stored alert",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
INGEST_RETRIES = Counter("camgate_ingest_retries_total", "Transient failures retried, by error", ["error"])
INFLIGHT = Gauge("camgate_ingest_inflight", "Messages being processed now")
INGEST_HELD = Counter(
    "camgate_ingest_held_total",
    "Attempts that left a message unacknowledged because a dependency of ours is down or refuses us",
    ["reason"],  # storage_refused, unknown_region, storage_unavailable, database_unavailable, io
)
UNACKNOWLEDGED = Gauge(
    "camgate_ingest_unacknowledged", "Messages received from the broker and not yet acknowledged"
)
OLDEST_UNACKNOWLEDGED = Gauge(
    "camgate_ingest_oldest_unacknowledged_seconds",
    "Age of the oldest message not yet acknowledged (0 when none): what holds back every ack behind it",
)
SNAPSHOTS_DROPPED = Counter(
    "camgate_snapshots_dropped_total",
    "Events kept without their snapshot, by reason (rate_limited: the camera was over its rate)",
    ["reason"],
)
BACKOFF_NOTICES = Counter(
    "camgate_backoff_notices_total", "Configs telling a camera over its rate to back off"
)
STORED_BYTES = Counter("camgate_stored_bytes_total", "Bytes written to object storage by ingest")
CLIPS = Counter(
    "camgate_clip_parts_total",
    "Clip parts handled, by outcome (stored: the part that completed a clip)",
    ["outcome"],
)
CLIPS_DROPPED = Counter(
    "camgate_clips_dropped_total", "Clips not stored, by reason (docs/clips.md)", ["reason"]
)

# Retention sweep and reconciliation (gateway/services/sweep.py, reconcile.py).
SWEPT_OBJECTS = Counter(
    "camgate_swept_objects_total",
    "Expired objects deleted by the retention sweep, by record table",
    ["table"],
)
SWEPT_BYTES = Counter("camgate_swept_bytes_total", "Bytes of expired snapshots and clips the sweep deleted")
SWEEP_FAILURES = Counter(
    "camgate_sweep_failures_total", "Expired records kept because an object of theirs could not be deleted"
)
RECONCILED = Counter(
    "camgate_reconciled_total",
    "What reconciliation removed: orphan objects, records, stale uploads",
    ["what"],
)

CLIP_ASSEMBLIES = Gauge("camgate_clip_assemblies", "Clips being assembled now (their parts held in memory)")
RETAINED_UPLINK = Counter(
    "camgate_retained_uplink_total", "Retained uplink messages acknowledged and ignored (never ingested)"
)
