"""Prometheus metrics of the ingest path (the push worker keeps its own next to its code)."""

from prometheus_client import Counter, Gauge, Histogram

ALERTS = Counter("camgate_alerts_total", "Alert messages handled, by outcome", ["outcome"])
ALERTS_DROPPED = Counter(
    "camgate_alerts_dropped_total", "Alerts dropped unread because of the owner's settings", ["reason"]
)
DEAD_LETTERS = Counter("camgate_dead_letters_total", "Messages dead-lettered, by reason", ["reason"])
INGEST_SECONDS = Histogram(
    "camgate_ingest_seconds",
    "Receipt to commit of a stored alert",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
INGEST_RETRIES = Counter("camgate_ingest_retries_total", "Transient failures retried, by error", ["error"])
INFLIGHT = Gauge("camgate_ingest_inflight", "Messages received and not yet acknowledged")
STORED_BYTES = Counter("camgate_stored_bytes_total", "Bytes written to object storage by ingest")
