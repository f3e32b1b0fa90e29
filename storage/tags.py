"""Object tags, user metadata and content type, checked against S3's limits before anything is sent.

Tags are what bucket lifecycle rules can filter on: objects carry ``retention-days=<n>`` so a rule per
retention class (not per account: a bucket holds at most 1,000 rules) can act as a backstop to the sweep.
"""

import re
from collections.abc import Mapping

from storage.errors import InvalidKey

RETENTION_TAG = "retention-days"
MAX_TAGS = 10
_TAG_CHARS = re.compile(r"[\w +\-=.:/@]*")  # S3's allowed tag characters (\w is Unicode-aware)
_META_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # S3 lower-cases metadata names; keep both backends equal
_META_MAX_BYTES = 2048  # S3's limit for all user metadata of an object


def retention_tags(days: int) -> dict[str, str]:
    """The tag set that marks an object's retention class for lifecycle rules."""
    if days < 1:
        raise InvalidKey(f"retention must be at least one day, not {days}")
    return {RETENTION_TAG: str(days)}


def validate_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of ``tags`` when S3 would accept them, else ``InvalidKey``."""
    tags = dict(tags or {})
    if len(tags) > MAX_TAGS:
        raise InvalidKey(f"at most {MAX_TAGS} tags per object, got {len(tags)}")
    for k, v in tags.items():
        ok = 0 < len(k) <= 128 and len(v) <= 256 and not k.startswith("aws:")
        if not (ok and _TAG_CHARS.fullmatch(k) and _TAG_CHARS.fullmatch(v)):
            raise InvalidKey(f"invalid tag {k!r}={v!r}")
    return tags


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of ``metadata`` when names are lower-case header tokens and values printable ASCII."""
    metadata = dict(metadata or {})
    size = 0
    for k, v in metadata.items():
        if not _META_KEY.fullmatch(k) or not (v.isascii() and v.isprintable()):
            raise InvalidKey(f"invalid metadata {k!r}={v!r}")
        size += len(k) + len(v)
    if size > _META_MAX_BYTES:
        raise InvalidKey(f"metadata exceeds {_META_MAX_BYTES} bytes")
    return metadata


def validate_content_type(content_type: str) -> str:
    """Returns a ``type/subtype`` media type (parameters allowed) of printable ASCII, else raises."""
    if "/" not in content_type or not (content_type.isascii() and content_type.isprintable()):
        raise InvalidKey(f"invalid content type {content_type!r}")
    return content_type
