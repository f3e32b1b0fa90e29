"""Clip reassembly rules (docs/clips.md), pure: whether a clip is collected at all, what every part must
agree on, how long a stored clip lives, and what it is stored as."""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.domain.alerts import DEFAULT_MAX_SKEW, AlertPrefs, capture_time, collection_decision
from gateway.domain.plans import Retention
from gateway.wire import ClipFormat, ClipHeader
from storage.keys import clip_key


class ClipDrop(StrEnum):
    """Why a clip is not stored. Its staged parts are deleted; later parts are acknowledged unread."""

    ALERTS_OFF = "alerts_off"  # the owner's alert settings (as for alerts: the account turned them off)
    MUTED = "muted"
    SNOOZED = "snoozed"
    KIND_NOT_WANTED = "kind_not_wanted"
    NO_VIDEO_PLAN = "no_video_plan"  # no plan with video storage was in force at capture
    PLAN_ENDED = "plan_ended"  # there was at capture, but none is in force when the clip arrives
    EXPIRED_ON_ARRIVAL = "expired_on_arrival"  # its retention ended before it arrived
    TOO_MANY_PARTS = "too_many_parts"
    CLIP_TOO_LARGE = "clip_too_large"
    BAD_FRAME = "bad_frame"  # a frame is not a JPEG the gateway can encode
    BAD_VIDEO = "bad_video"  # camera-encoded video that does not start like its format
    QUOTA_EXCEEDED = "quota_exceeded"
    OWNER_CHANGED = "owner_changed"  # the camera changed hands while its clip was arriving
    BEFORE_BINDING = "before_binding"  # captured before the current owner bound the camera
    INCOMPLETE = "incomplete"  # parts still missing after the upload timeout
    TOO_MANY_UPLOADS = "too_many_uploads"  # the camera or its account has its limit of clips in progress
    STAGING_FULL = "staging_full"  # the account's staged bytes would pass their limit
    ASSEMBLY_FAILED = "assembly_failed"  # encoding or storing failed for a reason that is not transient


@dataclass(frozen=True)
class StoredAs:
    """The object a clip of one format becomes."""

    extension: str
    content_type: str


STORED_AS = {
    ClipFormat.JPEG_FRAMES: StoredAs("webm", "video/webm"),  # encoded by the gateway to VP8
    ClipFormat.WEBM: StoredAs("webm", "video/webm"),
    ClipFormat.MP4: StoredAs("mp4", "video/mp4"),
}


def object_key(account_id: str, device_id: str, header: ClipHeader) -> str:
    """The key of a clip's object: derived from the camera's clip id, so every assembly finds it."""
    extension = STORED_AS[header.format].extension
    return clip_key(account_id, device_id, header.clip_id, header.captured_at, extension)


_EBML_MAGIC = b"\x1a\x45\xdf\xa3"  # every WebM (Matroska) file starts with an EBML header


def looks_like(fmt: ClipFormat, data: bytes) -> bool:
    """Whether camera-encoded video starts the way its format must (not a full validation)."""
    if fmt is ClipFormat.WEBM:
        return data.startswith(_EBML_MAGIC)
    if fmt is ClipFormat.MP4:
        return data[4:8] == b"ftyp"  # ISO BMFF: the first box is the file type box
    return True


def opted_out(prefs: AlertPrefs, alert_kind: str | None, now: datetime) -> ClipDrop | None:
    """The owner's alert settings applied to a clip, as to its alert. The kind filter applies only when
    the clip's alert is stored (its kind known); a clip arriving first is judged without it."""
    if alert_kind is None:
        prefs = replace(prefs, event_kinds=None)
    drop = collection_decision(prefs, alert_kind or "", now)
    return None if drop is None else ClipDrop(drop.value)


def retain_from(captured_at: datetime, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW) -> datetime:
    """The instant a clip's retention counts from: its capture, clamped to [now - max_skew, now] as for
    alerts (``capture_time``), so a camera clock far behind or ahead neither loses nor gains."""
    return capture_time(captured_at, now, max_skew)


def retain_until(
    captured_at: datetime, now: datetime, retention: Retention, max_skew: timedelta = DEFAULT_MAX_SKEW
) -> datetime:
    """When a clip captured at ``captured_at`` under ``retention`` expires; a late upload never gains."""
    return retain_from(captured_at, now, max_skew) + retention.video_period


def admission(
    header: ClipHeader,
    retention: Retention,
    opt_out: ClipDrop | None,
    now: datetime,
    max_parts: int,
    arrival: Retention | None = None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> ClipDrop | None:
    """The decision a clip's first part makes for the whole clip: None to receive it, else why not.

    ``retention`` is the plan's in force at capture (it fixes how long the clip lives), ``arrival`` the
    plan's in force ``now`` (None: the same plan, when capture is now). Clips are written only while a
    plan with video is in force, so a capture time inside an ended plan's period stores nothing.
    """
    if opt_out is not None:
        return opt_out
    if not retention.video:
        return ClipDrop.NO_VIDEO_PLAN
    if arrival is not None and not arrival.video:
        return ClipDrop.PLAN_ENDED
    if retain_until(header.captured_at, now, retention, max_skew) <= now:
        return ClipDrop.EXPIRED_ON_ARRIVAL
    if header.parts > max_parts:
        return ClipDrop.TOO_MANY_PARTS
    return None


_MUST_MATCH = ("format", "parts", "fps", "captured_at", "event_id")


def mismatch(first: ClipHeader, part: ClipHeader) -> str | None:
    """Which of the clip's fields ``part`` disagrees with the first part on, or None."""
    differing = [name for name in _MUST_MATCH if getattr(first, name) != getattr(part, name)]
    return ", ".join(differing) if differing else None
