"""The key layout shared by every backend, and the checks that keep a key inside its prefix.

    acct/<account_id>/dev/<device_id>/<kind>/<yyyy>/<mm>/<dd>/<object_id>.<ext>

``kind`` is ``snap`` (alert snapshot, .jpg), ``thumb`` (its thumbnail, .jpg) or ``clip`` (.webm or .mp4);
the date is the capture day in UTC. Everything of an account sits under ``acct/<account_id>/``, so an
account purge is one prefix delete, and a device's media under ``.../dev/<device_id>/``.

Ids are restricted to ``[A-Za-z0-9._-]``, start with a letter or digit and never contain ``..``: a key
built from them cannot escape its prefix on S3 or on a file system. Keys starting a segment with a dot
are refused everywhere because the local backend keeps its temporary and sidecar files there.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

from storage.errors import InvalidKey

MAX_ID_LENGTH = 128
MAX_KEY_LENGTH = 1024  # S3's limit, in bytes; our keys are ASCII
PROBE_PREFIX = "_camgate/probe/"  # outside acct/: the S3 backend's capability probe can never hit media

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._=-]*")
_KEY = re.compile(rf"{_SEGMENT.pattern}(?:/{_SEGMENT.pattern})*")
_PREFIX_TAIL = re.compile(r"[A-Za-z0-9._=-]*")


class MediaKind(StrEnum):
    """What an object is; also its folder name in the key."""

    SNAPSHOT = "snap"
    THUMBNAIL = "thumb"
    CLIP = "clip"


EXTENSIONS: dict[MediaKind, frozenset[str]] = {
    MediaKind.SNAPSHOT: frozenset({"jpg"}),
    MediaKind.THUMBNAIL: frozenset({"jpg"}),
    MediaKind.CLIP: frozenset({"webm", "mp4"}),
}


def validate_id(value: str, what: str = "id") -> str:
    """Returns ``value`` when it is a safe id for a key segment, else raises ``InvalidKey``."""
    if not (0 < len(value) <= MAX_ID_LENGTH and _ID.fullmatch(value)) or ".." in value:
        raise InvalidKey(f"invalid {what} {value!r}: use 1-{MAX_ID_LENGTH} of [A-Za-z0-9._-], no '..'")
    return value


@dataclass(frozen=True)
class MediaKey:
    """One media object's place in the layout; ``str()`` renders the key, ``parse`` reads one back."""

    account_id: str
    device_id: str
    kind: MediaKind
    day: date
    object_id: str
    extension: str

    def __post_init__(self) -> None:
        validate_id(self.account_id, "account id")
        validate_id(self.device_id, "device id")
        validate_id(self.object_id, "object id")
        if self.extension not in EXTENSIONS[self.kind]:
            raise InvalidKey(f"extension {self.extension!r} is not allowed for {self.kind.value}")

    def __str__(self) -> str:
        d = self.day
        return (
            f"{device_prefix(self.account_id, self.device_id)}{self.kind.value}/"
            f"{d.year:04d}/{d.month:02d}/{d.day:02d}/{self.object_id}.{self.extension}"
        )

    @classmethod
    def parse(cls, key: str) -> "MediaKey":
        """Reads a media key back into its parts (reconciliation); raises ``InvalidKey`` otherwise."""
        parts = key.split("/")
        if len(parts) != 9 or parts[0] != "acct" or parts[2] != "dev":
            raise InvalidKey(f"not a media key: {key!r}")
        object_id, dot, extension = parts[8].rpartition(".")
        try:
            kind = MediaKind(parts[4])
            day = date(int(parts[5]), int(parts[6]), int(parts[7]))
        except ValueError as exc:
            raise InvalidKey(f"not a media key: {key!r}") from exc
        if not dot:
            raise InvalidKey(f"not a media key: {key!r}")
        parsed = cls(parts[1], parts[3], kind, day, object_id, extension)
        if str(parsed) != key:  # rejects non-canonical dates such as 2024/1/5
            raise InvalidKey(f"not a canonical media key: {key!r}")
        return parsed


def _utc_day(captured_at: datetime) -> date:
    if captured_at.tzinfo is None:
        raise InvalidKey("capture time must be timezone-aware")
    return captured_at.astimezone(UTC).date()


def snapshot_key(account_id: str, device_id: str, event_id: str, captured_at: datetime) -> str:
    """Key of an alert's JPEG snapshot."""
    return str(MediaKey(account_id, device_id, MediaKind.SNAPSHOT, _utc_day(captured_at), event_id, "jpg"))


def thumbnail_key(account_id: str, device_id: str, event_id: str, captured_at: datetime) -> str:
    """Key of an alert's JPEG thumbnail."""
    return str(MediaKey(account_id, device_id, MediaKind.THUMBNAIL, _utc_day(captured_at), event_id, "jpg"))


def clip_key(
    account_id: str, device_id: str, clip_id: str, captured_at: datetime, extension: str = "webm"
) -> str:
    """Key of an event clip (``webm`` when the gateway encodes it, ``mp4`` when the camera did)."""
    return str(MediaKey(account_id, device_id, MediaKind.CLIP, _utc_day(captured_at), clip_id, extension))


def account_prefix(account_id: str) -> str:
    """Folder prefix holding everything of one account."""
    return f"acct/{validate_id(account_id, 'account id')}/"


def device_prefix(account_id: str, device_id: str) -> str:
    """Folder prefix holding everything of one device within one account."""
    return f"{account_prefix(account_id)}dev/{validate_id(device_id, 'device id')}/"


def validate_key(key: str) -> str:
    """Returns ``key`` when every segment is safe for S3 and a file system, else raises ``InvalidKey``."""
    # One regular expression over the whole key: the sweep checks every key it deletes (100,000s a run).
    if not (0 < len(key) <= MAX_KEY_LENGTH and _KEY.fullmatch(key)) or ".." in key:
        raise InvalidKey(f"invalid object key {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Returns a listing prefix (may end mid-segment, may be empty) when safe, else raises."""
    head, slash, tail = prefix.rpartition("/")
    head_ok = not slash or all(_segment_ok(s) for s in head.split("/"))
    tail_ok = bool(_PREFIX_TAIL.fullmatch(tail)) and not tail.startswith(".") and ".." not in tail
    if len(prefix) > MAX_KEY_LENGTH or not (head_ok and tail_ok):
        raise InvalidKey(f"invalid prefix {prefix!r}")
    return prefix


def validate_folder_prefix(prefix: str) -> str:
    """Returns a non-empty prefix ending in ``/`` (a whole folder), else raises.

    Bulk deletes take only these, so ``acct/12`` can never take ``acct/123/`` with it.
    """
    if not prefix.endswith("/") or len(prefix) < 2:
        raise InvalidKey(f"a delete prefix must be a folder ending in '/': {prefix!r}")
    validate_key(prefix[:-1])
    return prefix


def _segment_ok(segment: str) -> bool:
    return bool(_SEGMENT.fullmatch(segment)) and ".." not in segment
